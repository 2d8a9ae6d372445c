from __future__ import annotations

import math

import pytest
import torch

from dip import metrics


def test_psnr_of_a_known_error() -> None:
    a = torch.zeros(1, 1, 8, 8)
    assert metrics.psnr(a + 0.1, a) == pytest.approx(20.0)
    assert metrics.psnr(a, a) == math.inf


def test_ssim_is_one_for_identical_images_and_lower_for_noise() -> None:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-5)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1)))
    assert metrics.ssim(noisy.clamp(0, 1), x) < 0.9


def test_luma_follows_bt601_studio_range() -> None:
    white, black = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    assert metrics.rgb_to_y(white).mean().item() == pytest.approx(235 / 255, abs=1e-3)
    assert metrics.rgb_to_y(black).mean().item() == pytest.approx(16 / 255, abs=1e-6)


def test_psnr_y_ignores_the_border() -> None:
    ref = torch.full((1, 3, 16, 16), 0.5)
    x = ref.clone()
    x[..., :4, :] = 0  # damage only inside the 4-pixel border
    assert metrics.psnr_y(x, ref, border=4) == math.inf
    assert metrics.psnr_y(x, ref, border=0) < 30
