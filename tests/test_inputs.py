"""Every image a user has and every mistake a user makes, through the real command: modes and
formats kept, odd sizes, alpha, 16 bits; one-line errors with nothing written and the input
untouched; an interrupt that keeps the best image so far."""

from __future__ import annotations

import hashlib
import json
import signal
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import png
import pytest
from click.testing import CliRunner
from PIL import Image

from dip import image
from dip.cli.main import cli
from dip.engine import StepEngine

from conftest import wait_until

TINY = ["--set", "net.channels_down=[8,8,8,8,8]", "--set", "net.channels_up=[8,8,8,8,8]",
        "--iters", "2", "--device", "cpu", "-q"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _png16(path: Path, array: np.ndarray, mode: str) -> Path:
    h = array.shape[0]
    png.from_array(array.reshape(h, -1), f"{mode};16").save(str(path))
    return path


def _read16(path: Path) -> tuple[np.ndarray, dict]:
    w, h, rows, info = png.Reader(filename=str(path)).asDirect()
    return np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(h, w, -1), info


H, W = 27, 33  # odd on purpose: the result must keep any size

# name -> (writer of the input file, Pillow mode of the result, whether alpha is kept)
MODES = {
    "png-L": (lambda p: Image.fromarray(_rng().integers(0, 256, (H, W), np.uint8)).save(p),
              "L"),
    "png-LA": (lambda p: Image.fromarray(_rng().integers(0, 256, (H, W, 2), np.uint8),
                                         "LA").save(p), "LA"),
    "png-RGB": (lambda p: Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save(p),
                "RGB"),
    "png-RGBA": (lambda p: Image.fromarray(_rng().integers(0, 256, (H, W, 4), np.uint8)).save(p),
                 "RGBA"),
    "png-P": (lambda p: Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).quantize(
        16).save(p), "RGB"),
    "png-P-transparent": (lambda p: Image.fromarray(
        _rng().integers(0, 16, (H, W), np.uint8), "P").save(p, transparency=3), "RGBA"),
    "png-I16": (lambda p: Image.fromarray(_rng().integers(0, 65536, (H, W), np.uint16)).save(p),
                "I;16"),
    "jpeg-RGB": (lambda p: Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save(
        p, quality=95), "RGB"),
    "jpeg-L": (lambda p: Image.fromarray(_rng().integers(0, 256, (H, W), np.uint8)).save(p),
               "L"),
    "tiff-RGB": (lambda p: Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save(p),
                 "RGB"),
    "tiff-RGBA": (lambda p: Image.fromarray(_rng().integers(0, 256, (H, W, 4), np.uint8)).save(
        p), "RGBA"),
    "bmp-RGB": (lambda p: Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save(p),
                "RGB"),
    "webp-RGBA": (lambda p: Image.fromarray(_rng().integers(0, 256, (H, W, 4), np.uint8)).save(
        p, lossless=True), "RGBA"),
}
SUFFIX = {"png": ".png", "jpeg": ".jpg", "tiff": ".tif", "bmp": ".bmp", "webp": ".webp"}


@pytest.mark.parametrize("name", list(MODES))
@pytest.mark.parametrize("task", ["denoise", "superres"])
def test_round_trip_keeps_mode_size_and_alpha(tmp_path: Path, name: str, task: str) -> None:
    write, mode = MODES[name]
    src = tmp_path / f"in{SUFFIX[name.split('-')[0]]}"
    write(src)
    before = src.read_bytes()
    out = tmp_path / f"out{src.suffix}"
    args = ["--factor", "2"] if task == "superres" else []
    result = invoke(task, src, "-o", out, *args, *TINY)
    assert result.exit_code == 0, result.output
    scale = 2 if task == "superres" else 1
    with Image.open(src) as i, Image.open(out) as o:
        # Pillow opens a 16-bit grey PNG as "I;16" or (older versions) as 32-bit "I"
        assert o.mode in (("I;16", "I") if mode == "I;16" else (mode,))
        assert o.size == (W * scale, H * scale)
        if "A" in mode and task == "denoise":  # alpha passed through unchanged
            src_alpha = i.convert("RGBA").getchannel("A")
            assert np.array_equal(np.asarray(o.getchannel("A")), np.asarray(src_alpha))
    assert src.read_bytes() == before


