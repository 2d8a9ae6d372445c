"""A colour picture that holds one noise (a black-and-white photo with a coloured mark, or
toned) is denoised as its channels' mean and put back in colour (dip.tint)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

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


def test_a_mark_or_an_offset_copies_the_noise_with_gain_one() -> None:
    grey = _noisy_grey()
    bluer = grey.expand(-1, 3, -1, -1).clone()
    bluer[:, 2] = (bluer[:, 2] + 1 / 255).clamp(0, 1)
    for rgb in (_marked(grey), bluer):
        tint = tint_of(rgb)
        assert tint is not None
        assert torch.allclose(tint.gains.flatten(), torch.ones(3), atol=1e-3)
        # the picture is its grey put back; the rest holds no noise (flat past the mark)
        assert torch.allclose(tint.coloured(Tint.grey(rgb)), rgb, atol=1e-5)
        rest = tint.rest[..., 8:, 8:]
        assert (rest - rest.mean((2, 3), keepdim=True)).abs().max() < 2 / 255


def test_a_linear_toning_has_its_slopes_as_gains() -> None:
    """Toned from dark blue-grey to pale (8-bit), red and green with one slope, as a
    colorize from #0D1B33 to #E5F3CC makes them: red and green differ by exactly 14 levels.
    (A toning of three slopes rounds each channel its own way, and that rounding noise is
    read in colour: benchmarks/README.md, sepia.)"""
    grey = _noisy_grey()
    slopes = torch.tensor([0.85, 0.85, 0.6]).view(1, 3, 1, 1)
    offsets = torch.tensor([13.0, 27.0, 51.0]).view(1, 3, 1, 1)
    toned = (offsets + slopes * grey * 255).round() / 255
    tint = tint_of(toned)
    assert tint is not None
    assert torch.allclose(tint.gains, slopes / slopes.mean(), rtol=0.02)
    assert torch.allclose(tint.coloured(Tint.grey(toned)), toned, atol=1e-5)


def test_independent_noise_a_grey_picture_and_a_tiny_one_are_no_tint() -> None:
    g = torch.Generator().manual_seed(1)
    colour = (synthetic(48) + torch.randn(1, 3, 48, 48, generator=g) * 15 / 255).clamp(0, 1)
    assert tint_of(colour) is None
    assert tint_of(_noisy_grey()) is None
    tiny = _marked(_noisy_grey(12))  # its spectrum reads any noise low, down to none
    assert not one_noise(tiny) and tint_of(tiny) is None


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
