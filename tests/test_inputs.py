"""Every image a user has and every mistake a user makes, through the real command: modes and
formats kept, odd sizes, alpha, 16 bits; one-line errors with nothing written and the input
untouched; an interrupt that keeps the best image so far."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import struct
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import png
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageOps, JpegImagePlugin

from dip import image
from dip.cli.main import cli
from dip.engine import StepEngine
from dip.errors import InputError

from conftest import synthetic, wait_until

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


def _palette(path: Path) -> None:
    """A palette PNG of 16 random colours, index 3 transparent (an image made "P" from an
    array has an all-black palette: a flat picture, in which denoising finds nothing to do)."""
    img = Image.fromarray(_rng().integers(0, 16, (H, W), np.uint8), "P")
    img.putpalette(_rng(2).integers(0, 256, 48, np.uint8).tobytes())
    img.save(path, transparency=3)


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
    "png-P-transparent": (_palette, "RGBA"),
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


def test_16_bit_colour_tiff_keeps_its_16_bits(tmp_path: Path) -> None:
    """Pillow reads 16-bit colour TIFF as 8 bits (dip used to refuse it); tifffile reads every
    bit, and the result keeps them (a hand-made file: no library wrote it)."""
    h, w = 4, 5
    values = _rng().integers(0, 65536, (h, w, 3), np.uint16)
    pixels = values.astype("<u2").tobytes()
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
    picture = image.load_image(src)
    assert picture.bits == 16 and picture.pixels.shape == (1, 3, h, w)
    assert np.array_equal(np.round(picture.pixels[0].permute(1, 2, 0).numpy() * 65535), values)
    result = invoke("denoise", src, "-o", tmp_path / "o.tif", *TINY,
                    "--set", "stop.sigma=25")  # (too small to read its noise: given)
    assert result.exit_code == 0, result.output
    import tifffile
    out = tifffile.imread(tmp_path / "o.tif")
    assert out.dtype == np.uint16 and out.shape == (h, w, 3)


def test_jpeg_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    Image.fromarray(_rng().integers(0, 256, (20, 40, 3), np.uint8)).save(
        tmp_path / "in.jpg", exif=exif)
    assert invoke("denoise", tmp_path / "in.jpg", "-o", tmp_path / "o.png", *TINY).exit_code == 0
    assert Image.open(tmp_path / "o.png").size == (20, 40)


def test_a_mask_drawn_on_a_photo_as_stored_says_the_photo_is_turned(tmp_path: Path) -> None:
    # a phone's photo stored 40x20 and shown 20x40; a mask drawn by a program that ignores
    # the EXIF orientation is 40x20, and 'they must be the same size' alone puzzled
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(_rng().integers(0, 256, (20, 40, 3), np.uint8)).save(
        tmp_path / "in.jpg", exif=exif)
    mask = np.zeros((20, 40), np.uint8)
    mask[5:9, 5:9] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    result = invoke("inpaint", tmp_path / "in.jpg", "--mask", tmp_path / "mask.png",
                    "-o", tmp_path / "o.png", *TINY)
    assert result.exit_code == 2 and not (tmp_path / "o.png").exists()
    assert result.output == (f"dip: error: mask {tmp_path / 'mask.png'} is 40x20 but the image "
                             f"is 20x40; they must be the same size (the image's size "
                             f"turned a quarter: a photo with an EXIF orientation is read as "
                             f"it is shown, turned; draw the mask on it as shown)\n")


def test_a_jpeg_holding_more_pictures_is_restored_from_its_main_one(tmp_path: Path) -> None:
    # a camera's JPEG with a large preview, or a stereo camera's two views: Pillow opens it as
    # MPO, with the preview or the second view as a second frame; the first is the photo
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    main = Image.fromarray(_rng().integers(0, 256, (20, 40, 3), np.uint8))
    gain_map = Image.fromarray(_rng().integers(0, 256, (5, 10, 3), np.uint8))
    main.save(tmp_path / "in.jpg", format="MPO", save_all=True, append_images=[gain_map],
              exif=exif, quality=90)
    assert Image.open(tmp_path / "in.jpg").n_frames == 2
    assert invoke("denoise", tmp_path / "in.jpg", "-o", tmp_path / "o.png", *TINY).exit_code == 0
    assert Image.open(tmp_path / "o.png").size == (20, 40)
    picture = image.load_image(tmp_path / "in.jpg")
    shown = np.asarray(Image.open(tmp_path / "in.jpg").transpose(Image.Transpose.ROTATE_270))
    assert np.array_equal(np.round(picture.pixels[0].permute(1, 2, 0).numpy() * 255), shown)
    assert picture.coding_error is not None  # its tables are read as a plain JPEG's


def test_a_photos_exif_and_print_size_go_with_its_result(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x010F], exif[0x0112] = "Canon", 6
    exif.get_ifd(0x8769)[0x9003] = "2001:02:03 04:05:06"  # when it was taken
    Image.fromarray(_rng().integers(0, 256, (8, 12, 3), np.uint8)).save(
        tmp_path / "in.jpg", exif=exif, dpi=(300, 300))  # a scan's resolution
    result = invoke("superres", tmp_path / "in.jpg", "--factor", "2", "-o", tmp_path / "o.png",
                    *TINY)
    assert result.exit_code == 0, result.output
    written = Image.open(tmp_path / "o.png")
    assert written.size == (16, 24)
    assert written.getexif()[0x010F] == "Canon" and 0x0112 not in written.getexif()
    assert written.getexif().get_ifd(0x8769)[0x9003] == "2001:02:03 04:05:06"
    assert written.info["dpi"] == pytest.approx((600, 600), rel=1e-4)  # twice the pixels


def test_an_iphones_heic_photo_is_read_and_its_exif_kept(tmp_path: Path) -> None:
    # tests/data/phone.heic: a picture this project drew, encoded by pillow-heif
    # (tests/data/make_phone_heic.py), phone.png the same pixels losslessly
    data = Path(__file__).parent / "data"
    picture = image.load_image(data / "phone.heic")
    source = image.load_image(data / "phone.png")
    assert picture.size == source.size == (32, 48)
    assert -10 * torch.log10(((picture.pixels - source.pixels) ** 2).mean()) > 30  # dB (lossy)
    assert ".heic" in image.readable_suffixes()  # dip run finds them in a folder
    before = (data / "phone.heic").read_bytes()
    result = invoke("denoise", data / "phone.heic", "-o", tmp_path / "o.jpg", *TINY)
    assert result.exit_code == 0, result.output
    written = Image.open(tmp_path / "o.jpg")
    assert written.size == (48, 32) and written.getexif()[0x010F] == "dip test camera"
    assert (data / "phone.heic").read_bytes() == before
    # a HEIF that holds two pictures (a spatial photo) is read as its primary one, the second
    primary = image.load_image(data / "two_pictures.heic")
    assert primary.size == (16, 8) and primary.pixels[0, 2].mean() > 0.9  # blue, upright


def test_format_chooses_the_default_outputs_type(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save("photo.png")
    assert invoke("denoise", "photo.png", "--format", "jpg", *TINY).exit_code == 0
    assert Image.open("photo_denoise.jpg").format == "JPEG"
    assert Path("photo_denoise.jpg.json").is_file()
    result = invoke("denoise", "photo.png", "--format", "jpg", "-o", "x.png", *TINY)
    assert result.exit_code == 2 and "disagrees" in result.output
    assert not Path("x.png").exists()


@pytest.mark.parametrize("source, suffix, said", [
    ("16-bit", ".jpg", "JPEG holds 8 bits a sample, so the input's 16-bit samples are "
                       "rounded to 8 bits (write .png or .tif to keep them)"),
    ("16-bit", ".webp", "WEBP holds 8 bits"), ("16-bit", ".png", None), ("16-bit", ".tif", None),
    ("float", ".png", "PNG holds 16 bits a sample, so the input's float samples are rounded to "
                      "16 bits (write .tif to keep them)"),
    ("float", ".tif", None), ("8-bit", ".jpg", None)])
def test_a_format_of_fewer_bits_says_the_depth_is_reduced(tmp_path: Path, source: str,
                                                          suffix: str, said: str | None) -> None:
    # a 16-bit scan written as .jpg became 8-bit without a word
    import tifffile

    grey = _rng().integers(0, 65536, (H, W), np.uint16)
    if source == "float":
        tifffile.imwrite(tmp_path / "in.tif", (grey / 65535).astype(np.float32))
    else:
        Image.fromarray(grey if source == "16-bit" else (grey >> 8).astype(np.uint8)).save(
            tmp_path / "in.tif")
    out = tmp_path / f"o{suffix}"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("denoise", tmp_path / "in.tif", "-o", out, *TINY)
    assert result.exit_code == 0 and out.is_file(), result.output
    depth = [str(w.message) for w in caught
             if w.category is image.DipWarning and "bits a sample" in str(w.message)]
    if said is None:
        assert not depth
    else:
        assert len(depth) == 1 and depth[0].startswith(f"{out}: {said}"), depth


@pytest.mark.parametrize("suffix, warned", [(".jpg", True), (".bmp", True), (".png", False)])
def test_a_format_without_alpha_says_the_transparency_is_dropped(tmp_path: Path, suffix: str,
                                                                 warned: bool) -> None:
    rgba = _rng().integers(0, 256, (H, W, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:4, :4, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "in.png")
    out = tmp_path / f"o{suffix}"
    with warnings.catch_warnings(record=True) as caught:  # `dip` prints them, one line each
        warnings.simplefilter("always")
        result = invoke("denoise", tmp_path / "in.png", "-o", out, *TINY)
    assert result.exit_code == 0 and out.is_file(), result.output
    said = [str(w.message) for w in caught if w.category is image.DipWarning]
    assert any("holds no transparency" in m for m in said) == warned, said


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
    # an alpha channel with no transparent pixel: nothing to fill, as an all-black mask (it
    # ran a whole fit and returned the input)
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "solid.png")
    result = invoke("inpaint", tmp_path / "solid.png", "--mask", "alpha", "-o",
                    tmp_path / "s.png", *TINY)
    assert result.exit_code == 2 and "no pixel of the input is transparent" in result.output
    assert not (tmp_path / "s.png").exists()


def _disc(path: Path) -> None:
    """A red disc with soft edges on a transparent background saved black, as editors do."""
    y, x = np.mgrid[:24, :32]
    r = np.hypot(y - 12, x - 16)
    rgba = np.zeros((24, 32, 4), np.uint8)
    rgba[..., 3] = np.clip((9 - r) * 255 / 1.5, 0, 255)
    rgba[rgba[..., 3] > 0, :3] = (230, 40, 40)
    Image.fromarray(rgba, "RGBA").save(path)


def test_an_enlarged_transparent_picture_has_no_dark_edge(tmp_path: Path) -> None:
    # the black under transparent pixels was fitted and enlarged with the visible edge: the
    # see-through band round an enlarged logo was (37, 7, 7), where Pillow's resize keeps red
    _disc(tmp_path / "logo.png")
    out = tmp_path / "big.png"
    assert invoke("superres", tmp_path / "logo.png", "--factor", "2", "-o", out,
                  *TINY).exit_code == 0
    big = np.asarray(Image.open(out), dtype=np.float64)
    for lo, hi in ((20, 127), (128, 249)):
        band = big[(big[..., 3] >= lo) & (big[..., 3] <= hi)]
        assert len(band) > 20 and np.abs(band[:, :3].mean(0) - (230, 40, 40)).max() < 15
    # and the test input dip corrupt makes from it
    assert invoke("corrupt", tmp_path / "logo.png", "--downscale", "2", "-o",
                  tmp_path / "small.png").exit_code == 0
    small = np.asarray(Image.open(tmp_path / "small.png"), dtype=np.float64)
    band = small[(small[..., 3] >= 20) & (small[..., 3] <= 249)]
    assert len(band) > 5 and np.abs(band[:, :3].mean(0) - (230, 40, 40)).max() < 15
    # scored against the reference with its hidden colour filled as the result's is: the
    # hidden black under the reference's clear pixels made the PSNR 7.3 dB (bicubic 7.4)
    assert invoke("superres", tmp_path / "small.png", "--factor", "2", "--reference",
                  tmp_path / "logo.png", "-o", tmp_path / "again.png", *TINY).exit_code == 0
    metrics = json.loads((tmp_path / "again.png.json").read_text())["metrics"]
    assert metrics["psnr"] > 20 and metrics["bicubic_psnr"] > 20, metrics


def test_bleed_colour_keeps_visible_pixels_and_fills_from_them() -> None:
    pixels, alpha = torch.rand(1, 3, 7, 9), torch.zeros(1, 1, 7, 9)
    alpha[..., 2:4, 3:5] = 0.5
    pixels[..., 2:4, 3:5] = torch.tensor([0.9, 0.2, 0.0])[:, None, None]
    filled = image.bleed_colour(pixels, alpha)
    assert torch.equal(filled[..., 2:4, 3:5], pixels[..., 2:4, 3:5])
    assert torch.allclose(filled, torch.tensor([0.9, 0.2, 0.0])[None, :, None, None].expand(
        1, 3, 7, 9))  # one visible colour: everywhere
    assert image.bleed_colour(pixels, torch.ones(1, 1, 7, 9)) is pixels
    assert image.bleed_colour(pixels, None) is pixels


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


def _png(path: Path, width: int, height: int, depth: int, colour: int, idat: bytes) -> Path:
    """A PNG file from its parts: the header, and the IDAT bytes as given (valid CRCs)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour,
                                                  0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _setup(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.png"
    Image.fromarray(_rng().integers(0, 256, (32, 32, 3), np.uint8)).save(good)
    full = good.read_bytes()
    (tmp_path / "truncated.png").write_bytes(full[:len(full) // 2])
    (tmp_path / "text.png").write_text("hello, not an image")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "small_mask.png")
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "black_mask.png")
    (tmp_path / "broken.yaml").write_text("optim:\n  lr: 0.1\n - nope\n")
    (tmp_path / "unknown.yaml").write_text("optim:\n  lrr: 0.1\n")
    (tmp_path / "list_factor.yaml").write_text("per_factor:\n  2: [1, 2]\n")
    (tmp_path / "word_factor.yaml").write_text("per_factor:\n  2: hello\n")
    (tmp_path / "laughs.yaml").write_text("a: &a [x, x, x, x, x, x, x, x, x]\n"
                                          "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
                                          "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n")
    (tmp_path / "string_record.json").write_text(json.dumps(
        {"task": "denoise", "versions": {}, "config": "optim.lr=0.1"}))
    (tmp_path / "factor_record.json").write_text(json.dumps(  # a record edited by hand
        {"task": "superres", "versions": {}, "config": {"per_factor": {"2": [1, 2]}}}))
    _bomb(tmp_path / "bomb.png")
    # pixel data cut after 5 of 24 rows, the rest of the file intact (header, CRCs, IEND)
    _png(tmp_path / "short.png", 16, 24, 8, 2,
         zlib.compress(b"".join(b"\x00" + bytes(48) for _ in range(5))))
    _png(tmp_path / "short16.png", 16, 24, 16, 2,
         zlib.compress(b"".join(b"\x00" + bytes(96) for _ in range(5))))
    _png(tmp_path / "badzlib16.png", 16, 24, 16, 2, b"\x78\x9c" + bytes(range(200)))
    rng = _rng()  # one generator: three different frames (GIF merges equal ones)
    frames = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    return {"good": good}


# (arguments after the task, exit code, words the one line must hold)
MISTAKES = [
    (["denoise", "{tmp}/missing.png"], 2, ["input not found"]),
    # the missing input first, not the output's folder that cannot be made (a file there)
    (["denoise", "{tmp}/missing.png", "-o", "{good}/x.png"], 2, ["input not found"]),
    (["denoise", "{tmp}/text.png"], 2, ["not an image"]),
    (["denoise", "{tmp}/truncated.png"], 2, ["truncated"]),
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
    (["denoise", "{good}", "-o", "{tmp}/.png"], 2, [".png: it has no extension (a name's "
                                                     "leading dot does not start one)"]),
    (["denoise", "{good}", "--config", "{tmp}"], 2, ["is a folder, not a YAML file"]),
    (["denoise", "{good}", "--no-such-option"], 2, ["No such option"]),
    # issue 17: inputs Pillow would take, silently, for what they are not
    (["denoise", "{tmp}/short.png"], 2, ["truncated", "5 of 24 rows"]),
    (["denoise", "{tmp}/short16.png"], 2, ["truncated"]),
    (["denoise", "{tmp}/badzlib16.png"], 2, ["pixel data is damaged"]),
    (["denoise", "{tmp}/anim.gif"], 2, ["3 frames"]),
    (["denoise", "{tmp}/pages.tif"], 2, ["3 pages"]),
    (["inpaint", "{good}", "--mask", "{tmp}/black_mask.png"], 2, ["marks no pixel to fill"]),
    # outputs the format cannot hold are refused before the fit
    (["denoise", "{good}", "-o", "{tmp}/out.xbm"], 2, ["extension '.xbm'"]),
    (["denoise", "{good}", "-o", "{tmp}/out.msp"], 2, ["extension '.msp'"]),
    # config files and values that crashed or lied
    (["superres", "{good}", "--factor", "2", "--config", "{tmp}/list_factor.yaml"], 2,
     ["'per_factor' maps factor 2"]),
    (["superres", "{good}", "--factor", "2", "--config", "{tmp}/word_factor.yaml"], 2,
     ["'per_factor' maps factor 2"]),
    (["denoise", "{good}", "--config", "{tmp}/laughs.yaml"], 2, ["aliases", "not allowed"]),
    (["denoise", "{good}", "--config", "{tmp}/string_record.json"], 2,
     ["'config' is not a mapping"]),
    (["superres", "{good}", "--factor", "2", "--config", "{tmp}/factor_record.json"], 2,
     ["'per_factor' maps factor 2"]),
    (["denoise", "{good}", "--set", "optim.lr=.nan"], 2, ["'optim.lr' expects a finite"]),
    (["denoise", "{good}", "--set", "input.scale=.nan"], 2, ["'input.scale' expects a finite"]),
    (["denoise", "{good}", "--set", "optim.guard=.inf"], 2, ["'optim.guard' expects a finite"]),
    (["denoise", "{good}", "--set", "stop.tolerance=.nan"], 2, ["'stop.tolerance'"]),
    (["denoise", "{good}", "--set", "stop.sigma=.nan"], 2, ["'stop.sigma'"]),
    (["denoise", "{good}", "--set", "stop.noise_floor=.nan"], 2, ["'stop.noise_floor'"]),
    (["denoise", "{good}", "--set", "optim.iters.x=1"], 2, ["'optim.iters' expects"]),
    # names too long for the file system: one short line, not an OSError's traceback
    (["denoise", "{tmp}/" + "x" * 5000 + ".png"], 2, ["File name too long", "…"]),
    (["denoise", "{good}", "-o", "{tmp}/" + "x" * 5000 + ".png"], 2, ["too long", "…"]),
    (["denoise", "{good}", "-o", "{tmp}/" + "x" * 5000 + "/o.png"], 2, ["too long", "…"]),
    (["denoise", "{good}", "-o", "{tmp}/" + "x" * 250 + ".png"], 2,
     ["output name", "too long", "use at most"]),
    (["inpaint", "{good}", "--mask", "{tmp}/" + "x" * 5000 + ".png"], 2, ["too long"]),
    (["denoise", "{good}", "--reference", "{tmp}/" + "x" * 5000 + ".png"], 2, ["too long"]),
    (["denoise", "{tmp}/" + "/".join(["x" * 200] * 15) + ".png"], 2, ["input not found", "…"]),
    (["denoise", "{good}", "--config", "{tmp}/" + "x" * 5000 + ".yaml"], 2,
     ["config file path", "too long", "…"]),
    # NaN spelled as a plain word, and a format that holds no photo
    (["denoise", "{good}", "--set", "optim.lr=nan"], 2, ["'optim.lr' expects a finite"]),
    (["denoise", "{good}", "-o", "{tmp}/out.h5"], 2, ["extension '.h5'"]),
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
    assert len(lines) == 1 and "Traceback" not in result.output, result.output[:2000]
    assert len(lines[0]) < 600, lines[0][:2000]  # a path or value quoted back is cut short
    for word in words:
        assert word in lines[0], lines[0]
    now = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.iterdir()
           if p.is_file()}
    assert now == snapshot  # nothing written, nothing changed


def test_a_value_quoted_back_is_cut_short(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    result = invoke("denoise", paths["good"], "--set", "optim.lr=" + "x" * 30000, *TINY)
    assert result.exit_code == 2 and len(result.output) < 300, len(result.output)


def test_a_mistake_creates_no_output_folder(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    result = invoke("inpaint", paths["good"], "--mask", tmp_path / "small_mask.png", "-o",
                    tmp_path / "new" / "sub" / "out.png", *TINY)
    assert result.exit_code == 2 and not (tmp_path / "new").exists()


def test_a_mistake_with_overwrite_keeps_the_old_snapshots(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    steps = tmp_path / "out_steps"
    steps.mkdir()
    (steps / "step_000002.png").write_bytes(b"an earlier run's snapshot")
    result = invoke("inpaint", paths["good"], "--mask", tmp_path / "small_mask.png", "-o",
                    tmp_path / "out.png", "--overwrite", "--save-every", 2, *TINY)
    assert result.exit_code == 2 and (steps / "step_000002.png").exists()


def test_overwrite_cleans_a_killed_runs_half_written_snapshots(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    steps = tmp_path / "out_steps"
    steps.mkdir()
    for name in ("step_000099.png", ".step_000099.png.k3j4l5m6.part"):
        (steps / name).write_bytes(b"an earlier run's snapshot, half written")
    result = invoke("denoise", paths["good"], "-o", tmp_path / "out.png", "--overwrite",
                    "--save-every", 1, *TINY)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in steps.iterdir()) == ["step_000001.png", "step_000002.png"]

def test_a_file_where_the_snapshot_folder_goes_is_refused_before_the_fit(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    (tmp_path / "out_steps").write_text("a file of the user's")
    for extra in (["--save-every", 2], ["--gif"]):
        result = invoke("denoise", paths["good"], "-o", tmp_path / "out.png", *extra, *TINY)
        assert result.exit_code == 2 and "snapshot folder goes" in result.output, result.output
    assert (tmp_path / "out_steps").read_text() == "a file of the user's"


def test_a_png_inflating_past_its_header_is_refused_without_inflating_it(tmp_path: Path) -> None:
    """An 8x8 header over 200 MB of zeros (a 200 kB file, within any pixel limit): refused
    with one line, and its data never inflated whole (memory stays small)."""
    import tracemalloc

    src = _png(tmp_path / "inflate.png", 8, 8, 8, 0, zlib.compress(bytes(200_000_000)))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="more pixel data than its 8x8 header"):
            image.load_image(src)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000, peak  # the whole stream would be 200 MB
    result = invoke("denoise", src, "-o", tmp_path / "o.png", *TINY)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()

@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_pipe_is_refused_not_waited_on(tmp_path: Path) -> None:
    """Refused before it is opened. Should dip open it again, a writer feeds every reader a
    picture, so the test fails on its assertion instead of hanging."""
    import errno
    import io
    import threading
    import time

    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    buf = io.BytesIO()
    Image.fromarray(_rng().integers(0, 256, (32, 32, 3), np.uint8)).save(buf, format="PNG")
    stop, fed = threading.Event(), []

    def writer() -> None:
        while not stop.is_set():
            try:  # succeeds only while a reader has the pipe open
                fd = os.open(pipe, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                time.sleep(0.01)
                continue
            fed.append(1)
            os.set_blocking(fd, True)
            try:
                os.write(fd, buf.getvalue())
            except OSError:  # the reader went away
                pass
            finally:
                os.close(fd)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        result = invoke("denoise", pipe, "-o", tmp_path / "o.png", *TINY)
    finally:
        stop.set()
        thread.join(10)
    assert result.exit_code == 2 and "not a regular file" in result.output, result.output
    assert not fed  # never opened


def test_two_config_files_apply_in_order(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    (tmp_path / "a.yaml").write_text("optim: {lr: 0.003, iters: 2}\n")
    (tmp_path / "b.yaml").write_text("optim: {lr: 0.005}\n")
    out = tmp_path / "o.png"
    assert invoke("denoise", paths["good"], "--config", tmp_path / "a.yaml", "--config",
                  tmp_path / "b.yaml", "-o", out, "--device", "cpu", "-q").exit_code == 0
    optim = json.loads(Path(f"{out}.json").read_text())["config"]["optim"]
    assert (optim["lr"], optim["iters"]) == (0.005, 2)  # b over a, a's iters kept


def test_records_are_strict_json_with_a_reason_for_each_null(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    out = tmp_path / "o.png"
    # the reference is the input: the noisy input's PSNR is infinite
    assert invoke("denoise", paths["good"], "--reference", paths["good"], "-o", out,
                  *TINY).exit_code == 0
    text = Path(f"{out}.json").read_text()
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in a record"))
    assert record["metrics"]["input_psnr"] is None
    assert "identical" in record["null_because"]["metrics.input_psnr"]


def test_mask_threshold_is_half_grey_and_a_grey_mask_is_warned_about(tmp_path: Path) -> None:
    mask = np.zeros((32, 32), np.uint8)
    for i in range(32):  # a diagonal stroke and a block, drawn in black and white
        mask[i, max(0, i - 3):i + 3] = 255
    mask[4:10, 20:28] = 255
    Image.fromarray(mask).save(tmp_path / "m.jpg", quality=60)  # near-black noise around it
    noisy = np.asarray(Image.open(tmp_path / "m.jpg"))
    assert ((noisy > 0) & (noisy < 128)).sum() > 0  # compression put grey outside the square
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", image.DipWarning)  # about 5 % grey here: borderline
        known = image.load_mask(tmp_path / "m.jpg", (32, 32))
    holes = 1 - known[0, 0].numpy()
    # measured: 53 % of the JPEG's pixels are non-zero, 23 % were drawn white
    assert abs(holes.mean() - (mask > 0).mean()) < 0.02  # not every non-zero pixel
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))
    Image.fromarray(ramp).save(tmp_path / "soft.png")
    with pytest.warns(image.DipWarning, match="grey pixels"):
        image.load_mask(tmp_path / "soft.png", (32, 32))


def test_16_bit_grey_with_alpha_keeps_its_alpha_in_tiff(tmp_path: Path) -> None:
    import tifffile

    grey = _rng().integers(0, 65536, (H, W), np.uint16)
    alpha = np.full((H, W), 65535, np.uint16)
    alpha[:4] = 0
    tifffile.imwrite(tmp_path / "ga.tif", np.stack([grey, alpha], -1), photometric="minisblack",
                     extrasamples=["unassalpha"])
    assert invoke("denoise", tmp_path / "ga.tif", "-o", tmp_path / "o.tif", *TINY).exit_code == 0
    out = tifffile.imread(tmp_path / "o.tif")
    assert out.dtype == np.uint16 and out.shape == (H, W, 2)
    assert np.array_equal(out[..., 1], alpha)


def test_16_bit_grey_with_alpha_png_keeps_its_alpha_written_as_tiff(tmp_path: Path) -> None:
    import tifffile

    array = _rng(2).integers(0, 65536, (H, W, 2), np.uint16)
    array[:4, :, 1] = 0
    src = _png16(tmp_path / "ga.png", array, "LA")
    assert invoke("denoise", src, "-o", tmp_path / "o.tif", *TINY).exit_code == 0
    out = tifffile.imread(tmp_path / "o.tif")
    assert out.dtype == np.uint16 and out.shape == (H, W, 2)
    assert np.array_equal(out[..., 1], array[..., 1])

def test_exif_orientation_is_applied_to_16_bit_colour_png_as_to_8_bit(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb = _rng().integers(0, 256, (20, 40, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "eight.png", exif=exif)
    import png
    deep = (rgb.astype(np.uint16) * 257).reshape(20, -1)
    with open(tmp_path / "deep.png", "wb") as f:
        png.Writer(40, 20, greyscale=False, bitdepth=16).write(f, deep)
    data = (tmp_path / "deep.png").read_bytes()  # put the 8-bit file's eXIf chunk in it
    eight = (tmp_path / "eight.png").read_bytes()
    at = eight.index(b"eXIf") - 4
    length = struct.unpack(">I", eight[at:at + 4])[0]
    (tmp_path / "deep.png").write_bytes(data[:33] + eight[at:at + 12 + length] + data[33:])
    a, b = image.load_image(tmp_path / "eight.png"), image.load_image(tmp_path / "deep.png")
    assert a.pixels.shape == b.pixels.shape == (1, 3, 40, 20)
    assert torch.allclose(a.pixels, b.pixels, atol=1 / 255)


def test_a_float_tiff_keeps_its_range(tmp_path: Path) -> None:
    import tifffile

    values = _rng().uniform(-2.0, 5.0, (H, W)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", values)
    picture = image.load_image(tmp_path / "f.tif")
    assert picture.bits == 32 and picture.value_range == pytest.approx(
        (values.min(), values.max()))
    assert 0 <= picture.pixels.min() and picture.pixels.max() <= 1
    image.save_image(picture, tmp_path / "back.tif")
    back = tifffile.imread(tmp_path / "back.tif")
    assert back.dtype == np.float32 and np.allclose(back, values, atol=1e-5)


def test_a_flat_float_tiff_outside_0_1_takes_noise(tmp_path: Path) -> None:
    """One value, 5.0: its range was 0 wide, and dip corrupt --noise wrote 5.0 back
    everywhere with 'wrote'."""
    import tifffile

    tifffile.imwrite(tmp_path / "c5.tif", np.full((H, W, 3), 5, np.float32), photometric="rgb")
    picture = image.load_image(tmp_path / "c5.tif")
    assert picture.value_range == (0.0, 5.0) and torch.all(picture.pixels == 1)
    result = invoke("corrupt", tmp_path / "c5.tif", "-o", tmp_path / "n.tif", "--noise", 25)
    assert result.exit_code == 0, result.output
    noisy = tifffile.imread(tmp_path / "n.tif")
    assert noisy.std() > 0.1 and noisy.max() <= 5.0


def test_a_float_tiff_keeps_its_range_through_the_command(tmp_path: Path) -> None:
    """The result of a float TIFF in [-2, 5] is written in that range, not in [0, 1]."""
    import tifffile

    values = _rng().uniform(-2.0, 5.0, (H, W)).astype(np.float32)
    tifffile.imwrite(tmp_path / "f.tif", values)
    out = tmp_path / "fo.tif"
    # (without the Wiener filter, which reads a picture of random values as noise, rightly)
    result = invoke("denoise", tmp_path / "f.tif", "-o", out, "--save-every", 1,
                    "--set", "noise.wiener=false", *TINY)
    assert result.exit_code == 0, result.output
    written = tifffile.imread(out)
    assert written.dtype == np.float32
    assert written.min() >= values.min() - 1e-4 and written.max() <= values.max() + 1e-4
    assert written.max() - written.min() > 1.5  # the range, not [0, 1] squeezed into it
    picture = image.load_image(next((tmp_path / "fo_steps").glob("step_*.png")))
    assert picture.pixels.shape == (1, 1, H, W)  # snapshots are PNGs: the [0, 1] picture


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiff_orientation_is_applied_as_for_png(tmp_path: Path, dtype) -> None:
    import tifffile

    rgb = _rng().integers(0, 256, (20, 40, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rgb).save(tmp_path / "p.png", exif=exif)
    full = rgb.astype(dtype) * (257 if dtype == np.uint16 else 1)
    tifffile.imwrite(tmp_path / "t.tif", full, photometric="rgb",
                     extratags=[(274, "H", 1, 6, True)])
    png_picture, tiff_picture = (image.load_image(tmp_path / n) for n in ("p.png", "t.tif"))
    assert png_picture.pixels.shape == tiff_picture.pixels.shape == (1, 3, 40, 20)
    assert torch.allclose(png_picture.pixels, tiff_picture.pixels, atol=1 / 255)


def test_missing_output_folders_are_created(tmp_path: Path) -> None:
    paths = _setup(tmp_path)
    out = tmp_path / "a" / "b" / "c.png"
    assert invoke("denoise", paths["good"], "-o", out, *TINY).exit_code == 0
    assert out.is_file()


# --- Ctrl-C -------------------------------------------------------------------------------------

@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process")
@pytest.mark.parametrize("restarts", [1, 2])
def test_sigint_writes_the_best_image_so_far_and_exits_130(tmp_path: Path, spawn_dip,
                                                           slowness: float,
                                                           restarts: int) -> None:
    """Also with two restarts, each stepped on a thread of its own: there the interpreter's
    shutdown after the interrupt sometimes aborted in torch's teardown (status -6, about one
    run in four) before the console script left without it (dip.cli.signals.leave)."""
    src = tmp_path / "in.png"
    Image.fromarray(_rng().integers(0, 256, (32, 32, 3), np.uint8)).save(src)
    out = tmp_path / "out.png"
    proc = spawn_dip("denoise", src, "-o", out, "--iters", 100000, "--device", "cpu",
                     "--restarts", restarts,
                     "--save-every", 1, "-q", "--set", "net.channels_down=[8,8,8,8,8]",
                     "--set", "net.channels_up=[8,8,8,8,8]")
    steps = tmp_path / ".out.png.steps.dip-new"  # staged while the fit runs
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


# --- TIFFs of every kind, as Pillow shows them ----------------------------------------------

def _tiff_rgb() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.dstack([x * 7, y * 9, (x + y) * 4]).astype(np.uint8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_is_pillows(tmp_path: Path, orientation: int) -> None:
    """TIFFs and 16-bit colour PNGs are turned by dip, the rest by Pillow: the two agree."""
    import tifffile

    rgb = _tiff_rgb()
    tifffile.imwrite(tmp_path / "t.tif", rgb, photometric="rgb",
                     extratags=[(274, "H", 1, orientation, True)])
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(tmp_path / "p.png", exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "p.png")))
    for name in ("t.tif", "p.png"):
        got = image.load_image(tmp_path / name).pixels[0].permute(1, 2, 0).numpy()
        assert np.array_equal(np.round(got * 255).astype(np.uint8), expected), name


@pytest.mark.parametrize("make", ["cmyk", "palette", "bilevel", "miniswhite", "rgbx", "planar3"])
def test_a_tiff_is_read_as_pillow_shows_it(tmp_path: Path, make: str) -> None:
    import tifffile

    rgb = _tiff_rgb()[:, :3] if make == "planar3" else _tiff_rgb()
    path = tmp_path / "t.tif"
    if make == "cmyk":
        Image.fromarray(rgb).convert("CMYK").save(path)
    elif make == "palette":
        Image.fromarray(rgb).quantize(16).save(path)
    elif make == "bilevel":
        Image.fromarray(rgb[..., 0]).convert("1").save(path)
    elif make == "miniswhite":
        tifffile.imwrite(path, 255 - rgb[..., 0], photometric="miniswhite")
    elif make == "rgbx":  # a fourth sample that is not alpha: all 0 here
        tifffile.imwrite(path, np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)]),
                         photometric="rgb", extrasamples=["unspecified"])
    else:  # planar, 3 pixels wide: the samples' axis must not be taken for the width
        tifffile.imwrite(path, np.moveaxis(rgb, -1, 0), photometric="rgb",
                         planarconfig="separate")
    shown = Image.open(path)
    expected = np.asarray(shown.convert("L" if shown.mode in ("1", "L") else "RGB"))
    if make == "miniswhite":
        expected = rgb[..., 0]  # the picture it was made from
    if make == "rgbx":  # said: it is not written back (it was dropped without a word)
        with pytest.warns(image.DipWarning, match="1 extra sample.* beside the RGB picture "
                                                  "are not restored"):
            picture = image.load_image(path)
    else:
        picture = image.load_image(path)
    assert picture.alpha is None, make
    got = np.round(picture.pixels[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    assert np.array_equal(got.squeeze(-1) if got.shape[-1] == 1 else got, expected), make


def test_premultiplied_alpha_is_divided_out(tmp_path: Path) -> None:
    import tifffile

    rgb = _tiff_rgb().astype(np.float32) / 255
    alpha = np.full(rgb.shape[:2], 0.5, np.float32)
    tifffile.imwrite(tmp_path / "t.tif", np.dstack([rgb * alpha[..., None], alpha]),
                     photometric="rgb", extrasamples=["assocalpha"])
    picture = image.load_image(tmp_path / "t.tif")
    assert torch.allclose(picture.alpha, torch.full_like(picture.alpha, 0.5))
    assert np.allclose(picture.pixels[0].permute(1, 2, 0).numpy(), rgb, atol=1e-6)


@pytest.mark.parametrize("dtype, low, high", [(np.int8, -100, 100), (np.int16, 0, 20800),
                                              (np.int32, -70000, 65_000_000),
                                              (np.uint32, 0, 65_000_000)])
def test_other_integer_tiffs_keep_their_values(tmp_path: Path, dtype, low: int,
                                              high: int) -> None:
    import tifffile

    values = np.linspace(low, high, H * W).reshape(H, W).astype(dtype)
    tifffile.imwrite(tmp_path / "i.tif", values)
    picture = image.load_image(tmp_path / "i.tif")
    image.save_image(picture, tmp_path / "back.tif")
    back = tifffile.imread(tmp_path / "back.tif")
    assert back.dtype == np.float32
    assert np.allclose(back, values.astype(np.float64), rtol=1e-6, atol=1e-3)


def test_a_float_tiff_pillow_decodes_keeps_its_range(tmp_path: Path) -> None:
    # LZW needs the imagecodecs package, which tifffile lacks here: Pillow reads it
    values = np.linspace(0, 2080, H * W).reshape(H, W).astype(np.float32)
    Image.fromarray(values, "F").save(tmp_path / "f.tif", compression="tiff_lzw")
    picture = image.load_image(tmp_path / "f.tif")
    assert picture.bits == 32 and picture.value_range == pytest.approx((0, 2080))


def test_a_16_bit_grey_png_keeps_its_transparent_level(tmp_path: Path) -> None:
    levels = (np.arange(H * W).reshape(H, W) * 50).astype(np.uint16)
    with open(tmp_path / "t.png", "wb") as f:
        png.Writer(W, H, greyscale=True, bitdepth=16, transparent=0).write(f, levels)
    picture = image.load_image(tmp_path / "t.png")
    assert picture.bits == 16 and picture.alpha is not None
    assert np.array_equal(picture.alpha[0, 0].numpy() == 0, levels == 0)


def test_a_16_bit_colour_ppm_is_refused_not_cut_to_8_bits(tmp_path: Path) -> None:
    deep = (np.arange(H * W * 3).reshape(H, W, 3) * 100).astype(">u2")
    (tmp_path / "d.ppm").write_bytes(f"P6\n{W} {H}\n65535\n".encode() + deep.tobytes())
    with pytest.raises(InputError, match="16-bit colour PPM"):
        image.load_image(tmp_path / "d.ppm")


def test_a_cmyk_mask_is_read_by_its_colours(tmp_path: Path) -> None:
    m = np.zeros((H, W), np.uint8)
    m[5:10, 4:14] = 255
    Image.fromarray(m).convert("CMYK").save(tmp_path / "m.tif")
    known = image.load_mask(tmp_path / "m.tif", (H, W))
    assert np.array_equal(known[0, 0].numpy() == 0, m == 255)


def test_a_reference_float_tiff_is_compared_in_the_inputs_values(tmp_path: Path) -> None:
    import tifffile

    clean = np.linspace(0, 1160, H * W).reshape(H, W).astype(np.float32)
    noisy = clean.copy()
    noisy[0, 0] = 3000  # one pixel: the input's range is not the reference's
    tifffile.imwrite(tmp_path / "n.tif", noisy)
    tifffile.imwrite(tmp_path / "c.tif", clean)
    result = invoke("corrupt", tmp_path / "n.tif", "-o", tmp_path / "x.tif", "--noise", "0")
    assert result.exit_code == 0, result.output
    ref, inp = image.load_image(tmp_path / "c.tif"), image.load_image(tmp_path / "n.tif")
    mapped = image.in_units_of(ref, inp)
    same = np.ones((H, W), bool)
    same[0, 0] = False
    assert np.allclose(mapped[0, 0].numpy()[same], inp.pixels[0, 0].numpy()[same], atol=1e-6)


def test_jpeg_and_webp_results_are_not_degraded_again(tmp_path: Path) -> None:
    rgb = _rng().integers(0, 256, (H, W, 3), np.uint8)
    picture = image.Picture(torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)
    image.save_image(picture, tmp_path / "r.webp")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r.webp").convert("RGB")), rgb)
    # and the colour under transparent pixels: WebP's encoder drops it unless told not to
    alpha = np.full((1, 1, H, W), 1.0, np.float32)
    alpha[..., :, :5] = 0
    image.save_image(image.Picture(picture.pixels, alpha=torch.from_numpy(alpha)),
                     tmp_path / "a.webp")
    rgba = np.asarray(Image.open(tmp_path / "a.webp"))
    assert np.array_equal(rgba[..., :3], rgb) and (rgba[:, :5, 3] == 0).all()
    image.save_image(picture, tmp_path / "r.jpg")
    written = Image.open(tmp_path / "r.jpg")
    assert written.layers == 3 and JpegImagePlugin.get_sampling(written) == 0  # 4:4:4
    assert written.quantization[0][0] <= 3  # quality 95's table, not 75's (8)


@pytest.mark.parametrize("made, written", [("in.jpg", "out.jpg"), ("in.png", "out.webp"),
                                           ("in.tif", "out.tif"), ("deep.png", "out.png")])
def test_the_colour_profile_goes_back_with_the_result(tmp_path: Path, made: str,
                                                      written: str) -> None:
    """A Display P3 or Adobe RGB photo written without its profile shows washed-out colours;
    the profile of the input is the result's (here sRGB's bytes stand for any profile)."""
    import tifffile
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    rgb = _rng().integers(0, 256, (H, W, 3), np.uint8)
    src = tmp_path / made
    if made == "in.tif":
        tifffile.imwrite(src, rgb, photometric="rgb", iccprofile=icc)
    elif made == "deep.png":
        buf = io.BytesIO()
        png.Writer(W, H, greyscale=False, bitdepth=16).write(
            buf, (rgb.astype(np.uint16) * 257).reshape(H, -1))
        src.write_bytes(image._png_with(buf.getvalue(), icc, None))
    else:
        Image.fromarray(rgb).save(src, icc_profile=icc)
    out = tmp_path / written
    assert invoke("denoise", src, "-o", out, *TINY).exit_code == 0
    assert image.load_image(out).icc == icc
    if written.endswith(".png"):
        assert image.load_image(out).bits == 16


def test_a_profile_of_another_colour_space_is_not_written(tmp_path: Path) -> None:
    from PIL import ImageCms

    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    icc[16:20] = b"CMYK"  # a CMYK file's profile: its pixels were converted to RGB on reading
    rgb = torch.rand(1, 3, H, W)
    image.save_image(image.Picture(rgb, icc=bytes(icc)), tmp_path / "o.png")
    assert "icc_profile" not in Image.open(tmp_path / "o.png").info


def _profile_named(name: bytes, space: bytes = b"RGB ") -> bytes:
    """sRGB's profile under another description (standing for Display P3's or Adobe RGB's),
    and of another colour space where asked."""
    from PIL import ImageCms

    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    at = icc.find("sRGB".encode("utf-16-be"))
    icc[at:at + 8] = name.decode().encode("utf-16-be")
    icc[16:20] = space
    return bytes(icc)


@pytest.mark.parametrize("grey, written, kept, warned", [
    (False, "out.bmp", False, "BMP holds no colour profile"),
    (True, "out.webp", False, "WEBP holds grey as RGB, which a grey profile does not describe"),
    (True, "out.png", True, None),
    (False, "out.webp", True, None),
])
def test_a_profile_the_result_cannot_hold_is_said_to_be_dropped(
        tmp_path: Path, grey: bool, written: str, kept: bool, warned: str | None) -> None:
    """A BMP result dropped a wide-gamut photo's profile without a word (its colours then
    look washed out), and a grey picture's WebP (stored as RGB) carried its grey profile,
    which colour management refuses: the file showed as if it had none."""
    from dip import image as dip_image

    icc = _profile_named(b"Wide", b"GRAY" if grey else b"RGB ")
    assert not dip_image.is_srgb(icc)
    pixels = _rng().integers(0, 256, (H, W) if grey else (H, W, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png", icc_profile=icc)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("denoise", tmp_path / "in.png", "-o", tmp_path / written, *TINY)
    assert result.exit_code == 0, result.output
    assert (Image.open(tmp_path / written).info.get("icc_profile") == icc) is kept
    said = [str(w.message) for w in caught if "profile" in str(w.message)]
    assert [warned in m for m in said] == ([True] if warned else []), said


def test_an_srgb_profile_left_out_of_a_bmp_is_not_worth_a_warning(tmp_path: Path) -> None:
    """A file without a profile is shown as sRGB: nothing changes."""
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save(tmp_path / "in.png",
                                                                         icc_profile=icc)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = invoke("denoise", tmp_path / "in.png", "-o", tmp_path / "out.bmp", *TINY)
    assert result.exit_code == 0, result.output
    assert not [w for w in caught if "profile" in str(w.message)]


@pytest.mark.parametrize("deep", [False, True])
def test_a_pngs_gamma_and_primaries_go_back_with_a_png_result(tmp_path: Path,
                                                              deep: bool) -> None:
    """A linear PNG (gAMA 1.0, as renderers and scientific pipelines write) came back without
    its gAMA, and a viewer showed it darker; its cHRM primaries were dropped too."""
    from PIL import PngImagePlugin

    gamma = struct.pack(">I", 100000)
    primaries = struct.pack(">8I", 31270, 32900, 70000, 30000, 20000, 80000, 15000, 6000)
    rgb = _rng().integers(0, 256, (H, W, 3), np.uint8)
    if deep:
        buf = io.BytesIO()
        png.Writer(W, H, greyscale=False, bitdepth=16).write(
            buf, (rgb.astype(np.uint16) * 257).reshape(H, -1))
        (tmp_path / "in.png").write_bytes(image._png_with(
            buf.getvalue(), None, None, colour=((b"gAMA", gamma), (b"cHRM", primaries))))
    else:
        info = PngImagePlugin.PngInfo()
        info.add(b"gAMA", gamma)
        info.add(b"cHRM", primaries)
        Image.fromarray(rgb).save(tmp_path / "in.png", pnginfo=info)
    assert invoke("denoise", tmp_path / "in.png", "-o", tmp_path / "out.png", *TINY
                  ).exit_code == 0
    written = Image.open(tmp_path / "out.png")
    assert written.info["gamma"] == 1.0
    assert written.info["chromaticity"] == (0.3127, 0.329, 0.7, 0.3, 0.2, 0.8, 0.15, 0.06)
    assert image.load_image(tmp_path / "out.png").bits == (16 if deep else 8)


@pytest.mark.parametrize("chunks, warned", [
    ({b"gAMA": struct.pack(">I", 100000)}, "gamma 1 (sRGB's is 0.4545) is dropped"),
    ({b"gAMA": struct.pack(">I", 45455)}, None),  # sRGB's own: nothing changes
    ({b"gAMA": struct.pack(">I", 100000), b"sRGB": b"\0"}, None),  # sRGB overrides gAMA
])
def test_a_pngs_gamma_a_jpeg_cannot_hold_is_said_to_be_dropped(tmp_path: Path, chunks: dict,
                                                               warned: str | None) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for kind, payload in chunks.items():
        info.add(kind, payload)
    Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save(tmp_path / "in.png",
                                                                       pnginfo=info)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert invoke("denoise", tmp_path / "in.png", "-o", tmp_path / "out.jpg", *TINY
                      ).exit_code == 0
    said = [str(w.message) for w in caught if "PNG colour chunks" in str(w.message)]
    assert [warned in m for m in said] == ([True] if warned else []), said


def test_an_inverted_grey_tiff_is_read_as_it_looks(tmp_path: Path) -> None:
    """MinIsWhite: Pillow read 16 bits of it as a negative (8 bits it inverted); an alpha
    beside the grey is not inverted."""
    import tifffile

    grey = _rng().integers(0, 65536, (H, W), np.uint16)
    alpha = np.full((H, W), 40000, np.uint16)
    tifffile.imwrite(tmp_path / "w.tif", 65535 - grey, photometric="miniswhite")
    tifffile.imwrite(tmp_path / "wa.tif", np.dstack([65535 - grey, alpha]),
                     photometric="miniswhite", extrasamples=[2])
    for name in ("w.tif", "wa.tif"):
        picture = image.load_image(tmp_path / name)
        assert picture.bits == 16 and picture.pixels.shape[1] == 1
        assert np.array_equal(np.rint(picture.pixels[0, 0].numpy() * 65535), grey), name
    assert torch.allclose(image.load_image(tmp_path / "wa.tif").alpha, torch.tensor(40000 / 65535))
    eight = (255 - grey // 257).astype(np.uint8)
    tifffile.imwrite(tmp_path / "w8.tif", eight, photometric="miniswhite")
    assert np.array_equal(np.rint(image.load_image(tmp_path / "w8.tif").pixels[0, 0].numpy()
                                  * 255), 255 - eight)
    # 12 bits a sample: inverted against 4095, not 65535 (it came back nearly white), and
    # scaled to the container's range (a 12-bit grey read dark)
    twelve = grey >> 4
    for photometric, stored in (("miniswhite", 4095 - twelve), ("minisblack", twelve)):
        tifffile.imwrite(tmp_path / "12.tif", stored, photometric=photometric,
                         bitspersample=12)
        read = image.load_image(tmp_path / "12.tif").pixels[0, 0].numpy()
        assert np.allclose(read, twelve / 4095, atol=1 / 65535), photometric


@pytest.mark.parametrize("compression", ["lzw", "packbits", "zlib"])
def test_a_16_bit_colour_tiff_compressed_as_photoshop_saves_it_is_read_at_16_bits(
        tmp_path: Path, compression: str) -> None:
    """LZW is Photoshop's usual TIFF compression: tifffile decodes it through imagecodecs,
    and without it the file went to Pillow, which reads 16-bit colour as 8 bits, and was
    refused ('save it as a 16-bit PNG or TIFF', which it was). A 32-bit integer one went to
    Pillow too and was clipped to 0..65535."""
    import tifffile

    rgb = _rng().integers(0, 65536, (H, W, 3), np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", rgb, photometric="rgb", compression=compression)
    picture = image.load_image(tmp_path / "in.tif")
    assert picture.bits == 16
    assert np.array_equal(np.rint(picture.pixels[0].permute(1, 2, 0).numpy() * 65535), rgb)
    wide = np.linspace(-30000, 120000, H * W).reshape(H, W).astype(np.int32)
    tifffile.imwrite(tmp_path / "i.tif", wide, compression=compression)
    picture = image.load_image(tmp_path / "i.tif")
    assert picture.bits == 32 and picture.value_range == (-30000.0, 120000.0)


def test_a_16_bit_colour_tiff_tifffile_cannot_decode_says_what_to_do(tmp_path: Path,
                                                                      monkeypatch) -> None:
    """Without imagecodecs it said 'save it as a 16-bit PNG or TIFF', which it was."""
    import tifffile

    rgb = _rng().integers(0, 65536, (H, W, 3), np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", rgb, photometric="rgb", compression="lzw")

    def no_codec(self, *args, **kwargs):
        raise ValueError("<COMPRESSION.LZW: 5> requires the 'imagecodecs' package")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", no_codec)
    with pytest.raises(InputError, match=r"16-bit colour TIFF in a compression that tifffile "
                                         r"cannot decode here \(is imagecodecs installed\?\); "
                                         r"save it uncompressed or with ZIP"):
        image.load_image(tmp_path / "in.tif")


def test_a_32_bit_integer_tiff_pillow_reads_keeps_its_range(tmp_path: Path,
                                                             monkeypatch) -> None:
    """Pillow's mode I was taken as 16-bit grey: -30000..120000 came back clipped to
    0..65535 (where tifffile could not decode the file and Pillow read it)."""
    wide = np.linspace(-30000, 120000, H * W).reshape(H, W).astype(np.int32)
    Image.fromarray(wide, "I").save(tmp_path / "i.tif", compression="tiff_adobe_deflate")
    monkeypatch.setattr(image, "_load_tiff", lambda *args: None)  # Pillow's turn
    picture = image.load_image(tmp_path / "i.tif")
    assert picture.bits == 32 and picture.value_range == (-30000.0, 120000.0)
    # within 0..65535 too, as tifffile reads it: 0..1000 was 16-bit grey, nearly black
    narrow = np.linspace(0, 1000, H * W).reshape(H, W).astype(np.int32)
    Image.fromarray(narrow, "I").save(tmp_path / "n.tif")
    picture = image.load_image(tmp_path / "n.tif")
    assert picture.bits == 32 and float(picture.pixels.max()) == 1.0


def test_a_tiffs_thumbnail_page_is_not_another_picture(tmp_path: Path) -> None:
    """A reduced-resolution page (NewSubfileType 1) beside the picture made the file 'a
    multi-page TIFF' and refused."""
    import tifffile

    rgb = _rng().integers(0, 256, (H, W, 3), np.uint8)
    with tifffile.TiffWriter(tmp_path / "t.tif") as tif:
        tif.write(rgb, photometric="rgb")
        tif.write(rgb[::4, ::4].copy(), photometric="rgb", subfiletype=1)
    picture = image.load_image(tmp_path / "t.tif")
    assert tuple(picture.pixels.shape) == (1, 3, H, W)
    with tifffile.TiffWriter(tmp_path / "two.tif") as tif:
        tif.write(rgb, photometric="rgb")
        tif.write(rgb, photometric="rgb")
    with pytest.raises(InputError, match="holds 2 pages"):
        image.load_image(tmp_path / "two.tif")
    # one Pillow reads (CMYK), its thumbnail first
    cmyk = _rng().integers(0, 256, (H, W, 4), np.uint8)
    with tifffile.TiffWriter(tmp_path / "c.tif") as tif:
        tif.write(cmyk[::4, ::4].copy(), photometric="separated", subfiletype=1)
        tif.write(cmyk, photometric="separated")
    assert tuple(image.load_image(tmp_path / "c.tif").pixels.shape) == (1, 3, H, W)


def test_a_folder_where_a_side_file_goes_is_named_as_such(tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save(src)
    (tmp_path / "out_report.png").mkdir()
    result = invoke("denoise", src, "-o", tmp_path / "out.png", "--report", *TINY)
    assert result.exit_code == 2
    assert "is where this run writes a file named after its result" in result.output
    assert not (tmp_path / "out.png").exists()


def test_a_mask_saved_as_0_and_1_says_white_is_255(tmp_path: Path) -> None:
    m = np.zeros((H, W), np.uint8)
    m[4:8, 4:8] = 1
    Image.fromarray(m).save(tmp_path / "m.png")
    with pytest.raises(InputError, match="lightest pixels are 1 of 255: white is 255"):
        image.load_mask(tmp_path / "m.png", (H, W))


def test_a_0_1_mask_read_with_mask_keeps_says_white_is_255(tmp_path: Path) -> None:
    # with --mask-keeps the advice was "is it inverted? see --mask-keeps", given already
    m = np.zeros((H, W), np.uint8)
    m[4:8, 4:8] = 1
    Image.fromarray(m).save(tmp_path / "m.png")
    with pytest.raises(InputError, match="with mask_keeps=True white marks the known pixels, "
                                         "and its lightest pixels are 1 of 255"):
        image.load_mask(tmp_path / "m.png", (H, W), keeps=True)
    Image.fromarray(np.zeros((H, W), np.uint8)).save(tmp_path / "black.png")  # (not faint)
    with pytest.raises(InputError, match=re.escape("leaves no known pixel: nothing to restore "
                                                   "from (is it inverted? with mask_keeps=True "
                                                   "white marks the known pixels)")):
        image.load_mask(tmp_path / "black.png", (H, W), keeps=True)


@pytest.mark.parametrize("size", [(7, 7), (1, 40), (40, 1), (15, 15)])
def test_a_picture_too_small_to_read_its_noise_asks_for_its_level(tmp_path: Path,
                                                                   size: tuple) -> None:
    # its noise read 0 (or a fraction), the Wiener filter at that level gave the input back,
    # and the command said it had denoised it
    noisy = _rng().integers(0, 256, (*size, 3), np.uint8)
    Image.fromarray(noisy).save(tmp_path / "small.png")
    result = invoke("denoise", tmp_path / "small.png", "-o", tmp_path / "o.png", *TINY)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == (
        f"dip: error: the input ({size[1]}x{size[0]}) is too small to read its noise level "
        f"from (too few 8x8 patches: 16x16 pixels have enough); give its level, e.g. --set "
        f"stop.sigma=25")
    assert not (tmp_path / "o.png").exists()
    given = invoke("denoise", tmp_path / "small.png", "-o", tmp_path / "o.png", *TINY,
                   "--set", "stop.sigma=25")
    assert given.exit_code == 0, given.output
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), noisy)


def test_an_all_grey_mask_is_one_error_that_says_it_is_grey(tmp_path: Path) -> None:
    # it was refused after a warning of its grey pixels: two lines for one mistake
    Image.fromarray(np.full((H, W), 128, np.uint8)).save(tmp_path / "grey.png")
    for keeps, said in ((False, "leaves no known pixel"), (True, "marks no pixel to fill")):
        with warnings.catch_warnings():
            warnings.simplefilter("error", image.DipWarning)  # a warning would raise first
            with pytest.raises(InputError, match=said) as refused:
                image.load_mask(tmp_path / "grey.png", (H, W), keeps=keeps)
        assert "100% of its pixels are grey, and a pixel counts as white from 50 % grey" in str(
            refused.value)
    result = invoke("inpaint", tmp_path / "grey.png", "--mask", tmp_path / "grey.png", "-o",
                    tmp_path / "o.png", *TINY)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "o.png").exists()


def _layer(path: Path, white: bool, holes: slice) -> None:
    """A mask layer with the holes erased (transparent), the rest painted white or black."""
    la = np.zeros((H, W, 2), np.uint8)
    la[..., 0], la[..., 1] = 255 if white else 0, 255
    la[holes, holes, 1] = 0
    Image.fromarray(la, "LA").save(path)


def _show_warning(record: Any, capsys: Any) -> None:
    """Print a caught warning as the dip command does."""
    from dip.cli.main import show_warning

    capsys.readouterr()
    show_warning(record.message, record.category, record.filename, record.lineno)


def test_a_mask_that_marks_most_of_the_picture_asks_if_it_is_inverted(tmp_path: Path,
                                                                       capsys) -> None:
    m = np.full((H, W), 255, np.uint8)
    m[4:8, 4:8] = 0  # the intended holes, drawn black
    Image.fromarray(m).save(tmp_path / "m.png")
    with pytest.warns(image.DipWarning, match=r"marks 98% of the picture to fill: is it "
                                              r"inverted\? \(white marks the holes"):
        image.load_mask(tmp_path / "m.png", (H, W))
    m[4:8, 4:8], m[0, 0] = 255, 0  # one pixel known: not "100%"
    Image.fromarray(m).save(tmp_path / "one.png")
    with pytest.warns(image.DipWarning, match=r"marks over 99% of the picture to fill"):
        image.load_mask(tmp_path / "one.png", (H, W))
    with pytest.warns(image.DipWarning) as said:  # the flag, as the command spells it
        assert invoke("inpaint", tmp_path / "m.png", "--mask", tmp_path / "m.png", "-o",
                      tmp_path / "o.png", *TINY).exit_code == 0
    _show_warning(said[0], capsys)
    assert "--mask-keeps reads white as known" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        image.load_mask(tmp_path / "m.png", (H, W), keeps=True)  # half or less: no warning
    # holes erased from a white layer: the clear pixels count as black, and it says so
    _layer(tmp_path / "white.png", True, slice(4, 8))
    with pytest.warns(image.DipWarning, match="inverted.*its transparent pixels count as black"):
        image.load_mask(tmp_path / "white.png", (H, W))
    # from a black layer: nothing to fill, and why
    _layer(tmp_path / "black.png", False, slice(4, 8))
    with pytest.raises(InputError, match="all black\\); its transparent pixels count as black"):
        image.load_mask(tmp_path / "black.png", (H, W))


def test_holes_that_are_transparent_in_the_input_are_said_to_stay_unseen(tmp_path: Path) -> None:
    # the fill was written with the input's alpha 0 over it: invisible, exit 0, not a word
    rgba = _rng().integers(0, 256, (H, W, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[4:8, 4:8, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "in.png")
    m = np.zeros((H, W), np.uint8)
    m[4:8, 4:8] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    with pytest.warns(image.DipWarning, match="100% of the holes are transparent in the input"):
        assert invoke("inpaint", tmp_path / "in.png", "--mask", tmp_path / "m.png", "-o",
                      tmp_path / "o.png", *TINY).exit_code == 0
    rgba[..., 3] = 255  # opaque holes: nothing to say
    Image.fromarray(rgba).save(tmp_path / "in.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", image.DipWarning)
        assert invoke("inpaint", tmp_path / "in.png", "--mask", tmp_path / "m.png", "-o",
                      tmp_path / "o2.png", *TINY).exit_code == 0


def test_mask_alpha_on_a_mostly_transparent_input_warns(tmp_path: Path, capsys) -> None:
    rgba = _rng().integers(0, 256, (H, W, 4), np.uint8)
    rgba[..., 3] = 0
    rgba[4:8, 4:8, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "in.png")
    with pytest.warns(image.DipWarning) as said:
        assert invoke("inpaint", tmp_path / "in.png", "--mask", "alpha", "-o",
                      tmp_path / "o.png", *TINY).exit_code == 0
    _show_warning(said[0], capsys)
    assert capsys.readouterr().err == ("dip: warning: 98% of the input is transparent and "
                                       "will be filled (--mask alpha)\n")
    assert "(mask='alpha')" in str(said[0].message)  # in Python, as Python spells it


def test_a_snapshot_folder_that_cannot_be_written_is_found_before_the_fit(
        tmp_path: Path, monkeypatch) -> None:
    from dip import run

    src = tmp_path / "in.png"
    Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save(src)
    (tmp_path / "out_steps").mkdir()

    made = run.tempfile.NamedTemporaryFile

    def refuse(*args, dir=None, **kwargs):  # as an immutable folder answers even root
        if dir is not None and Path(dir) == tmp_path / "out_steps":
            raise PermissionError(1, "Operation not permitted")
        return made(*args, dir=dir, **kwargs)  # (the result's folder takes files)

    monkeypatch.setattr(run.tempfile, "NamedTemporaryFile", refuse)
    result = invoke("denoise", src, "-o", tmp_path / "out.png", "--save-every", 1, *TINY)
    assert result.exit_code == 2, result.output
    assert "cannot write into the snapshot folder" in result.output
    assert not (tmp_path / "out.png").exists()


def test_an_overwrite_takes_the_replaced_results_pictures_with_it(tmp_path: Path) -> None:
    """The report and uncertainty map of the result replaced would describe another run."""
    src = tmp_path / "in.png"
    Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save(src)
    out = tmp_path / "out.png"
    first = invoke("denoise", src, "-o", out, "--restarts", 2, "--uncertainty", "--report",
                   *TINY)
    assert first.exit_code == 0, first.output
    assert (tmp_path / "out_report.png").is_file()
    mine = tmp_path / "out_notes.png"  # not named in the record: never dip's to remove
    mine.write_bytes(b"x")
    again = invoke("denoise", src, "-o", out, "--restarts", 1, "--overwrite", "--report",
                   *TINY)
    assert again.exit_code == 0, again.output
    assert not (tmp_path / "out_uncertainty.png").exists()
    assert (tmp_path / "out_report.png").is_file() and mine.is_file()  # written again; kept


def test_an_overwrite_without_snapshots_takes_the_replaced_results_snapshots(
        tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save(src)
    out, steps = tmp_path / "out.png", tmp_path / "out_steps"
    first = invoke("denoise", src, "-o", out, "--save-every", 1, *TINY)
    assert first.exit_code == 0 and len(list(steps.glob("step_*.png"))) == 2, first.output
    again = invoke("denoise", src, "-o", out, "--overwrite", *TINY)
    assert again.exit_code == 0, again.output
    assert not steps.exists()  # they showed another run's steps
    # a file of the user's in that folder keeps it (and itself)
    assert invoke("denoise", src, "-o", out, "--save-every", 1, "--overwrite",
                  *TINY).exit_code == 0
    (steps / "notes.txt").write_text("mine")
    assert invoke("denoise", src, "-o", out, "--overwrite", *TINY).exit_code == 0
    assert [p.name for p in steps.iterdir()] == ["notes.txt"]
    # one of them given as the new run's input is the input, never removed
    (steps / "notes.txt").unlink()
    assert invoke("denoise", src, "-o", out, "--save-every", 1, "--overwrite",
                  *TINY).exit_code == 0
    given = steps / "step_000001.png"
    assert invoke("denoise", given, "-o", out, "--overwrite", *TINY).exit_code == 0
    assert [p.name for p in steps.iterdir()] == [given.name]


def test_overwrite_never_replaces_the_config_file_the_run_reads(tmp_path: Path) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(_rng().integers(0, 256, (H, W, 3), np.uint8)).save(src)
    config = tmp_path / "my.png.json"  # where the result's record would go
    config.write_text('{"optim": {"lr": 0.005}}')
    result = invoke("denoise", src, "--config", config, "-o", tmp_path / "my.png",
                    "--overwrite", *TINY)
    assert result.exit_code == 2 and "one of the run's input files" in result.output
    assert config.read_text() == '{"optim": {"lr": 0.005}}'
    # the record of the result being replaced, passed to redo it, is replaced with it
    out = tmp_path / "again.png"
    assert invoke("denoise", src, "-o", out, *TINY).exit_code == 0
    redo = invoke("denoise", src, "--config", f"{out}.json", "-o", out, "--overwrite", *TINY)
    assert redo.exit_code == 0, redo.output


def test_a_grey_photo_saved_as_rgb_is_restored_as_the_grey_file_is(tmp_path: Path) -> None:
    """Fitted as colour it came out 6.6 dB under the grey file (sigma = 25, 48 px): the noise
    estimate read 0, SURE and the colour Wiener filter took one noise for three."""
    clean = synthetic(32)[:, :1]
    noisy = (clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
             * 25 / 255).clamp(0, 1)
    grey = (noisy[0, 0].numpy() * 255).round().astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    Image.fromarray(grey, "L").convert("RGB").save(tmp_path / "rgb.png")
    Image.fromarray((clean[0, 0].numpy() * 255).round().astype(np.uint8), "L").convert(
        "RGB").save(tmp_path / "clean_rgb.png")
    settings = ["--iters", 6, "--stop", "fixed", "--device", "cpu", "-q", "--set",
                "perf.threads=1"]
    for name in ("grey", "rgb"):
        result = invoke("denoise", tmp_path / f"{name}.png", "-o", tmp_path / f"{name}_out.png",
                        *settings)
        assert result.exit_code == 0, result.output
    as_grey = np.asarray(Image.open(tmp_path / "grey_out.png"))
    as_rgb = Image.open(tmp_path / "rgb_out.png")
    assert as_rgb.mode == "RGB"  # the file as it was
    assert all(np.array_equal(np.asarray(as_rgb)[..., c], as_grey) for c in range(3))
    # with a reference in RGB of a grey picture: made grey with the input (else one channel
    # against three is refused); equal channels score the same either way
    result = invoke("denoise", tmp_path / "rgb.png", "--reference", tmp_path / "clean_rgb.png",
                    "-o", tmp_path / "ref_out.png", *settings)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "ref_out.png.json").read_text())["metrics"]["psnr"] > 20


def test_a_grey_photo_as_rgb_beside_a_grey_reference_is_measured_as_grey(
        tmp_path: Path) -> None:
    grey = _rng().integers(0, 256, (H, W), np.uint8)
    Image.fromarray(grey, "L").convert("RGB").save(tmp_path / "rgb.png")
    Image.fromarray(grey, "L").save(tmp_path / "ref.png")  # one channel
    result = invoke("denoise", tmp_path / "rgb.png", "--reference", tmp_path / "ref.png",
                    "-o", tmp_path / "out.png", *TINY)
    assert result.exit_code == 0, result.output  # was: 'has 1 channel(s), the input 3'
    assert Image.open(tmp_path / "out.png").mode == "RGB"


def test_a_grey_photo_beside_its_reference_saved_as_rgb_is_measured_as_grey(
        tmp_path: Path) -> None:
    grey = _rng().integers(0, 256, (H, W), np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    Image.fromarray(grey, "L").convert("RGB").save(tmp_path / "ref.png")  # three equal channels
    result = invoke("denoise", tmp_path / "grey.png", "--reference", tmp_path / "ref.png",
                    "-o", tmp_path / "out.png", *TINY)
    assert result.exit_code == 0, result.output  # was: 'has 3 channel(s), the input 1'
    assert Image.open(tmp_path / "out.png").mode == "L"
    assert json.loads((tmp_path / "out.png.json").read_text())["metrics"]["psnr"] > 0
    # a colour reference beside a grey photo is still a mistake
    Image.fromarray(_rng(1).integers(0, 256, (H, W, 3), np.uint8)).save(tmp_path / "col.png")
    result = invoke("denoise", tmp_path / "grey.png", "--reference", tmp_path / "col.png",
                    "-o", tmp_path / "out2.png", *TINY)
    assert result.exit_code == 2 and "has 3 channel(s), the input 1" in result.output


def test_a_grey_photo_as_rgb_beside_a_colour_reference_stays_rgb(tmp_path: Path) -> None:
    grey = _rng().integers(0, 256, (H, W), np.uint8)
    Image.fromarray(grey, "L").convert("RGB").save(tmp_path / "rgb.png")
    Image.fromarray(_rng(1).integers(0, 256, (H, W, 3), np.uint8)).save(tmp_path / "ref.png")
    result = invoke("denoise", tmp_path / "rgb.png", "--reference", tmp_path / "ref.png",
                    "-o", tmp_path / "out.png", *TINY)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "out.png").mode == "RGB"


@pytest.mark.parametrize("task, args", [("denoise", []), ("superres", ["--factor", 4])])
def test_a_single_pixel_is_refused_not_a_random_colour(tmp_path: Path, task: str,
                                                       args: list) -> None:
    """Its BatchNorm sees one value per channel: the guard undid 2399 of 2400 steps and the
    untrained network's colour came back with exit 0 (superres: 'try a lower optim.lr')."""
    Image.new("RGB", (1, 1), (128, 128, 128)).save(tmp_path / "px.png")
    result = invoke(task, tmp_path / "px.png", *args, "-o", tmp_path / "out.png", *TINY)
    assert result.exit_code == 2 and "is a single pixel" in result.output, result.output
    assert not (tmp_path / "out.png").exists()
    Image.new("RGB", (2, 1), (128, 128, 128)).save(tmp_path / "two.png")  # two will do
    assert invoke("denoise", tmp_path / "two.png", "-o", tmp_path / "two_out.png", *TINY,
                  "--set", "stop.sigma=25").exit_code == 0  # (its noise too few pixels to read)
