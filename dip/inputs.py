"""The fixed network input ``z`` and its per-step perturbation.

The paper (Sec. 3 and supplementary) feeds the generator a fixed tensor of uniform noise
scaled by 1/10 with 32 channels; for some inpainting images a 2-channel meshgrid works better.
Every step ``z`` is perturbed by Gaussian noise (``reg_noise_std`` in the paper's notebooks),
a regulariser that delays fitting the corruption.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dip.errors import ConfigError


def noise_code(channels: int, size: tuple[int, int], scale: float,
               generator: torch.Generator) -> torch.Tensor:
    """Uniform noise in ``[0, scale)`` — the paper's default code.

    Shape:
        - Output: ``(1, channels, H, W)``
    """
    h, w = size
    return torch.rand((1, channels, h, w), generator=generator, dtype=torch.float32,
                      device=generator.device) * scale


def meshgrid_code(channels: int, size: tuple[int, int], scale: float,
                  generator: torch.Generator) -> torch.Tensor:
    """Two channels holding the x and y coordinates in [0, 1] (the paper's Fig. 6 input).

    Shape:
        - Output: ``(1, 2, H, W)``
    """
    check_input("meshgrid", channels)
    h, w = size
    ys = torch.linspace(0, 1, h, dtype=torch.float32, device=generator.device)
    xs = torch.linspace(0, 1, w, dtype=torch.float32, device=generator.device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y])[None]


CODES: dict[str, Callable[..., torch.Tensor]] = {
    "noise": noise_code,
    "meshgrid": meshgrid_code,
}


def check_input(kind: str, channels: int) -> None:
    """``input.kind`` and ``input.channels``, when the config is checked: they were refused
    only as the first network was built, after the run's estimate (and a batch's other jobs).
    """
    if kind not in CODES:
        raise ConfigError(f"unknown input.kind {kind!r}; known: {', '.join(CODES)}")
    if kind == "meshgrid" and channels != 2:
        raise ConfigError(f"input.kind 'meshgrid' has 2 channels; set input.channels: 2 "
                          f"(got {channels})")


def make_code(kind: str, channels: int, size: tuple[int, int], scale: float,
              generator: torch.Generator) -> torch.Tensor:
    """Build the network input registered under ``kind`` (``noise`` | ``meshgrid``)."""
    check_input(kind, channels)
    return CODES[kind](channels, size, scale, generator)

