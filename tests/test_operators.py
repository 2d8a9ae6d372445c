"""Every corruption operator against the same contract, then each one's own semantics."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from dip import image, metrics, operators
from dip.errors import InputError

from conftest import synthetic


def _known(h: int = 32, w: int = 32) -> torch.Tensor:
    return (torch.rand(1, 1, h, w, generator=torch.Generator().manual_seed(0)) > 0.5).float()


OPERATORS = {
    "identity": (lambda: operators.Identity(), 1),
    "mask": (lambda: operators.Mask(_known()), 1),
    "downsample2": (lambda: operators.Downsample(2), 2),
    "downsample4": (lambda: operators.Downsample(4), 4),
    "downsample8": (lambda: operators.Downsample(8), 8),
    "downsample4_bicubic": (lambda: operators.Downsample(4, "bicubic"), 4),
    "downsample2_area": (lambda: operators.Downsample(2, "area"), 2),
    "downsample4_gaussian": (lambda: operators.Downsample(4, "gaussian:1.5"), 4),
    "blur_gaussian": (lambda: operators.Blur(operators.gaussian_kernel(1.6, 25)), 1),
    "blur_motion": (lambda: operators.Blur(operators.motion_kernel(9, 30)), 1),
}


@pytest.mark.parametrize("name", OPERATORS)
def test_contract_shape_linearity_no_parameters(name: str) -> None:
    make, factor = OPERATORS[name]
    op = make()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32, generator=g).split(1)
    out = op(x)
    assert out.shape == (1, 3, 32 // factor, 32 // factor)
    # A is linear: the data term of DIP is a least-squares fit through it.
    torch.testing.assert_close(op(2 * x - 3 * y), 2 * op(x) - 3 * op(y), rtol=1e-4, atol=1e-5)
    assert list(op.parameters()) == []  # fixed physics, nothing to learn


@pytest.mark.parametrize("name", OPERATORS)
def test_contract_a_window_of_the_result_sees_the_same_physics(name: str) -> None:
    """``window`` (a tile of the result, dip.tiles): away from the window's border (as far as
    the operator's kernel reaches), the window's operator on the window's pixels gives the
    whole operator's output there."""
    make, factor = OPERATORS[name]
    op = make() if name != "mask" else operators.Mask(_known(128, 128))
    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    top, left, side = 32, 48, 64
    part = op.window(top, left, side, side)(x[..., top:top + side, left:left + side])
    whole = op(x)[..., top // factor:(top + side) // factor,
                  left // factor:(left + side) // factor]
    reach = op.kernel.shape[-1] // 2 if hasattr(op, "kernel") else 0
    m = -(-reach // factor) + (1 if reach else 0)
    inner = (..., slice(m, part.shape[-2] - m), slice(m, part.shape[-1] - m))
    assert part[inner].numel() > 0
    torch.testing.assert_close(part[inner], whole[inner])


@pytest.mark.parametrize("name", OPERATORS)
def test_contract_buffers_follow_dtype(name: str) -> None:
    op = OPERATORS[name][0]().to(torch.float64)
    assert all(b.dtype == torch.float64 for b in op.buffers())
    assert op(torch.rand(1, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_lanczos_kernel_is_normalised_symmetric_and_paper_sized(factor: int) -> None:
    k = operators.lanczos_kernel(factor)
    assert k.shape == (4 * factor, 4 * factor)  # width 4k+1 at phase 0.5 -> 4k taps
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(k, k.flip(0))
    torch.testing.assert_close(k, k.T)
    # Lanczos-2 has negative lobes: it is not a box or a Gaussian.
    assert k.min() < 0


@pytest.mark.parametrize("factor", [2, 4])
def test_lanczos_kernel_values_follow_the_papers_formula(factor: int) -> None:
    # The paper's kernel: width 4k+1, phase 0.5, taps i = 1..4k at distance
    # d = |i + 0.5 - (4k+2)/2| / k, value support*sin(pi d)*sin(pi d/support)/(pi^2 d^2).
    support, width = 2, 4 * factor + 1
    centre = (width + 1) / 2
    d = [abs(i + 0.5 - centre) / factor for i in range(1, width)]
    lobe = [support * math.sin(math.pi * x) * math.sin(math.pi * x / support)
            / (math.pi ** 2 * x ** 2) for x in d]
    expected = torch.tensor([[a * b for b in lobe] for a in lobe])
    expected /= expected.sum()
    torch.testing.assert_close(operators.lanczos_kernel(factor), expected.float(),
                               rtol=1e-5, atol=1e-7)


def test_downsample_keeps_constants_and_averages_out_fine_stripes() -> None:
    op = operators.Downsample(4)
    flat = torch.full((1, 1, 32, 32), 0.3)
    torch.testing.assert_close(op(flat), torch.full((1, 1, 8, 8), 0.3))
    stripes = torch.zeros(1, 1, 32, 32)
    stripes[..., ::2] = 1.0  # the highest frequency: must be removed, not aliased
    # away from the replicate-padded border
    assert (op(stripes)[..., 2:-2] - 0.5).abs().max() < 0.01


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_the_bicubic_kernel_is_pillows_bicubic_downscale(factor: int) -> None:
    """How most small pictures are made: away from the border (where Pillow truncates the
    kernel and the operator replicates pixels) the operator gives Pillow's result."""
    from dip import image

    x = 0.25 + 0.5 * torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    pil = image.resize(x, (64 // factor, 64 // factor), "bicubic")
    out = operators.Downsample(factor, "bicubic")(x)
    torch.testing.assert_close(out[..., 2:-2, 2:-2], pil[..., 2:-2, 2:-2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_the_lanczos3_kernel_is_pillows_lanczos_downscale_and_the_papers_is_not(
        factor: int) -> None:
    """Pillow's (and ImageMagick's) Lanczos has three lobes: ``lanczos3`` gives its result
    away from the border, the paper's two-lobe ``lanczos`` misses it several times further."""
    from dip import image

    x = 0.25 + 0.5 * torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    pil = image.resize(x, (64 // factor, 64 // factor), "lanczos")[..., 2:-2, 2:-2]
    three = operators.Downsample(factor, "lanczos3")(x)[..., 2:-2, 2:-2]
    two = operators.Downsample(factor, "lanczos")(x)[..., 2:-2, 2:-2]
    assert (three - pil).abs().max() < 2e-3
    assert (two - pil).abs().max() > 3 * (three - pil).abs().max()


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_the_area_kernel_takes_block_means(factor: int) -> None:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(operators.Downsample(factor, "area")(x),
                               torch.nn.functional.avg_pool2d(x, factor))


@pytest.mark.parametrize("spec", ["lanczos", "lanczos3", "bicubic", "area", "gaussian:0.8",
                                  "gaussian:3"])
def test_every_downsampling_kernel_is_normalised_and_centred_on_its_block(spec: str) -> None:
    k = operators.downsample_kernel(spec, 4)
    assert k.shape[0] == k.shape[1] and (k.shape[0] - 4) % 2 == 0
    torch.testing.assert_close(k.sum(), torch.tensor(1.0))
    torch.testing.assert_close(k, k.flip(0).flip(1))  # centred: the block's middle


def test_the_matching_kernel_explains_a_bicubic_input_and_lanczos_does_not() -> None:
    """Why ``--kernel`` matters: with the kernel that made the small picture, the clean image
    is an exact solution of the fit (residual ~0); with another, no image is."""
    from dip import image

    clean = 0.25 + 0.5 * image.resize(
        torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), (64, 64))
    small = image.resize(clean, (16, 16), "bicubic")
    inner = (..., slice(2, -2), slice(2, -2))
    matched = (operators.Downsample(4, "bicubic")(clean) - small)[inner].abs().max()
    other = (operators.Downsample(4, "lanczos")(clean) - small)[inner].abs().max()
    assert matched < 1e-5 and other > 100 * matched


@pytest.mark.parametrize("spec, message", [
    ("cubic", "unknown downsampling kernel 'cubic'; use lanczos, lanczos3, bicubic, area or "
              "gaussian"),
    ("lanczos:3", "unknown downsampling kernel 'lanczos:3'"),
    ("gaussian", "needs its sigma: gaussian:SIGMA"),
    ("gaussian:x", "cannot read the sigma of 'gaussian:x'"),
    ("gaussian:0", "needs a finite sigma > 0, got 0.0"),
    ("gaussian:nan", "needs a finite sigma > 0"),
    ("gaussian:inf", "needs a finite sigma > 0, got inf"),
    ("gaussian:100", "604 pixels wide, over 255"),
    ("gaussian:1e308", "wider than 255 pixels"),  # it overflowed math.ceil
])
def test_a_wrong_downsampling_kernel_is_named(spec: str, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        operators.Downsample(4, spec)


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_a_gaussian_far_under_a_pixel_is_a_kernel_not_zero_over_zero(factor: int) -> None:
    # exp(-0.25 / 2 sigma^2) underflows to 0 at every tap of an even-width kernel: the fit then
    # "diverged" at step 1 on NaNs
    kernel = operators.downsample_kernel("gaussian:0.01", factor)
    assert torch.isfinite(kernel).all() and kernel.sum().item() == pytest.approx(1.0)
    small = operators.Downsample(factor, "gaussian:0.01")(torch.rand(1, 3, 16, 16))
    assert torch.isfinite(small).all()


@pytest.mark.parametrize("factor", [3, 6, 16])
def test_downsample_takes_the_factors_the_command_offers_and_no_others(factor: int) -> None:
    # one list of factors (Downsample.FACTORS) for the operator, the config and the CLI
    with pytest.raises(InputError, match="one of 2, 4, 8"):
        operators.Downsample(factor)


@pytest.mark.parametrize("spec", ["lanczos", "bicubic", "area", "gaussian:1.5"])
@pytest.mark.parametrize("factor", operators.Downsample.FACTORS)
def test_downsample_adjoint_is_its_transpose(spec: str, factor: int) -> None:
    op = operators.Downsample(factor, spec).double()
    g = torch.Generator().manual_seed(factor)
    x = torch.rand(2, 3, 8 * factor, 5 * factor, generator=g, dtype=torch.float64)
    y = torch.rand(2, 3, 8, 5, generator=g, dtype=torch.float64)
    assert op.adjoint(y).shape == x.shape
    assert math.isclose((op(x) * y).sum().item(), (x * op.adjoint(y)).sum().item(),
                        rel_tol=1e-12)


@pytest.mark.parametrize("spec", ["lanczos", "bicubic", "area"])
def test_back_projection_is_the_nearest_image_that_shrinks_to_the_input(spec: str) -> None:
    op = operators.Downsample(4, spec)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 64, 48, generator=g)
    y = torch.rand(1, 3, 16, 12, generator=g)
    projected = operators.back_project(op, x, y)
    assert (op(projected) - y).abs().max() < 1e-4
    # the correction lies in A's row space (A^T u), so it is the smallest that fits y: any
    # other consistent image is farther from x
    other = projected + torch.randn(x.shape, generator=g) * 0.01
    other = operators.back_project(op, other, y)
    assert (other - x).norm() > (projected - x).norm()
    # an image that already shrinks to y is its own projection
    assert torch.allclose(operators.back_project(op, projected, op(projected)), projected,
                          atol=1e-6)


def test_back_projection_leaves_the_estimate_where_the_kernel_is_ill_conditioned() -> None:
    # a blur as wide as the factor: the exact solve would amplify rounding without bound
    op = operators.Downsample(2, "gaussian:2")
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(1, 1, 32, 32, generator=g), torch.rand(1, 1, 16, 16, generator=g)
    assert torch.equal(operators.back_project(op, x, y), x)


@pytest.mark.parametrize("spec, factor", [("gaussian:2", 2), ("gaussian:1.5", 2),
                                          ("gaussian:3", 4)])
def test_a_tiny_noisy_input_is_not_back_projected_into_a_checkerboard(spec: str,
                                                                      factor: int) -> None:
    """A 4 px picture has so few unknowns that the conjugate gradients solve an ill-conditioned
    system exactly, and its noise came back amplified: a correction of 16-52 grey levels for
    noise of 3 (a black-and-white checkerboard, exit 0)."""
    g = torch.Generator().manual_seed(1)
    y = 0.5 + torch.randn(1, 3, 4, 4, generator=g) * 3 / 255
    estimate = image.resize(y, (4 * factor, 4 * factor), "bicubic")
    assert torch.equal(operators.back_project(operators.Downsample(factor, spec), estimate, y),
                       estimate)
    # a kernel that does not amplify still corrects the same picture
    op = operators.Downsample(factor, "lanczos")
    assert ((op(operators.back_project(op, estimate, y)) - y).abs().max() < 1e-4)


def test_a_wide_blur_is_back_projected_to_within_the_inputs_rounding() -> None:
    """gaussian:1.5 at x2 (or 2 at x4) was left unprojected: its exact solve is ill
    conditioned, but the conjugate gradients pass the input's rounding on the way."""
    clean = synthetic(64)
    op = operators.Downsample(2, "gaussian:1.5")
    y = (op(clean) * 255).round() / 255  # an 8-bit input
    estimate = image.resize(y, (64, 64), "bicubic")
    projected = operators.back_project(op, estimate, y)
    assert ((op(projected) - y) ** 2).mean().sqrt() <= operators.ROUNDING
    assert metrics.psnr(projected.clamp(0, 1), clean) > metrics.psnr(estimate, clean) + 1


def test_mask_zeroes_missing_pixels_and_keeps_known_ones() -> None:
    known = _known()
    x = torch.rand(1, 3, 32, 32)
    out = operators.Mask(known)(x)
    assert torch.equal(out[known.expand_as(x) == 0], torch.zeros(int((known == 0).sum()) * 3))
    assert torch.equal(out[known.expand_as(x) == 1], x[known.expand_as(x) == 1])


def test_add_noise_has_the_requested_sigma_and_is_seeded() -> None:
    grey = torch.full((1, 3, 64, 64), 0.5)
    a = operators.add_noise(grey, 25, torch.Generator().manual_seed(3))
    b = operators.add_noise(grey, 25, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a - grey).std().item() * 255 == pytest.approx(25, rel=0.05)


def test_drop_pixels_removes_the_requested_fraction_of_whole_pixels() -> None:
    clean = torch.rand(1, 3, 64, 64) * 0.9 + 0.1
    corrupted, known = operators.drop_pixels(clean, 0.5, torch.Generator().manual_seed(0))
    assert known.shape == (1, 1, 64, 64)
    assert 1 - known.mean().item() == pytest.approx(0.5, abs=0.03)
    # all channels of a dropped pixel are gone together
    assert torch.equal((corrupted == 0).all(1, keepdim=True).float(), 1 - known)


@pytest.mark.parametrize("make", [
    lambda g: operators.add_noise(torch.rand(1, 3, 8, 8), float("nan"), g),  # all black, exit 0
    lambda g: operators.add_noise(torch.rand(1, 3, 8, 8), float("inf"), g),
    lambda g: operators.add_poisson(torch.rand(1, 3, 8, 8), float("inf"), g),  # a traceback
    lambda g: operators.add_poisson(torch.rand(1, 3, 8, 8), 1e30, g),  # negative counts
])
def test_noise_of_no_finite_size_is_refused(make) -> None:
    with pytest.raises(InputError, match="sigma must be a number >= 0|<= 1e\\+09"):
        make(torch.Generator().manual_seed(0))


def test_a_back_projection_that_cannot_converge_says_so() -> None:
    import warnings

    from dip.image import DipWarning
    from dip.tasks.superres import back_projected

    result, small = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 16, 16)
    facts: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = back_projected(result, small, 4, "gaussian:5", facts=facts)
    assert torch.equal(out, result.clamp(0, 1))
    assert facts == {"back_projection": "none"}  # the record's: not done, though not refused
    assert any(issubclass(w.category, DipWarning) and "not back-projected" in str(w.message)
               for w in caught)


def test_the_back_projection_leaves_the_inputs_own_error_out() -> None:
    from dip.tasks.superres import back_projected

    truth = synthetic(64)
    op = operators.Downsample(4, "lanczos")
    clean = op(truth)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)) * 10 / 255
    given = clean + noise  # an input with an error of its own, of a known size
    # an estimate that missed a little of the picture and none of the error (a fit stopped
    # before it learnt it)
    estimate = F.avg_pool2d(F.pad(truth, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    ycbcr = image.YCBCR.float()
    error = tuple(torch.einsum("ij,njhw->nihw", ycbcr, noise).pow(2).mean((0, 2, 3)).sqrt()
                  .tolist())
    exact = operators.back_project(op, estimate, given).clamp(0, 1)
    scaled = back_projected(estimate, given, 4, "lanczos", error=error)
    assert metrics.psnr(scaled, truth) > metrics.psnr(exact, truth) + 3
    # no error told (a PNG): the noise is read in the residual, and as much left out
    for none in (None, (0.0, 0.0, 0.0)):
        read = back_projected(estimate, given, 4, "lanczos", error=none)
        assert metrics.psnr(read, truth) > metrics.psnr(exact, truth) + 3
    # a clean input (the same estimate's misfit alone): the exact correction
    assert torch.equal(back_projected(estimate, clean, 4, "lanczos"),
                       operators.back_project(op, estimate, clean).clamp(0, 1))
    grey = back_projected(estimate[:, :1], given[:, :1], 4, "lanczos", error=(10 / 255,))
    assert metrics.psnr(grey, truth[:, :1]) > metrics.psnr(exact[:, :1], truth[:, :1]) + 3
    with pytest.raises(ValueError, match="each of the 3 channel"):
        back_projected(estimate, given, 4, "lanczos", error=(0.1,))


@pytest.mark.parametrize("angle, shape", [(0, (1, 9)), (90, (9, 1)), (180, (1, 9))])
def test_a_motion_blur_of_length_l_is_l_pixels_of_equal_weight(angle: float, shape) -> None:
    """As MATLAB's fspecial('motion', 9, 0) and the usual recipes: its bilinear line had
    soft ends, a blur about 8.4 px long ([.075 .121 ... .121 .075]), so a real 9 px blur
    deblurred with motion:9,0 barely got sharper (17.69 dB against 35.72 with the box)."""
    from dip.operators import motion_kernel

    k = motion_kernel(9, angle)
    rows, cols = k.sum(1) > 0, k.sum(0) > 0
    assert torch.allclose(k[rows][:, cols], torch.full(shape, 1 / 9))
    assert float(k.sum()) == pytest.approx(1.0)
    diagonal = motion_kernel(5, 45)
    assert float(diagonal.sum()) == pytest.approx(1.0)
    assert torch.equal(diagonal, diagonal.flip(0).flip(1))  # centred, symmetric
    trimmed = diagonal[diagonal.sum(1) > 0][:, diagonal.sum(0) > 0]
    assert trimmed[0, -1] > 0 and trimmed[0, 0] == 0  # a line up-right, not down-right
