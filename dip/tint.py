"""A colour picture that holds one noise: denoised as grey, put back in colour.

A black-and-white photo saved in colour with a coloured mark or frame, one channel shifted,
or toned where two channels share a slope (``ImageOps.colorize`` from dark blue to
pale blue), holds one noise in its three channels, each channel with a gain of its own::

    y_c = rest_c + gain_c * s,    s = (y_R + y_G + y_B) / 3

where ``s``, the channels' mean, holds the noise whole and ``rest`` none (the gains average
1). Such a picture's colour patches read no noise (:func:`dip.stopping.one_noise`); that is
the test. Fitted in colour, the fits, SURE and the colour Wiener filter took the one noise
for three independent ones: denoised as ``s`` and put back, 64 px crops (sigma = 25) gain
2.4-4.0 dB on the mean, as good as the same noise saved grey (benchmarks/README.md, "Denoised
as its grey"). A toning that rounds each channel its own way (sepia through a table) holds
that rounding in every channel, reads it in colour, and is fitted in colour; so does an
anti-aliased coloured stamp, whose edges mix its colour with the photo's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dip.stopping import one_noise


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


def noise_gains(pixels: torch.Tensor, grey: torch.Tensor) -> torch.Tensor:
    """Each channel's share of the noise of ``grey``, their mean: the least-squares slope of
    the channel's finest diagonal detail (Haar's, ``a - b - c + d`` over 2x2 blocks: noise,
    and little of an edge along the rows or columns) on the mean's. They average 1; all 1
    where the noise was copied into the channels.

    Shape:
        pixels: ``(1, 3, H, W)``; grey: ``(1, 1, H, W)``. Returns ``(1, 3, 1, 1)``.
    """
    def detail(t: torch.Tensor) -> torch.Tensor:
        h, w = t.shape[-2] // 2 * 2, t.shape[-1] // 2 * 2
        t = t[..., :h, :w].double()
        return t[..., 0::2, 0::2] - t[..., 0::2, 1::2] - t[..., 1::2, 0::2] + t[..., 1::2, 1::2]

    d, ds = detail(pixels), detail(grey)
    power = (ds * ds).sum()
    if power == 0:  # no detail at all: the channels as they are
        return torch.ones(1, 3, 1, 1, dtype=pixels.dtype)
    return ((d * ds).sum((0, 2, 3)) / power).to(pixels.dtype).view(1, 3, 1, 1)


def tint_of(pixels: torch.Tensor) -> Tint | None:
    """The :class:`Tint` of a colour picture that holds one noise, else None.

    Shape:
        pixels: ``(1, C, H, W)`` in [0, 1].
    """
    if pixels.shape[1] != 3 or not one_noise(pixels):
        return None
    grey = Tint.grey(pixels)
    gains = noise_gains(pixels, grey)
    return Tint(pixels - gains * grey, gains)
