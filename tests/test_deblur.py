"""Deblurring with a known kernel: the operator, the kernel specs and files, the command and
a batch job, and a real gain over the blurred input on a synthetic picture."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dip import image, operators
from dip.cli.main import cli
from dip.errors import InputError
from dip.tasks.deblur import load_kernel, parse_spec

from conftest import psnr, save, synthetic

SMALL = ["--set", "net.channels_down=[16,16,16]", "--set", "net.channels_up=[16,16,16]",
         "--set", "net.channels_skip=[4,4,4]", "--device", "cpu", "-q"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_blur_is_a_normalised_convolution_not_a_correlation() -> None:
    x = torch.zeros(1, 1, 9, 9)
    x[..., 4, 4] = 1
    kernel = torch.zeros(3, 3)
    kernel[1, 2] = 2.0  # weight to the right of the centre: the impulse moves right
    out = operators.Blur(kernel)(x)
    assert out[0, 0, 4, 5] == pytest.approx(1.0) and out.sum() == pytest.approx(1.0)
    flat = torch.full((1, 3, 16, 16), 0.4)  # a flat picture stays flat, borders included
    torch.testing.assert_close(operators.Blur(parse_spec("gaussian:2"))(flat), flat)


def test_an_even_kernel_is_padded_to_have_a_centre() -> None:
    op = operators.Blur(torch.ones(4, 2))
    assert tuple(op.kernel.shape[-2:]) == (5, 3)
    assert op(torch.rand(1, 3, 20, 20)).shape == (1, 3, 20, 20)


@pytest.mark.parametrize("spec, shape", [("gaussian:1.6", (11, 11)), ("gaussian:1.6,25", (25, 25)),
                                         ("box:9", (9, 9)), ("motion:15,30", (15, 15))])
def test_specs_make_normalised_kernels(spec: str, shape: tuple) -> None:
    kernel = parse_spec(spec)
    assert tuple(kernel.shape) == shape and kernel.sum().item() == pytest.approx(1.0)
    assert (kernel >= 0).all()


def test_a_spec_is_read_whatever_its_case_and_a_bare_name_asks_for_its_numbers(
        tmp_path: Path, monkeypatch) -> None:
    """GAUSSIAN:1 was taken for a file ("kernel not found"), where superres takes LANCZOS;
    box, with no size, was "kernel not found: box"."""
    assert torch.equal(load_kernel("GAUSSIAN:1.6"), parse_spec("gaussian:1.6"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=re.escape("kernel not found: box (a box blur is "
                                                   "written box:SIZE)")):
        load_kernel("box")


@pytest.mark.parametrize("spec", ["box:9.5", "gaussian:", "motion:3", "gaussian:0",
                                  "box:0", "box:400"])
def test_a_wrong_spec_says_how_to_write_it(spec: str) -> None:
    with pytest.raises(InputError):
        parse_spec(spec)


@pytest.mark.parametrize("spec", ["box:100000", "box:1e308", "gaussian:1e308",
                                  "gaussian:1.6,100000", "motion:100000000,0", "motion:5,nan"])
def test_a_huge_or_impossible_kernel_is_refused_before_it_is_built(spec: str) -> None:
    # each of these tried to allocate gigabytes, or overflowed, before the size check
    with pytest.raises(InputError, match="wider than 255 pixels|over 255|finite angle"):
        parse_spec(spec)


def test_kernel_files_npy_and_png(tmp_path: Path) -> None:
    np.save(tmp_path / "k.npy", np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=float))
    Image.fromarray(np.array([[0, 64, 0], [64, 255, 64], [0, 64, 0]], np.uint8)).save(
        tmp_path / "k.png")
    for name in ("k.npy", "k.png"):
        kernel = operators.Blur(load_kernel(tmp_path / name)).kernel
        assert kernel.sum().item() == pytest.approx(1.0) and kernel.max() > 0.4
    np.save(tmp_path / "bad.npy", np.ones((2, 2, 2)))
    with pytest.raises(InputError, match="2-D array"):
        load_kernel(tmp_path / "bad.npy")
    # a complex one lost its imaginary part with a NumPy warning, and ran
    np.save(tmp_path / "complex.npy", np.ones((3, 3)) * (1 + 1j))
    with pytest.raises(InputError, match="must hold a 2-D array of numbers, got complex128"):
        load_kernel(tmp_path / "complex.npy")


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_kernel_with_transparency_is_its_weights_as_seen_over_black(tmp_path: Path,
                                                                     mode: str) -> None:
    """A soft dab on a clear layer, white where it is clear (as a brush exports it): its
    alpha was dropped and the kernel read as a flat 5x5 box."""
    weights = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]).astype(float)
    dab = np.full((5, 5, 4 if mode == "RGBA" else 2), 255, np.uint8)
    dab[..., -1] = np.round(weights / weights.max() * 255)
    Image.fromarray(dab, mode).save(tmp_path / "dab.png")
    kernel = operators.Blur(load_kernel(tmp_path / "dab.png")).kernel.squeeze()
    expected = torch.from_numpy(dab[..., -1] / dab[..., -1].sum()).float()
    assert torch.allclose(kernel, expected, atol=1e-6)


def test_a_folder_named_like_a_kernel_file_is_said_to_be_a_folder(tmp_path: Path) -> None:
    """It was 'kernel not found', for a name the user can see in the folder."""
    (tmp_path / "k.npy").mkdir()
    with pytest.raises(InputError, match=r"kernel is a folder, not a \.npy file: .*k\.npy$"):
        load_kernel(tmp_path / "k.npy")


def test_a_kernel_file_that_is_not_an_array_of_numbers_says_so_without_numpys_advice(
        tmp_path: Path) -> None:
    """numpy's message for these advises allow_pickle=True, unsafe on a file from elsewhere
    and not an option a user of dip has."""
    Image.new("L", (5, 5), 9).save(tmp_path / "png.npy", format="PNG")  # an image named .npy
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "huge.npy", np.full((3, 3), 1e39))  # finite, past float32
    for name, said in (("png.npy", r"not a \.npy file \(numpy's format\)"),
                       ("objects.npy", "it holds Python objects, not numbers"),
                       ("huge.npy", r"weights past float32's range")):
        with pytest.raises(InputError, match=said) as caught:
            load_kernel(tmp_path / name)
        assert "pickle" not in str(caught.value)
    np.save(tmp_path / "empty.npy", np.zeros((0, 3)))  # the range check had a traceback
    with pytest.raises(InputError, match=r"2-D array of numbers, got float64 of shape \(0, 3\)"):
        load_kernel(tmp_path / "empty.npy")  # (trimmed to (0, 1), Blur then said that shape)
    with pytest.raises(InputError, match=r"a blur kernel is a 2-D array of at least one "
                                         r"weight, got shape \(0, 3\)"):
        operators.Blur(torch.zeros(0, 3))


def sharp(size: int = 32) -> torch.Tensor:
    """The synthetic picture with 4-pixel bars over its lower half: detail a blur takes."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    bars = (((x // 4) % 2) * (y > size // 2)).float()
    return (0.5 * synthetic(size) + 0.5 * bars).clamp(0, 1)


