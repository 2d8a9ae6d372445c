"""Tiles: a large image restored as overlapping pieces, blended back without a seam.

A fit's memory and the cost of each of its steps grow with its pixels; a 12-megapixel photo
fitted whole needs tens of GB. Cut into tiles, it needs what one tile needs times the tiles
fitted at once (:func:`dip.fitting.fit_group`), whatever the photo's size.

The tiles cover the observation with at least ``overlap`` pixels in common between
neighbours, spread evenly (no thin last tile). Each restored tile is weighted by a window
that is 1 inside and falls off as a raised cosine across each overlap with a neighbour (not
at the image's own border), and the result is ``sum(w_i x_i) / sum(w_i)``. Across an overlap
two neighbours' ramps are ``sin²`` and ``cos²`` of the same angle, so they sum to 1: the blend
crosses from one tile to the next smoothly, and an image whose tiles all return their input
comes back exactly. A tile's border, where its fit saw the least context, gets the least
weight.

Super-resolution tiles the small input; the tiles of the result are ``scale`` times larger,
their overlaps too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from dip.errors import ConfigError

#: the smallest tile: the network's five scales halve 32 pixels down to 1
MIN_TILE = 32


@dataclass(frozen=True)
class Tile:
    """A window of the observation: rows ``top`` to ``top + height``, columns ``left`` to
    ``left + width``; ``ramps`` are the widths of the overlaps with a neighbour above, below,
    left and right (0: the image's border there)."""

    top: int
    left: int
    height: int
    width: int
    ramps: tuple[int, int, int, int] = (0, 0, 0, 0)

    def scaled(self, scale: int) -> Tile:
        """The same window in an image ``scale`` times larger (super-resolution's result)."""
        return Tile(self.top * scale, self.left * scale, self.height * scale,
                    self.width * scale, tuple(r * scale for r in self.ramps))

    def crop(self, t: torch.Tensor) -> torch.Tensor:
        """The window of ``t`` ``(N, C, H, W)``."""
        return t[..., self.top:self.top + self.height, self.left:self.left + self.width]


def check_tiles(settings: Any) -> None:
    """The ``tile.*`` keys: ``size`` auto | off | a side >= :data:`MIN_TILE`, ``overlap``
    >= 0 (used up to a quarter of the tile: :func:`overlap_for`), ``whole_max`` >= 0,
    ``auto_size`` >= :data:`MIN_TILE`."""
    size = settings.size
    if size not in ("auto", "off") and not (size.isdecimal() and int(size) >= MIN_TILE):
        raise ConfigError(f"config key 'tile.size' must be auto, off or a tile's side of at "
                          f"least {MIN_TILE} pixels, got {size!r}")
    if settings.overlap < 0:
        raise ConfigError(f"config key 'tile.overlap' must be >= 0, got {settings.overlap}")
    if settings.whole_max < 0:
        raise ConfigError(f"config key 'tile.whole_max' must be >= 0 (0: no limit), got "
                          f"{settings.whole_max}")
    if settings.auto_size < MIN_TILE:
        raise ConfigError(f"config key 'tile.auto_size' must be a tile's side of at least "
                          f"{MIN_TILE} pixels, got {settings.auto_size}")


def overlap_for(side: int, overlap: int) -> int:
    """The overlap tiles of ``side`` pixels use: ``tile.overlap``, at most a quarter of the
    side (so that the blend's ramps leave every tile an inside of its own)."""
    return min(overlap, side // 4)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of side ``tile`` covering ``length`` with overlaps >= ``overlap``,
    spread evenly."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def grid(size: tuple[int, int], tile: int, overlap: int) -> list[Tile]:
    """Tiles of at most ``tile`` pixels a side covering an image of ``size`` ``(H, W)``, row by
    row, neighbours sharing at least ``overlap`` pixels.

    Raises:
        ValueError: ``overlap`` is negative or not smaller than half a ``tile``.
    """
    if tile < 1 or overlap < 0 or 2 * overlap >= tile:
        raise ValueError(f"tiles of {tile} px need an overlap in [0, {(tile - 1) // 2}], "
                         f"got {overlap}")
    h, w = size
    tops, lefts = _starts(h, tile, overlap), _starts(w, tile, overlap)
    th, tw = min(tile, h), min(tile, w)

    def ramps(starts: list[int], i: int, side: int) -> tuple[int, int]:
        before = starts[i - 1] + side - starts[i] if i > 0 else 0
        after = starts[i] + side - starts[i + 1] if i + 1 < len(starts) else 0
        return before, after

    return [Tile(top, left, th, tw, ramps(tops, i, th) + ramps(lefts, j, tw))
            for i, top in enumerate(tops) for j, left in enumerate(lefts)]


def _ramp(n: int, before: int, after: int) -> torch.Tensor:
    """1 inside; sin² rising across ``before`` pixels at the start and falling across
    ``after`` at the end."""
    w = torch.ones(n, dtype=torch.float64)
    for width, flip in ((before, False), (after, True)):
        if width:
            rise = torch.sin(math.pi / 2 * (torch.arange(width, dtype=torch.float64) + 0.5)
                             / width) ** 2
            if flip:
                w[n - width:] *= rise.flip(0)
            else:
                w[:width] *= rise
    return w


def window(t: Tile) -> torch.Tensor:
    """The blending weights of ``t``, ``(height, width)`` float32, in (0, 1]."""
    above, below, left, right = t.ramps
    return torch.outer(_ramp(t.height, above, below), _ramp(t.width, left, right)).float()


class Blend:
    """Accumulates restored tiles into the whole image.

    Args:
        shape: the whole result's shape ``(1, C, H, W)``.
    """

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.total = torch.zeros(shape, dtype=torch.float32)
        self.weight = torch.zeros(shape[-2:], dtype=torch.float32)

    def add(self, t: Tile, image: torch.Tensor) -> None:
        """Add the restored tile ``image`` ``(1, C, t.height, t.width)`` (any device)."""
        w = window(t)
        t.crop(self.total).add_(image.detach().float().cpu() * w)
        t.crop(self.weight).add_(w)

    def result(self) -> torch.Tensor:
        """The blended image so far ``(1, C, H, W)``; where no tile has arrived yet, 0."""
        return self.total / self.weight.clamp(min=1e-12)
