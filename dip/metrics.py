"""Image quality against a reference: PSNR, SSIM, and the super-resolution protocol (Y, border).

All functions take ``(1, C, H, W)`` tensors in [0, 1] of the same shape and return floats.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB for signals in [0, 1]."""
    mse = torch.mean((x.float() - ref.float()) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return torch.outer(g, g).float()


def ssim(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Structural similarity (Wang et al. 2004): 11×11 Gaussian window, σ 1.5, K1 .01, K2 .03,
    computed per channel on the valid region and averaged."""
    x, ref = x.float(), ref.float()
    c = x.shape[1]
    size = min(11, x.shape[-1], x.shape[-2])
    window = _gaussian_window(size).to(x.device).expand(c, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, window, groups=c)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mu_x, mu_y = blur(x), blur(ref)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(ref * ref) - mu_y ** 2
    cov = blur(x * ref) - mu_x * mu_y
    score = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return score.mean().item()


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma in [16/255, 235/255], as MATLAB's ``rgb2ycbcr`` — the channel
    super-resolution papers (and DIP's Table 2) report. Grey input is returned unchanged.

    Shape:
        - Input: ``(N, 3, H, W)`` or ``(N, 1, H, W)``
        - Output: ``(N, 1, H, W)``
    """
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([65.481, 128.553, 24.966], dtype=x.dtype, device=x.device)
    weights = weights.view(1, 3, 1, 1) / 255.0
    return (x * weights).sum(dim=1, keepdim=True) + 16.0 / 255.0


def psnr_y(x: torch.Tensor, ref: torch.Tensor, border: int) -> float:
    """Super-resolution protocol: PSNR of the Y channel with ``border`` pixels cropped per side
    (the usual choice is the scale factor)."""
    if border > 0:
        x = x[..., border:-border, border:-border]
        ref = ref[..., border:-border, border:-border]
    return psnr(rgb_to_y(x.float()), rgb_to_y(ref.float()))