def _blurred(tmp_path: Path, size: int = 32) -> tuple[Path, Path]:
    ref = save(sharp(size), tmp_path / "clean.png")
    result = invoke("corrupt", ref, "-o", tmp_path / "blurred.png", "--blur", "gaussian:2",
                    "--noise", 1)
    assert result.exit_code == 0, result.output
    return tmp_path / "blurred.png", ref


def test_deblur_gains_over_the_blurred_input(tmp_path: Path) -> None:
    """Measured here: +5.1 dB after 400 steps (17.9 -> 22.9 dB); 300 steps must give +3."""
    blurred, ref = _blurred(tmp_path)
    out = tmp_path / "sharp.png"
    result = invoke("deblur", blurred, "--kernel", "gaussian:2", "-o", out, "--iters", 300,
                    "--stop", "fixed", "--reference", ref, *SMALL)
    assert result.exit_code == 0, result.output
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["task"] == "deblur" and record["kernel"] == "gaussian:2"
    m = record["metrics"]
    assert m["psnr"] > m["input_psnr"] + 3, m  # sharper than the blurred input
    clean = torch.from_numpy(np.asarray(Image.open(ref), np.float32) / 255).permute(2, 0, 1)
    sharp = torch.from_numpy(np.asarray(Image.open(out), np.float32) / 255).permute(2, 0, 1)
    assert psnr(sharp, clean) == pytest.approx(m["psnr"], abs=0.1)


