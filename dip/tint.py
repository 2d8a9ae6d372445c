"""A colour picture that holds one noise: denoised as grey, put back in colour.

A black-and-white photo saved in colour with a coloured mark, frame or date stamp, with a
channel shifted, or toned (sepia, blue: ``ImageOps.colorize``), holds one noise in its three
channels, each channel with a gain of its own::

    y_c = rest_c + gain_c * s,    s = (y_R + y_G + y_B) / 3

where ``s``, the channels' mean, holds the noise whole and ``rest`` none (the gains average
1). Fitted in colour, the fits, SURE and the colour Wiener filter took the one noise for
three independent ones, and a sepia or stamped one came back as it was; denoised as ``s``
and put back, 64 px crops (sigma = 25) gained 2.4-9.2 dB on the mean, as good as the same
noise saved grey or within 0.7 dB (benchmarks/README.md, "Denoised as its grey").

Two tests find such a picture (:func:`tint_of`): all its colours but a few lie on one line
through RGB (:func:`line_of`: a toning, a shift, a small mark or stamp; the line's direction
is the gains), or its colour patches read no noise (:func:`dip.stopping.one_noise`: a frame
or a large mark as well; the gains are measured, :func:`noise_gains`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dip.stopping import blocks, one_noise


@dataclass(frozen=True)
class Tint:
    """How a picture of one noise is made of its grey: ``rest + gains * grey``.

    Shape:
        rest: ``(1, 3, H, W)``; gains: ``(1, 3, 1, 1)``.
    """

    rest: torch.Tensor
    gains: torch.Tensor

    @staticmethod
    def grey(pixels: torch.Tensor) -> torch.Tensor:
        """The channels' mean, ``(1, 3, H, W)`` -> ``(1, 1, H, W)``: what is denoised (a
        reference's, what a fit in progress is scored against)."""
        return pixels.mean(1, keepdim=True)

    def coloured(self, grey: torch.Tensor) -> torch.Tensor:
        """A grey result ``(1, 1, H, W)`` (on any device) put back in colour, in [0, 1]."""
        rest, gains = self.rest.to(grey.device), self.gains.to(grey.device)
        return (rest + gains * grey).clamp(0, 1).to(grey.dtype)


#: the share of the picture's pixels that may lie off its line (:func:`line_of`): a
#: mark, a frame's corner, a stamp's edge. Never more than 23 % of a clean or noisy colour
#: photo crop's pixels lay on its line (benchmarks/README.md, "Denoised as its grey").
OFF_LINE = 0.05


def line_of(pixels: torch.Tensor) -> torch.Tensor | None:
    """The direction ``(3,)`` (its sum positive) of the one line through RGB that all the
    picture's colours but a few (:data:`OFF_LINE`) lie within a grey level of (an 8-bit
    channel's rounding moves a colour by up to 0.87 of one), where there is one within 60
    degrees of grey's, else None: a toned black-and-white photo, sepia included, each of
    whose colours is a function of one grey level; its noise, if any, lies along the line.

    Shape:
        pixels: ``(1, 3, H, W)`` in [0, 1].
    """
    direction, share = on_line(pixels)
    if share < 1 - OFF_LINE or direction.sum() / math.sqrt(3) < 0.5:
        return None
    return direction


def on_line(pixels: torch.Tensor) -> tuple[torch.Tensor, float]:
    """The line through RGB that most of the picture's colours lie near, and the share of
    them within a grey level of it: its direction ``(3,)``, its sum positive."""
    x = pixels.detach().flatten(2)[0].T  # (pixels, 3); a 12 MP photo's every 11th, in float64
    x = x[::max(1, x.shape[0] // (1 << 20))].to("cpu", torch.float64)
    on = torch.ones(x.shape[0], dtype=torch.bool)
    direction = torch.ones(3, dtype=torch.float64) / math.sqrt(3)
    for tolerance in (8, 2, 1):  # the line of them all, then of those near it (a mark pulls)
        if on.sum() < 2:
            return direction, 0.0
        centre = x[on].mean(0)
        direction = torch.linalg.eigh((x[on] - centre).T @ (x[on] - centre))[1][:, -1]
        off = x - centre
        on = (off - (off @ direction)[:, None] * direction).norm(dim=1) <= tolerance / 255
    return (direction if direction.sum() > 0 else -direction), on.double().mean().item()


def noise_gains(pixels: torch.Tensor, grey: torch.Tensor) -> torch.Tensor | None:
    """Each channel's share of the noise of ``grey``, their mean: the least-squares slope of
    the channel's finest diagonal detail (Haar's, ``a - b - c + d`` over 2x2 blocks: noise,
    and little of an edge along the rows or columns) on the mean's, over the blocks that
    agree with one noise; a block at a mark's corner holds the mark's colour, not the
    noise's (it took 1.21 / 1.01 / 0.78 for a date stamp's, and put colour noise into the
    grey photo), and is left out. They average 1; all 1 where the noise was copied. None
    where under half the blocks hold any detail (a drawing of flat colours: nothing to
    measure the noise's shares by).

    Shape:
        pixels: ``(1, 3, H, W)``; grey: ``(1, 1, H, W)``. Returns ``(1, 3, 1, 1)`` or None.
    """
    def detail(t: torch.Tensor) -> torch.Tensor:
        a, b, c, e = blocks(t[0].double())
        return (a - b - c + e).flatten(1)

    d, ds = detail(pixels), detail(grey)[0]
    some = ds != 0
    if some.double().mean() < 0.5:
        return None
    keep = some
    for _ in range(4):  # the slopes, then again without the blocks far from them
        gains = (d[:, keep] * ds[keep]).sum(1) / (ds[keep] ** 2).sum()
        misfit = (d - gains[:, None] * ds).abs().amax(0)
        keep = some & (misfit <= 3 * misfit[some].median() + 1e-6)
    return gains.to(pixels.dtype).view(1, 3, 1, 1)


def tint_of(pixels: torch.Tensor) -> Tint | None:
    """The :class:`Tint` of a colour picture that holds one noise, else None.

    Shape:
        pixels: ``(1, C, H, W)`` in [0, 1].
    """
    if pixels.shape[1] != 3:
        return None
    grey = Tint.grey(pixels)
    direction = line_of(pixels)
    if direction is not None:  # the noise moves a colour along the line: that is its share
        gains = (direction * 3 / direction.sum()).to(pixels.dtype).view(1, 3, 1, 1)
    elif one_noise(pixels):
        gains = noise_gains(pixels, grey)
    else:
        return None
    return None if gains is None else Tint(pixels - gains * grey, gains)
