"""Noise in a JPEG (dip.jpeg_noise): the compression rounds away the noise's finest detail,
where the patches' estimate looks for it, and ``dip denoise`` of a noisy JPEG fitted the
noise; the file's quantised coefficients read it instead."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dip import image, jpeg_noise, metrics
from dip.cli.main import cli
from dip.config import resolve
from dip.stopping import estimate_sigma
from dip.tasks import jpeg_sigma

from conftest import synthetic


def _photo(side: int = 128, seed: int = 0) -> np.ndarray:
    """A smooth colour picture with some detail, ``(side, side, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    base = synthetic(side)[0].permute(1, 2, 0).numpy() * 255
    bumps = np.cumsum(np.cumsum(rng.normal(0, 0.3, (side, side, 1)), 0), 1)
    return np.clip(base + bumps - bumps.mean(), 0, 255).astype(np.uint8)


def _jpeg(rgb: np.ndarray, path: Path, sigma: float, quality: int = 85, seed: int = 1,
          **options) -> Path:
    rng = np.random.default_rng(seed)
    noisy = np.clip(np.round(rgb + rng.normal(0, sigma, rgb.shape)), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path, "JPEG", quality=quality, **options)
    return path


@pytest.mark.parametrize("quality", [95, 85, 70])
def test_a_jpegs_coefficients_read_the_noise_the_patches_miss(tmp_path: Path,
                                                                quality: int) -> None:
    picture = image.load_image(_jpeg(_photo(), tmp_path / "in.jpg", 20, quality))
    assert estimate_sigma(picture.pixels) * 255 < 4  # 4:2:0 chroma: the tail is empty
    assert 16 < picture.jpeg_noise * 255 < 26
    assert jpeg_sigma(picture, resolve("denoise")) == pytest.approx(picture.jpeg_noise)


@pytest.mark.parametrize("side", [48, 64, 96])
def test_a_small_noisy_jpeg_is_read_from_its_flattest_quarter(tmp_path: Path,
                                                              side: int) -> None:
    """Under 64 whole blocks the file was not read, and from 64 to 255 every block counted
    (its detail then said 'no flat part'): a 64 px noisy JPEG fell back on the patches,
    which read its halved chroma as clean (0.75 for sigma 25), and was returned noisy."""
    picture = image.load_image(_jpeg(_photo(side), tmp_path / "in.jpg", 25, 90))
    assert estimate_sigma(picture.pixels) * 255 < 4
    assert 20 < picture.jpeg_noise * 255 < 31
    clean = image.load_image(_jpeg(_photo(side), tmp_path / "clean.jpg", 0, 90))
    assert jpeg_sigma(clean, resolve("denoise")) is None


def test_a_clean_jpeg_is_read_as_clean(tmp_path: Path) -> None:
    picture = image.load_image(_jpeg(_photo(), tmp_path / "in.jpg", 0))
    assert (picture.jpeg_noise or 0) * 255 < jpeg_noise.DOUBTED  # None: too much detail
    assert jpeg_noise.trusted(picture.jpeg_noise) == 0
    assert jpeg_sigma(picture, resolve("denoise")) is None


def test_the_reading_is_trusted_in_full_only_where_clean_jpegs_never_read() -> None:
    assert jpeg_noise.trusted(None) == 0 and jpeg_noise.trusted(0.0) == 0
    assert jpeg_noise.trusted(7 / 255) == 0
    assert jpeg_noise.trusted(12 / 255) == pytest.approx(6 / 255)
    assert jpeg_noise.trusted(30 / 255) == pytest.approx(30 / 255)


def test_the_reading_is_on_the_files_blocks_whatever_its_orientation(tmp_path: Path) -> None:
    # read after the EXIF turn, the 8x8 grid would be off for a photo turned 90 degrees
    # whose height is no multiple of 8
    rgb = _photo(132)[:, :124]
    upright = image.load_image(_jpeg(rgb, tmp_path / "a.jpg", 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to show
    turned = image.load_image(_jpeg(rgb, tmp_path / "b.jpg", 20, exif=exif.tobytes()))
    assert turned.pixels.shape[-2:] == upright.pixels.shape[-1:-3:-1]
    assert turned.jpeg_noise == pytest.approx(upright.jpeg_noise)


def test_a_grey_photo_and_other_files_and_pixels(tmp_path: Path) -> None:
    rgb = _photo()
    grey_path = tmp_path / "grey.jpg"
    rng = np.random.default_rng(1)
    grey = np.clip(np.round(rgb.mean(2) + rng.normal(0, 20, rgb.shape[:2])), 0, 255)
    Image.fromarray(grey.astype(np.uint8)).save(grey_path, quality=85)
    assert 16 < image.load_image(grey_path).jpeg_noise * 255 < 26  # no luma weights
    png = tmp_path / "in.png"
    Image.fromarray(rgb).save(png)
    assert image.load_image(png).jpeg_noise is None
    noisy = image.load_image(_jpeg(rgb, tmp_path / "in.jpg", 20))
    assert noisy.with_pixels(noisy.pixels).jpeg_noise is None  # no longer the file's
    tiny = Image.fromarray(rgb[:40, :40])
    out = io.BytesIO()
    tiny.save(out, "JPEG")
    assert jpeg_noise.noise_sigma(Image.open(out)) is None  # 25 blocks: too few to tell


@pytest.mark.parametrize("size", [(7, 9), (1, 1), (40, 1), (7, 7)])  # (H, W)
def test_a_jpeg_under_8_px_loads_unread(tmp_path: Path, size: tuple) -> None:
    """No whole 8x8 block: every such JPEG failed to load ("cannot reshape array of size
    0"), an input as well as a small blur kernel saved as a JPEG."""
    path = tmp_path / "small.jpg"
    Image.fromarray(_photo()[:size[0], :size[1]]).save(path, quality=90)
    picture = image.load_image(path)
    assert picture.size == size and picture.jpeg_noise is None


def test_a_blur_kernel_saved_as_a_small_jpeg_is_read(tmp_path: Path) -> None:
    kernel = tmp_path / "k7.jpg"
    disc = (np.hypot(*np.mgrid[-3:4, -3:4]) <= 3) * 255
    Image.fromarray(disc.astype(np.uint8)).save(kernel, quality=95)
    blurred = tmp_path / "blurred.png"
    Image.fromarray(_photo(32)).save(blurred)
    result = CliRunner().invoke(cli, ["deblur", str(blurred), "--kernel", str(kernel),
                                      "--iters", "2", "-q", "-o", str(tmp_path / "out.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out.png").is_file()


def test_a_given_sigma_is_the_one_used(tmp_path: Path) -> None:
    picture = image.load_image(_jpeg(_photo(), tmp_path / "in.jpg", 20))
    assert jpeg_sigma(picture, resolve("denoise", overrides=["stop.sigma=10"])) is None


def test_denoising_a_noisy_jpeg_removes_its_noise(tmp_path: Path) -> None:
    # the same decoded pixels as a PNG (no tables: what dip did with the JPEG before) are
    # read as nearly clean, and the fit kept the noise
    clean = _photo(64)
    jpeg = _jpeg(clean, tmp_path / "in.jpg", 25)
    png = tmp_path / "same.png"
    Image.open(jpeg).save(png)
    reference = tmp_path / "clean.png"
    Image.fromarray(clean).save(reference)
    scores = {}
    for source in (jpeg, png):
        out = tmp_path / f"{source.stem}_out.png"
        result = CliRunner().invoke(cli, ["denoise", str(source), "-o", str(out), "-q",
                                          "--iters", "300", "--restarts", "1"])
        assert result.exit_code == 0, result.output
        scores[source.suffix] = metrics.psnr(image.load_image(out).pixels,
                                             torch.from_numpy(clean / 255.0).permute(
                                                 2, 0, 1)[None].float())
        record = json.loads(Path(f"{out}.json").read_text())
        if source == jpeg:
            assert 18 < record["noise_sigma"] < 30
            assert record["jpeg_noise_sigma"] == record["noise_sigma"]
        else:
            assert record["noise_sigma"] < 5 and "jpeg_noise_sigma" not in record
    assert scores[".jpg"] > scores[".png"] + 2, scores


def test_deblurring_a_noisy_jpeg_reads_its_noise_too(tmp_path: Path) -> None:
    # the fast deblurring preset stops automatically only where the input reads noisy
    # (auto_if_noisy, from 3 grey levels): a noisy JPEG read as clean ran its whole budget
    from PIL import ImageFilter

    blurred = np.asarray(Image.fromarray(_photo()).filter(ImageFilter.GaussianBlur(1.6)))
    path = _jpeg(blurred, tmp_path / "in.jpg", 20)
    out = tmp_path / "out.png"
    result = CliRunner().invoke(cli, ["deblur", str(path), "--kernel", "gaussian:1.6", "-o",
                                      str(out), "-q", "--iters", "3"])
    assert result.exit_code == 0, result.output
    record = json.loads(Path(f"{out}.json").read_text())
    assert 16 < record["noise_sigma"] == record["jpeg_noise_sigma"] < 26
    clean = _jpeg(blurred, tmp_path / "clean.jpg", 0)
    assert jpeg_sigma(image.load_image(clean), resolve("deblur")) is None


def test_a_clipped_sky_does_not_hide_the_noise(tmp_path: Path) -> None:
    # a blown sky is the flattest part of a photo, its noise clipped away: read alone, 30 %
    # of it made a noisy photo read as clean
    rgb = _photo()
    rgb[:40] = 255
    picture = image.load_image(_jpeg(rgb, tmp_path / "in.jpg", 20))
    assert 16 < picture.jpeg_noise * 255 < 26


def test_detail_everywhere_is_not_read_as_noise(tmp_path: Path) -> None:
    # fine stripes over the whole picture (a fingerprint, a fabric): no flat block to read
    # the noise in; its clean JPEG was read as noise of 15-21 and blurred by 3.6 dB
    y, x = np.mgrid[0:128, 0:128]
    stripes = (128 + 50 * np.sin(2 * np.pi * (x + 0.5 * y) / 6)).astype(np.uint8)
    path = tmp_path / "in.jpg"
    Image.fromarray(np.stack([stripes] * 3, -1)).save(path, quality=50)
    picture = image.load_image(path)
    assert picture.jpeg_noise is None and jpeg_sigma(picture, resolve("denoise")) is None


def test_a_jpeg_stored_as_rgb_is_not_read(tmp_path: Path) -> None:
    # its first table is the R channel's, not the luma's (Adobe's transform 0)
    path = _jpeg(_photo(), tmp_path / "in.jpg", 20, keep_rgb=True)
    assert image.load_image(path).jpeg_noise is None


def test_a_grey_jpeg_saved_in_colour_beside_a_colour_reference_keeps_its_reading(
        tmp_path: Path) -> None:
    grey = _photo().mean(2, keepdims=True).repeat(3, 2)
    rng = np.random.default_rng(1)
    noisy = np.clip(np.round(grey + rng.normal(0, 20, grey.shape[:2])[..., None]), 0, 255)
    path = tmp_path / "in.jpg"
    Image.fromarray(noisy.astype(np.uint8)).save(path, quality=85)
    reference = tmp_path / "colour.png"
    Image.fromarray(_photo()).save(reference)
    records = []
    for beside in (["--reference", str(reference)], []):  # made RGB again, and grey
        out = tmp_path / f"out{len(records)}.png"
        result = CliRunner().invoke(cli, ["denoise", str(path), *beside, "-o", str(out), "-q",
                                          "--iters", "2", "--restarts", "1"])
        assert result.exit_code == 0, result.output
        records.append(json.loads(Path(f"{out}.json").read_text()))
    # (its colour patches read 0 and the JPEG's own reading was taken; its channels' mean is
    # read now, as the grey picture is)
    assert 16 < records[0]["noise_sigma"] == records[1]["noise_sigma"] < 26