def test_auto_if_noisy_takes_the_noise_level_the_user_gives(tmp_path: Path) -> None:
    """stop.sigma was ignored by deblurring's auto_if_noisy (it estimated the level anyway):
    the blurred input reads about 1 grey level, so the whole budget ran whatever was given."""
    blurred, _ = _blurred(tmp_path)
    levels = {}
    for sigma in (0, 10):
        out = tmp_path / f"s{sigma}.png"
        result = invoke("deblur", blurred, "--kernel", "gaussian:2", "-o", out, "--iters", 5,
                        "--stop", "auto_if_noisy", "--set", f"stop.sigma={sigma}", *SMALL)
        assert result.exit_code == 0, result.output
        levels[sigma] = json.loads(Path(f"{out}.json").read_text())["noise_sigma"]
    assert levels[0] < 3 and levels[10] == 10


def test_deblur_mistakes_are_one_line_before_any_work(tmp_path: Path) -> None:
    blurred, _ = _blurred(tmp_path, 32)
    for args, words in ((["--kernel", "gaussian:x"], "gaussian:SIGMA"),
                        ([], "needs --kernel"),
                        (["--kernel", tmp_path / "none.npy"], "kernel not found")):
        result = invoke("deblur", blurred, *args, "-o", tmp_path / "o.png", *SMALL)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and words in result.output
    assert not (tmp_path / "o.png").exists()


def test_corrupt_blurs_then_adds_noise_and_refuses_other_pairs(tmp_path: Path) -> None:
    ref = save(sharp(), tmp_path / "clean.png")
    assert invoke("corrupt", ref, "-o", tmp_path / "b.png", "--blur", "box:5").exit_code == 0
    blurred = operators.Blur(parse_spec("box:5"))(sharp())
    got = torch.from_numpy(np.asarray(Image.open(tmp_path / "b.png"), np.float32) / 255)
    torch.testing.assert_close(got.permute(2, 0, 1)[None], blurred, atol=1 / 255, rtol=0)
    result = invoke("corrupt", ref, "-o", tmp_path / "x.png", "--blur", "box:5",
                    "--drop-pixels", 0.5)
    assert result.exit_code == 2 and "give one kind of damage" in result.output


def test_corrupt_never_writes_over_the_kernel_file_it_reads(tmp_path: Path) -> None:
    ref = save(sharp(), tmp_path / "clean.png")
    kernel = save(torch.ones(1, 1, 5, 5) / 2, tmp_path / "k.png")
    before = kernel.read_bytes()
    result = invoke("corrupt", ref, "-o", kernel, "--blur", kernel, "--overwrite")
    assert result.exit_code == 2 and "one of the run's input files" in result.output
    assert kernel.read_bytes() == before


def test_a_batch_job_takes_a_kernel_file_beside_the_batch(tmp_path: Path) -> None:
    blurred, _ = _blurred(tmp_path, 32)
    np.save(tmp_path / "k.npy", parse_spec("gaussian:2").numpy())
    batch = tmp_path / "batch.yaml"
    batch.write_text("defaults:\n  iters: 3\n  device: cpu\n"
                     "jobs:\n  - {task: deblur, input: blurred.png, kernel: k.npy, output: out/}\n"
                     "  - {task: deblur, input: blurred.png, kernel: 'box:3', "
                     "output: out/box.png}\n")
    result = invoke("run", batch, "-q")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "blurred_deblur.png.json").read_text())
    assert record["kernel"] == str((tmp_path / "k.npy").resolve())
    assert "0 done, 2 already done" in invoke("run", batch, "-q").output