@pytest.mark.parametrize("mode, planes", [("RGB", 3), ("RGBA", 4), ("LA", 2)])
def test_16_bit_colour_and_alpha_stay_16_bit(tmp_path: Path, mode: str, planes: int) -> None:
    array = _rng(1).integers(0, 65536, (H, W, planes), np.uint16)
    src = _png16(tmp_path / "in.png", array, mode)
    out = tmp_path / "out.png"
    assert invoke("denoise", src, "-o", out, *TINY).exit_code == 0
    written, info = _read16(out)
    assert info["bitdepth"] == 16 and written.shape == (H, W, planes)
    if "A" in mode:  # alpha untouched, to the last bit
        assert np.array_equal(written[..., -1], array[..., -1])
    # what the network was fitted to is the file's 16 bits, not 8 bits scaled up
    picture = image.load_image(src)
    assert picture.bits == 16
    read = np.round(picture.pixels[0].permute(1, 2, 0).numpy() * 65535)
    assert np.array_equal(read, array[..., :read.shape[-1]])


def test_16_bit_colour_tiff_is_refused_clearly(tmp_path: Path) -> None:
    """Pillow reads 16-bit colour TIFF as 8 bits; dip says so instead of losing them."""
    h, w = 4, 5
    pixels = _rng().integers(0, 65536, (h, w, 3), np.uint16).astype("<u2").tobytes()
    entries = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 3, 0), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, 0), (277, 3, 1, 3), (278, 3, 1, h), (279, 4, 1, len(pixels)),
               (284, 3, 1, 1)]
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    data_at = extra_at + 6
    blob = b"II*\x00" + struct.pack("<I", ifd_at) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        if tag == 258:
            value = extra_at
        if tag == 273:
            value = data_at
        blob += struct.pack("<HHII", tag, kind, count, value) if kind == 4 or count > 1 else \
            struct.pack("<HHIHH", tag, kind, count, value, 0)
    blob += struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16) + pixels
    src = tmp_path / "deep.tif"
    src.write_bytes(blob)
    result = invoke("denoise", src, "-o", tmp_path / "o.png", *TINY)
    assert result.exit_code == 2 and "16-bit colour TIFF" in result.output
    assert "16-bit PNG" in result.output and not (tmp_path / "o.png").exists()


def test_jpeg_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    Image.fromarray(_rng().integers(0, 256, (20, 40, 3), np.uint8)).save(
        tmp_path / "in.jpg", exif=exif)
    assert invoke("denoise", tmp_path / "in.jpg", "-o", tmp_path / "o.png", *TINY).exit_code == 0
    assert Image.open(tmp_path / "o.png").size == (20, 40)


