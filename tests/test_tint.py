"""A colour picture that holds one noise (a black-and-white photo with a coloured mark, or
toned) is denoised as its channels' mean and put back in colour (dip.tint)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw

import dip
from dip import metrics
from dip.cli.main import cli
from dip.image import load_image
from dip.stopping import one_noise
from dip.tint import Tint, tint_of

from conftest import psnr, save, synthetic

SMALL_NET = ("net.channels_down=[8,8,8]", "net.channels_up=[8,8,8]", "net.channels_skip=[4,4,4]")


def _noisy_grey(side: int = 48, sigma: float = 25, seed: int = 0) -> torch.Tensor:
    """A noisy grey photo as a file holds it (8 bits)."""
    g = torch.Generator().manual_seed(seed)
    noisy = synthetic(side, 1) + torch.randn(1, 1, side, side, generator=g) * sigma / 255
    return (noisy.clamp(0, 1) * 255).round() / 255


def _marked(grey: torch.Tensor) -> torch.Tensor:
    """``grey`` in RGB with a red square in its corner, as a date stamp or a mark is."""
    rgb = grey.expand(-1, 3, -1, -1).clone()
    rgb[0, :, :6, :6] = torch.tensor([1.0, 0, 0])[:, None, None]
    return rgb


def _stamped(grey: torch.Tensor) -> torch.Tensor:
    """``grey`` in RGB with an orange date stamp drawn in hard-edged pixels at an odd place:
    its strokes' corners and diagonals fall inside the 2x2 blocks the gains are measured on
    (they took 1.21 / 1.01 / 0.78, and put colour noise into the grey photo)."""
    rgb = Image.fromarray((grey[0, 0] * 255).round().byte().numpy()).convert("RGB")
    pen = ImageDraw.Draw(rgb)
    pen.fontmode = "1"
    pen.text((3, grey.shape[-1] - 15), "'98 12 25", fill=(255, 140, 0))
    return torch.from_numpy(np.asarray(rgb, np.float32) / 255).permute(2, 0, 1)[None]


@pytest.mark.parametrize("change", ["mark", "odd mark", "stamp", "offset"])
def test_a_mark_or_an_offset_copies_the_noise_with_gain_one(change: str) -> None:
    grey = _noisy_grey(64)
    rgb = grey.expand(-1, 3, -1, -1).clone()
    if change == "mark":
        rgb = _marked(grey)
    if change == "odd mark":  # a 20 px red square off the 2x2 blocks' grid
        rgb[0, :, 3:23, 3:23] = torch.tensor([1.0, 0, 0])[:, None, None]
    if change == "stamp":
        rgb = _stamped(grey)
    if change == "offset":
        rgb[:, 2] = (rgb[:, 2] + 1 / 255).clamp(0, 1)
    tint = tint_of(rgb)
    assert tint is not None
    assert torch.allclose(tint.gains.flatten(), torch.ones(3), atol=1e-3)
    # the picture is its grey put back; the rest holds no noise (flat past the mark)
    assert torch.allclose(tint.coloured(Tint.grey(rgb)), rgb, atol=1e-5)
    rest = tint.rest[..., 24:46, :]
    assert (rest - rest.mean((2, 3), keepdim=True)).abs().max() < 2 / 255


def _toned(grey: torch.Tensor, slopes: tuple, offsets: tuple) -> torch.Tensor:
    """``grey`` toned by a linear map per channel, rounded to 8 bits."""
    s, o = torch.tensor(slopes).view(1, 3, 1, 1), torch.tensor(offsets).view(1, 3, 1, 1)
    return (o + s * grey * 255).round() / 255


@pytest.mark.parametrize("slopes, offsets", [((0.85, 0.85, 0.6), (13.0, 27.0, 51.0)),
                                             ((1.0, 0.9, 0.75), (0.0, 0.0, 0.0))])
def test_a_linear_toning_has_its_slopes_as_gains(slopes: tuple, offsets: tuple) -> None:
    """Toned from dark blue-grey to pale (red and green one slope, as a colorize from #0D1B33
    to #E5F3CC makes them), or to sepia (#FFE6C0: three slopes, each channel rounded its own
    way, which the colour patches read as a little noise: its colours lie on one line)."""
    grey = _noisy_grey()
    toned = _toned(grey, slopes, offsets)
    tint = tint_of(toned)
    assert tint is not None
    slope = torch.tensor(slopes).view(1, 3, 1, 1)
    assert torch.allclose(tint.gains, slope / slope.mean(), rtol=0.01)
    assert torch.allclose(tint.coloured(Tint.grey(toned)), toned, atol=1e-5)
    assert (tint.rest - tint.rest.mean((2, 3), keepdim=True)).abs().max() < 1.5 / 255


def test_independent_noise_a_drawing_a_grey_picture_and_a_tiny_one_are_no_tint() -> None:
    g = torch.Generator().manual_seed(1)
    colour = (synthetic(48) + torch.randn(1, 3, 48, 48, generator=g) * 15 / 255).clamp(0, 1)
    assert tint_of(colour) is None
    assert tint_of(_noisy_grey()) is None
    tiny = _marked(_noisy_grey(12))  # its spectrum reads any noise low, down to none
    assert not one_noise(tiny) and tint_of(tiny) is None
    # three flat colours: the colour patches read none, but there is no noise to measure the
    # channels' shares by (its edges' gave 1.35 / 1.27 / 0.38, and 2 dB lost at stop.sigma=5)
    drawing = torch.ones(1, 3, 48, 48)
    drawing[0, :, 5:20, 8:40] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    drawing[0, :, 26:44, 12:30] = torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    assert one_noise(drawing) and tint_of(drawing) is None


def _run(path: Path, **kwargs) -> dip.run.Restoration:
    return dip.restore("denoise", path, write=False, device="cpu", iters=3,
                       overrides=["optim.restarts=1", *SMALL_NET, *kwargs.pop("set", ())],
                       **kwargs)


def test_a_marked_photo_is_fitted_as_grey_and_keeps_its_mark(tmp_path: Path) -> None:
    """Fitted as grey: its channels come back equal past the mark, and the mark as it was;
    scored in colour against a colour reference."""
    clean = _marked(synthetic(48, 1))
    src = save(_marked(_noisy_grey()), tmp_path / "marked.png")
    ref = save(clean, tmp_path / "clean.png")
    done = _run(src, reference=ref)
    out = done.picture.pixels
    assert out.shape == (1, 3, 48, 48) and done.record["one_noise_gains"] == [1.0, 1.0, 1.0]
    assert torch.equal(out[:, 0, 8:, 8:], out[:, 1, 8:, 8:])
    assert torch.equal(out[:, 1], out[:, 2])
    assert (out[0, 0, :6, :6] - out[0, 1, :6, :6]).min() > 0.5  # red still
    noisy = load_image(src).pixels
    assert done.record["metrics"]["input_psnr"] == pytest.approx(
        metrics.psnr(noisy, load_image(ref).pixels), abs=1e-3)
    assert done.record["metrics"]["psnr"] == pytest.approx(
        metrics.psnr(out, load_image(ref).pixels), abs=1e-3)


def test_a_grey_reference_beside_a_marked_photo_is_refused_as_before(tmp_path: Path) -> None:
    src = save(_marked(_noisy_grey()), tmp_path / "marked.png")
    ref = save(synthetic(48, 1), tmp_path / "grey.png")
    result = CliRunner().invoke(cli, ["denoise", str(src), "--reference", str(ref),
                                      "-o", str(tmp_path / "out.png"), "--device", "cpu"])
    assert result.exit_code == 2
    assert "has 1 channel(s), the input 3; both must be grey or both colour" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.png", "marked.png"]


@pytest.mark.parametrize("how", ["poisson", "inpaint", "superres"])
def test_only_gaussian_denoising_fits_the_grey(tmp_path: Path, how: str) -> None:
    """Photon noise is not one noise copied; an inpainting's holes and a super-resolution's
    new pixels have no colour of their own to put back."""
    src = save(_marked(_noisy_grey(32)), tmp_path / "marked.png")
    small = ["optim.restarts=1", *SMALL_NET]
    if how == "poisson":
        done = _run(src, set=["noise.model=poisson"])
    elif how == "inpaint":
        mask = torch.zeros(1, 1, 32, 32)
        mask[..., 10:20, 10:20] = 1  # (white: the hole)
        done = dip.restore("inpaint", src, mask=save(mask, tmp_path / "mask.png"), write=False,
                           device="cpu", iters=3, overrides=small)
    else:
        done = dip.restore("superres", src, factor=2, write=False, device="cpu", iters=3,
                           overrides=small)
    assert "one_noise_gains" not in done.record
    assert not torch.equal(done.picture.pixels[:, 0, 16:, 16:],
                           done.picture.pixels[:, 1, 16:, 16:])


def test_a_marked_photo_is_denoised_as_well_as_its_grey_twin(tmp_path: Path) -> None:
    """The same noise in grey and in colour with a blue offset of one grey level: fitted in
    colour it came back 2.3 dB under its twin (300 steps, one fit; 6.3 dB with the defaults'
    second fit, SURE's, whose divergence took the one noise for three)."""
    clean = (synthetic(48, 1) * 255).round() / 255
    grey = save(_noisy_grey(), tmp_path / "grey.png")
    bluer = _noisy_grey().expand(-1, 3, -1, -1).clone()
    bluer[:, 2] = (bluer[:, 2] + 1 / 255).clamp(0, 1)
    bluer = save(bluer, tmp_path / "bluer.png")
    run = {"write": False, "device": "cpu", "iters": 300, "overrides": ["optim.restarts=1"]}
    twin = psnr(dip.restore("denoise", grey, **run).picture.pixels, clean)
    out = dip.restore("denoise", bluer, **run)
    clean_bluer = clean.expand(-1, 3, -1, -1).clone()
    clean_bluer[:, 2] = (clean[:, 0] + 1 / 255).clamp(max=1)
    assert psnr(out.picture.pixels, clean_bluer) > twin - 1.0
    # (blue clipped at white takes a little of the noise's share)
    assert out.record["one_noise_gains"] == pytest.approx([1, 1, 1], abs=1e-3)


def test_the_summary_says_the_picture_was_fitted_as_its_grey(tmp_path: Path) -> None:
    src = save(_marked(_noisy_grey(32)), tmp_path / "marked.png")
    sets = [a for s in ("optim.restarts=1", *SMALL_NET) for a in ("--set", s)]
    result = CliRunner().invoke(cli, ["denoise", str(src), "-o", str(tmp_path / "out.png"),
                                      "--device", "cpu", "--iters", "3", *sets])
    assert result.exit_code == 0, result.output
    assert ("fitted as the mean of its channels, which hold one noise, and its colour put back"
            in result.output)
    assert load_image(tmp_path / "out.png").pixels.shape == (1, 3, 32, 32)


def test_the_psnr_curve_and_peak_are_the_results_in_colour(tmp_path: Path) -> None:
    """Scored against a colour reference, the fit's PSNR is its result's, as for any other
    picture: put back in colour (the grey fit's against the reference's grey read 17.84 where
    the result's was 17.74)."""
    src = save(_marked(_noisy_grey()), tmp_path / "marked.png")
    ref = save(_marked(synthetic(48, 1)), tmp_path / "clean.png")
    done = _run(src, reference=ref, set=["noise.wiener=false", "stop.rule=fixed"])
    r = done.record
    assert r["returned_iteration"] == r["iterations"] == 3 and "one_noise_gains" in r
    assert r["history"]["psnr"][-1] == pytest.approx(r["metrics"]["psnr"], abs=1e-3)
    if r["metrics"]["peak_iteration"] == 3:
        assert r["metrics"]["peak_psnr"] == pytest.approx(r["metrics"]["psnr"], abs=1e-3)



def test_a_marked_jpeg_reads_the_noise_of_its_grey(tmp_path: Path) -> None:
    """A JPEG's coefficients read its noise as three independent channels' (luma noise
    0.668 sigma); one noise copied into three channels is the luma's whole, and a marked grey
    photo of sigma = 25 at quality 90 read 37.6: the stop, SURE and the Wiener filter took
    it for half as strong again as it was."""
    rng = np.random.default_rng(0)
    side = 128
    smooth = np.cumsum(np.cumsum(rng.normal(0, 0.3, (side, side)), 0), 1)
    grey = np.clip(128 + smooth - smooth.mean() + rng.normal(0, 25, (side, side)), 0, 255)
    rgb = np.repeat(np.round(grey)[..., None], 3, 2).astype(np.uint8)
    rgb[:6, :6] = (200, 0, 0)
    path = tmp_path / "marked.jpg"
    Image.fromarray(rgb).save(path, quality=90)
    assert load_image(path).jpeg_noise * 255 > 33  # as three independent noises
    done = _run(path)
    assert done.record["one_noise_gains"] == pytest.approx([1, 1, 1], abs=0.02)
    assert done.record["noise_sigma"] == pytest.approx(25, abs=2.5)