def test_a_float_tiff_kernel_keeps_its_weights(tmp_path: Path) -> None:
    # read as a picture, its values were mapped to [0, 1] from their own range: the smallest
    # weight became 0 ([[1,2,1],[2,4,2],[1,2,1]] a cross), a flat kernel all zero
    import tifffile

    weights = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32)
    tifffile.imwrite(tmp_path / "k.tif", weights)
    tifffile.imwrite(tmp_path / "flat.tif", np.full((5, 5), 5, np.float32))
    assert torch.allclose(load_kernel(tmp_path / "k.tif"), torch.from_numpy(weights).double())
    flat = operators.Blur(load_kernel(tmp_path / "flat.tif")).kernel
    assert torch.allclose(flat, torch.full_like(flat, 1 / 25))


def test_a_kernel_whose_sum_overflows_float32_is_still_normalised() -> None:
    kernel = operators.Blur(torch.full((3, 3), 1e38, dtype=torch.float64)).kernel
    assert torch.allclose(kernel, torch.full_like(kernel, 1 / 9))  # was all 0: a black image


@pytest.mark.parametrize("spec", ["gaussian:1.6,-3", "gaussian:1.6,0"])
def test_a_gaussian_of_no_size_is_refused(spec: str) -> None:
    with pytest.raises(InputError, match="a Gaussian blur needs a size >= 1"):
        parse_spec(spec)


def test_a_kernel_image_too_large_says_the_kernels_limit(tmp_path: Path) -> None:
    Image.fromarray(np.full((300, 300), 9, np.uint8)).save(tmp_path / "k.png")
    with pytest.raises(InputError, match="larger than 255x255 pixels") as caught:
        load_kernel(tmp_path / "k.png")
    assert "max_pixels" not in str(caught.value)  # raising it changes nothing


def test_a_level_motion_blur_deblurs_a_one_row_strip(tmp_path: Path) -> None:
    # motion:3,0 is a 1x3 line; drawn in a 5x5 square it was refused as taller than the strip
    strip = save(sharp()[..., :1, :], tmp_path / "strip.png")
    result = invoke("deblur", strip, "--kernel", "motion:3,0", "-o", tmp_path / "o.png",
                    "--iters", "2", *SMALL)
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "o.png").size == Image.open(strip).size
    result = invoke("deblur", strip, "--kernel", "motion:3,90", "-o", tmp_path / "o2.png",
                    "--iters", "2", *SMALL)
    assert result.exit_code == 2 and "the kernel (1x3) is larger than the image" in result.output


def test_a_kernels_zero_border_is_the_same_blur() -> None:
    from dip.tasks.deblur import _within

    picture = image.Picture(torch.rand(1, 1, 8, 8))
    kernel = torch.zeros(5, 5)
    kernel[2, 1:4] = torch.tensor([0.25, 0.5, 0.25])
    trimmed = _within(kernel, picture)
    assert trimmed.shape == (1, 3) and torch.equal(trimmed[0], kernel[2, 1:4])
    assert torch.allclose(operators.Blur(trimmed)(picture.pixels),
                          operators.Blur(kernel)(picture.pixels), atol=1e-6)


@pytest.mark.parametrize("command", ["deblur", "corrupt"])
def test_a_kernel_larger_than_the_image_is_refused(tmp_path: Path, command: str) -> None:
    """It ran (65x65 on 32x32) without a word."""
    src = save(sharp()[..., :16, :16], tmp_path / "small.png")
    flag = "--kernel" if command == "deblur" else "--blur"
    result = invoke(command, src, flag, "box:17", "-o", tmp_path / "o.png",
                    *(SMALL if command == "deblur" else []))
    assert result.exit_code == 2, result.output
    assert "the kernel (17x17) is larger than the image (16x16)" in result.output
    assert not (tmp_path / "o.png").exists()


def test_an_even_gaussian_size_is_refused_with_the_odd_one() -> None:
    """Centred on index n // 2, as every kernel is, an even Gaussian moved the picture half a
    pixel up and left: a blur made with a centred one was not the one modelled."""
    from dip.errors import InputError
    from dip.tasks.deblur import parse_spec

    with pytest.raises(InputError, match=r"a Gaussian blur's size must be odd, to have a "
                                         r"centre pixel; got 24 \(use 25\)"):
        parse_spec("gaussian:2,24")
    k = parse_spec("gaussian:2,25")
    assert torch.equal(k, k.flip(0)) and int(k.argmax()) == 12 * 25 + 12
