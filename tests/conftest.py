"""Shared fixtures: tiny synthetic images (never downloaded, never from shared data)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


def synthetic(size: int = 32, channels: int = 3) -> torch.Tensor:
    """A smooth, structured test picture ``(1, C, size, size)`` in [0, 1]: gradients, a disc
    and a bar — the kind of content the network's prior fits quickly."""
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    disc = ((x - 0.6) ** 2 + (y - 0.4) ** 2 < 0.06).float()
    bar = ((x > 0.15) & (x < 0.3)).float()
    planes = [0.2 + 0.5 * x + 0.3 * disc, 0.3 + 0.4 * y - 0.2 * bar + 0.1 * torch.sin(6 * x),
              0.7 - 0.4 * x * y + 0.2 * bar]
    img = torch.stack(planes[:channels])[None].clamp(0, 1)
    return img if channels != 1 else img.mean(1, keepdim=True)


def save(t: torch.Tensor, path: Path) -> Path:
    array = np.round(t[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
    return path


@pytest.fixture
def clean_png(tmp_path: Path) -> Path:
    return save(synthetic(32), tmp_path / "clean.png")


@pytest.fixture
def noisy_png(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(1)
    noisy = (synthetic(32) + torch.randn(1, 3, 32, 32, generator=g) * 25 / 255).clamp(0, 1)
    return save(noisy, tmp_path / "noisy.png")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1 / torch.mean((a - b) ** 2).item())
