"""The noise a JPEG photo held before it was compressed, read from its quantised coefficients.

Noise saved as a JPEG is no longer white: each 8x8 block's DCT coefficient is rounded to a
multiple of its step ``q`` (the file's quantisation table), and where the noise is smaller
than about ``q / 2`` it is rounded away. The high frequencies' steps are the largest, so the
finest detail of the noise goes first, and that is where :func:`dip.stopping.estimate_sigma`
looks for it (the smallest eigenvalues of the patches' covariance): on the 9 colour images'
128 px crops with white noise of sigma = 15 saved at quality 75 it read 0.5-1.2 for a noise
that left 10.5-12.5 in the decoded pixels, and ``dip denoise`` fitted the noise with the
image (+0.3 dB over the input where the PNG gained +10).

The rounding itself says how strong the noise was. In a block with no detail at frequency
``(u, v)`` the coefficient before rounding is the noise alone, normal with the luma's noise
``s`` (the DCT is orthonormal, as JPEG's is), and it is rounded to zero with probability
``erf(q / (2 sqrt(2) s))``: the share of zeros in the flattest blocks gives ``s`` at each
frequency whose step is neither too fine to be told from the decoder's own rounding nor so
coarse that every coefficient is zero. The median over those frequencies is the estimate,
as white noise of ``sigma`` per RGB channel (luma noise is 0.668 ``sigma``).

Measured (``benchmarks/jpeg_noise.py``): on the same crops it reads white noise of sigma =
15, 25 and 50 as 14.7-21, 24-30 and 42-52 at qualities 95 to 50. On clean JPEGs it reads
2-15 (the least detail in the flattest blocks is read as noise): the denoising task trusts
it only from :data:`TRUSTED` up (see :func:`trusted`).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

#: the luma's noise over the RGB channels' for white noise of the same sigma in each:
#: sqrt(0.299^2 + 0.587^2 + 0.114^2) (ITU-T T.871's weights)
LUMA_NOISE = 0.6684
#: the share of blocks, the flattest, whose coefficients are counted
FLATTEST = 0.1
#: at least this many blocks are counted (a small picture's tenth is too few)
FEWEST_BLOCKS = 64
#: at most this many blocks are read (a 12 MP photo has 187,000: every n-th row of blocks)
MOST_BLOCKS = 50_000
#: steps under this are too fine: the decoder's rounding to whole pixels moves a coefficient
#: by about 0.3, so a zero is not told from a one
FINEST_STEP = 3
#: frequencies whose share of zeros is outside these say nothing (all rounded away, or none)
USABLE_ZEROS = (0.02, 0.98)
#: from this estimate (0-255 units) up it is trusted in full, and under :data:`DOUBTED` not
#: at all (a clean JPEG read 2-15: 8-11.7 the most at qualities 75-95 on 128 px crops)
TRUSTED, DOUBTED = 16.0, 8.0

_N = np.arange(8)
#: the orthonormal 8-point DCT-II, rows by frequency (JPEG's transform, T.81 A.3.3)
_DCT = (np.sqrt(np.where(_N[:, None] == 0, 1 / 8, 2 / 8))
        * np.cos(np.pi * (2 * _N[None, :] + 1) * _N[:, None] / 16))
_U, _V = np.meshgrid(_N, _N, indexing="ij")


def noise_sigma(img: Image.Image) -> float | None:
    """The white noise (per RGB channel, [0, 1] units) that a decoded JPEG's luma
    coefficients say it held before compression; None where it cannot be read (not a JPEG,
    no luma table, too small, channels not stored as YCbCr).

    ``img`` as decoded, before any EXIF turn: the blocks are on the file's grid.
    """
    tables = getattr(img, "quantization", None) or {}
    layers = getattr(img, "layer", None) or []
    if img.format not in ("JPEG", "MPO") or img.mode not in ("L", "RGB") or not layers:
        return None
    step = np.asarray(tables.get(layers[0][3], ()), dtype=np.float64)
    if step.size != 64:
        return None
    pixels = np.asarray(img, dtype=np.float32)
    # a grey photo saved in colour (three equal channels) is dip's grey picture: its noise
    # is the luma's itself
    grey = pixels.ndim == 2 or bool((pixels == pixels[..., :1]).all())
    luma = pixels if pixels.ndim == 2 else pixels @ np.float32([0.299, 0.587, 0.114])
    blocks = _blocks(luma)
    if len(blocks) < FEWEST_BLOCKS:
        return None
    luma_sigma = _from_blocks(blocks, step.reshape(8, 8))
    return None if luma_sigma is None else luma_sigma / (1.0 if grey else LUMA_NOISE)


def _blocks(luma: np.ndarray) -> np.ndarray:
    """The picture's whole 8x8 blocks on JPEG's grid, every n-th row of them for a large one.

    Shape:
        - Input: ``(H, W)``
        - Output: ``(N, 8, 8)``
    """
    rows, cols = luma.shape[0] // 8, luma.shape[1] // 8
    every = max(1, -(-rows * cols // MOST_BLOCKS))
    kept = luma[:rows * 8, :cols * 8].reshape(rows, 8, cols, 8)[::every]
    return kept.transpose(0, 2, 1, 3).reshape(-1, 8, 8).astype(np.float64)


def _from_blocks(blocks: np.ndarray, step: np.ndarray) -> float | None:
    """The luma's noise ([0, 1] units) from its blocks' coefficients (see the module)."""
    coefficients = np.rint(_DCT @ blocks @ _DCT.T / step)  # the file's integers, give or take
    # the flattest blocks: least energy at the lowest frequencies, which then do not count
    lowest = (_U + _V >= 1) & (_U + _V <= 2)
    energy = ((coefficients * step)[:, lowest] ** 2).sum(1)
    flat = max(FEWEST_BLOCKS, int(FLATTEST * len(blocks)))
    chosen = coefficients[np.argsort(energy, kind="stable")[:flat]]
    zeros = (chosen == 0).mean(0)
    usable = ((step >= FINEST_STEP) & (zeros > USABLE_ZEROS[0]) & (zeros < USABLE_ZEROS[1])
              & (_U + _V >= 3))
    if usable.sum() < 4:
        return 0.0 if (zeros[(_U + _V >= 3)] >= USABLE_ZEROS[1]).all() else None
    z = torch.from_numpy(zeros[usable])
    each = torch.from_numpy(step[usable]) / (2 * np.sqrt(2) * torch.special.erfinv(z))
    return float(each.median()) / 255


def trusted(sigma: float | None) -> float:
    """How much of a JPEG's reading (``sigma``, [0, 1] units) the denoising task takes: all
    of it from :data:`TRUSTED` up, none under :data:`DOUBTED`, a share rising in between."""
    if not sigma:
        return 0.0
    share = min(1.0, max(0.0, (sigma * 255 - DOUBTED) / (TRUSTED - DOUBTED)))
    return share * sigma