def test_format_chooses_the_default_outputs_type(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save("photo.png")
    assert invoke("denoise", "photo.png", "--format", "jpg", *TINY).exit_code == 0
    assert Image.open("photo_denoise.jpg").format == "JPEG"
    assert Path("photo_denoise.jpg.json").is_file()
    result = invoke("denoise", "photo.png", "--format", "jpg", "-o", "x.png", *TINY)
    assert result.exit_code == 2 and "disagrees" in result.output
    assert not Path("x.png").exists()


def test_mask_alpha_fills_the_transparent_pixels(tmp_path: Path) -> None:
    rgba = _rng().integers(0, 256, (H, W, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[5:12, 8:20, 3] = 0  # the holes
    Image.fromarray(rgba).save(tmp_path / "in.png")
    out = tmp_path / "o.png"
    assert invoke("inpaint", tmp_path / "in.png", "--mask", "alpha", "-o", out,
                  *TINY).exit_code == 0
    assert Image.open(out).mode == "RGB" and Image.open(out).size == (W, H)
    assert json.loads(Path(str(out) + ".json").read_text())["mask"] == "alpha"
    Image.fromarray(rgba[..., :3]).save(tmp_path / "opaque.png")
    result = invoke("inpaint", tmp_path / "opaque.png", "--mask", "alpha", *TINY)
    assert result.exit_code == 2 and "no alpha channel" in result.output


# --- mistakes -----------------------------------------------------------------------------------

def _bomb(path: Path, side: int = 100_000) -> Path:
    """A PNG whose header claims side x side pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8,
                                                                        0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


def _setup(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.png"
    Image.fromarray(_rng().integers(0, 256, (32, 32, 3), np.uint8)).save(good)
    full = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(full[:len(full) // 2])
    (tmp_path / "text.png").write_text("hello, not an image")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "small_mask.png")
    (tmp_path / "broken.yaml").write_text("optim:\n  lr: 0.1\n - nope\n")
    (tmp_path / "unknown.yaml").write_text("optim:\n  lrr: 0.1\n")
    _bomb(tmp_path / "bomb.png")
    return {"good": good}


# (arguments after the task, exit code, words the one line must hold)
MISTAKES = [
    (["denoise", "{tmp}/missing.png"], 2, ["input not found"]),
    (["denoise", "{tmp}/text.png"], 2, ["not an image"]),
    (["denoise", "{tmp}/truncated.png"], 2, ["cannot read input"]),
    (["denoise", "{tmp}"], 2, ["is a folder"]),
    (["inpaint", "{good}", "--mask", "{tmp}/small_mask.png"], 2, ["same size"]),
    (["inpaint", "{good}", "--mask", "{tmp}/missing_mask.png"], 2, ["mask not found"]),
    (["superres", "{good}", "--factor", "0"], 2, ["'0' is not one of"]),
    (["superres", "{good}", "--factor", "-2"], 2, ["'-2' is not one of"]),
    (["superres", "{good}", "--factor", "3.5"], 2, ["'3.5' is not one of"]),
    (["denoise", "{good}", "--iters", "0"], 2, ["--iters"]),
    (["denoise", "{good}", "--iters", "-5"], 2, ["--iters"]),
    (["denoise", "{good}", "--device", "tpu"], 2, ["unknown device 'tpu'"]),
    (["denoise", "{good}", "--set", "optim.lrr=0.1"], 2, ["did you mean 'optim.lr'"]),
    (["denoise", "{good}", "--set", "optim.lr=fast"], 2, ["'optim.lr' expects a number"]),
    (["denoise", "{good}", "--set", "net.channels_down=wide"], 2,
     ["'net.channels_down' expects a list"]),
    (["denoise", "{good}", "--set", "optim.lr"], 2, ["--set expects key.path=value"]),
    (["denoise", "{good}", "--config", "{tmp}/none.yaml"], 2, ["config file not found"]),
    (["denoise", "{good}", "--reference", "{tmp}/small_mask.png"], 2, ["reference", "16x16"]),
    (["inpaint", "{good}", "--mask", "alpha"], 2, ["no alpha channel"]),
    (["denoise", "{good}", "--mask", "{tmp}/small_mask.png"], 2, ["No such option"]),
    (["denoise", "{good}", "--config", "{tmp}/broken.yaml"], 2, ["invalid YAML", "line 3"]),
    (["denoise", "{good}", "--config", "{tmp}/unknown.yaml"], 2, ["'optim.lrr'"]),
    (["denoise", "{good}", "-o", "{good}", "--overwrite"], 2, ["one of the run's input files"]),
    (["denoise", "{tmp}/bomb.png"], 2, ["100000x100000", "--max-pixels"]),
    (["denoise", "{good}", "--max-pixels", "100"], 2, ["32x32", "--max-pixels"]),
    (["denoise", "{good}", "-o", "{tmp}/out.xyz"], 2, ["extension '.xyz'"]),
    (["denoise", "{good}", "--no-such-option"], 2, ["No such option"]),
]


@pytest.mark.parametrize("args, code, words", MISTAKES,
                         ids=[" ".join(m[0][:1] + m[0][2:])[:40] for m in MISTAKES])
def test_a_mistake_is_one_line_nothing_written_input_untouched(tmp_path: Path, args: list,
                                                               code: int, words: list,
                                                               monkeypatch) -> None:
    paths = _setup(tmp_path)
    snapshot = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()
                if p.is_file()}
    argv = [a.format(tmp=tmp_path, good=paths["good"]) for a in args]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "out.png")]
    def no_step(self):
        raise AssertionError("a mistake must be refused before any optimisation step")

    monkeypatch.setattr(StepEngine, "step", no_step)  # refused before any work
    result = CliRunner().invoke(cli, argv[:2] + TINY + argv[2:])
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for word in words:
        assert word in lines[0], lines[0]
    now = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()
           if p.is_file()}
    assert now == snapshot  # nothing written, nothing changed


def test_missing_output_folders_are_created(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    out = tmp_path / "a" / "b" / "c.png"
    assert invoke("denoise", paths["good"], "-o", out, *TINY).exit_code == 0
    assert out.is_file()


# --- Ctrl-C -------------------------------------------------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
def test_sigint_writes_the_best_image_so_far_and_exits_130(tmp_path: Path, spawn_dip,
                                                           slowness: float) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(_rng().integers(0, 256, (32, 32, 3), np.uint8)).save(src)
    out = tmp_path / "out.png"
    proc = spawn_dip("denoise", src, "-o", out, "--iters", 100000, "--device", "cpu",
                     "--save-every", 1, "-q", "--set", "net.channels_down=[8,8,8,8,8]",
                     "--set", "net.channels_up=[8,8,8,8,8]")
    steps = tmp_path / "out_steps"
    assert wait_until(lambda: steps.exists() and len(list(steps.iterdir())) >= 3,
                      120 * slowness, proc), proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60 * slowness)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    record = json.loads(Path(str(out) + ".json").read_text())
    assert record["stop_reason"] == "interrupted" and record["iterations"] >= 3
    assert Image.open(out).size == (32, 32)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]
