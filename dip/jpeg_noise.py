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
15, 25 and 50 as 14.9-20.8, 23.5-28.4 and 38.1-53.4 at qualities 95 to 50. On clean JPEGs
it reads 0-15 (the least detail in the flattest blocks is read as noise): the tasks trust it
only from :data:`TRUSTED` up (see :func:`trusted`), and not at all where the flattest blocks
are far from flat (:data:`MOST_DETAIL`). Noise the same in all three channels (film grain,
a camera's luma noise) reads about 1.5 times too high: the reading takes the channels'
noise for independent. Where the denoising task has found one noise in three channels
(:mod:`dip.tint`), :func:`of_one_noise` turns the reading into that noise's.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

#: the luma's noise over the RGB channels' for white noise of the same sigma in each:
#: sqrt(0.299^2 + 0.587^2 + 0.114^2) (ITU-T T.871's weights)
LUMA_NOISE = 0.6684
#: the luma's weights of R, G and B (ITU-T T.871)
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
#: the share of blocks, the flattest, whose coefficients are counted
FLATTEST = 0.1
#: at least this many blocks are counted (a small picture's tenth is too few) ...
FLAT_BLOCKS = 64
#: ... but a picture of fewer than 4 x :data:`FLAT_BLOCKS` whole blocks (under 128 px on a
#: side) counts its flattest quarter, and one of fewer than this many is not read. Before,
#: every block of a picture under 128 px was counted (its detail then said "no flat part":
#: none) and one under 64 blocks was not read: a 64 px noisy JPEG with its chroma halved
#: fell back on the patches, which find no noise in the chroma's finest detail (0.75 for
#: sigma 25), and was returned as it was. On the 9 colour images' crops shrunk to 48 / 64 /
#: 96 px at quality 90 (``benchmarks/jpeg_noise.py --small``, 18 a side): sigma 25 is read
#: on 15 / 18 / 18 (before 0 / 5 / 18), at 23-32; sigma 10 on 9 / 13 / 14 (0 / 2 / 12); a
#: clean crop reads 2.8-8.8 on 3 / 5 / 7, of which the tasks take 0.9 at most (:func:`trusted`)
FEWEST_BLOCKS = 16
#: at most this many blocks are read (a 12 MP photo has 187,000: every n-th row of blocks)
MOST_BLOCKS = 50_000
#: the share of a block's values at 0 or 255 over which it is not read (a noisy shadow's
#: few clipped values are kept: noise of sigma 25 over a level of 50 clips 2 %)
MOST_CLIPPED = 0.1
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
    no luma table, too small, no flat part to read it in).

    ``img`` as decoded, before any EXIF turn (the blocks are on the file's grid), its
    channels stored as YCbCr (the caller checks: a file :func:`dip.image.coding_error`
    reads).
    """
    tables = getattr(img, "quantization", None) or {}
    layers = getattr(img, "layer", None) or []
    if img.format not in ("JPEG", "MPO") or img.mode not in ("L", "RGB") or not layers:
        return None
    step = np.asarray(tables.get(layers[0][3], ()), dtype=np.float64)
    if step.size != 64:
        return None
    blocks = _blocks(np.asarray(img))  # uint8: thinned before anything is made of it
    if len(blocks) < FEWEST_BLOCKS:
        return None
    # a grey photo saved in colour (three equal channels) is dip's grey picture: its noise
    # is the luma's itself
    grey = blocks.shape[-1] == 1 or bool((blocks == blocks[..., :1]).all())
    # a block clipped at 0 or 255 has lost its noise there, and a clipped sky is the
    # flattest of all: read as a clean one (a blown sky over 30 % of a noisy photo read 0)
    whole = ((blocks == 0) | (blocks == 255)).mean(axis=(1, 2, 3)) <= MOST_CLIPPED
    luma = blocks[whole].astype(np.float64) @ (
        np.ones(1) if blocks.shape[-1] == 1 else np.array(LUMA_WEIGHTS))
    if len(luma) < FEWEST_BLOCKS:
        return None
    luma_sigma = _from_blocks(luma, step.reshape(8, 8))
    return None if luma_sigma is None else luma_sigma / (1.0 if grey else LUMA_NOISE)


def _blocks(pixels: np.ndarray) -> np.ndarray:
    """The picture's whole 8x8 blocks on JPEG's grid, every n-th row of them for a large one.

    Shape:
        - Input: ``(H, W)`` or ``(H, W, C)``
        - Output: ``(N, 8, 8, C)``, the input's type
    """
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    rows, cols = pixels.shape[0] // 8, pixels.shape[1] // 8
    every = max(1, -(-rows * cols // MOST_BLOCKS))
    # the channels named, not -1: a picture under 8 px has no whole block, and numpy cannot
    # infer a side of an empty array (every JPEG under 8 px failed to load)
    kept = pixels[:rows * 8, :cols * 8].reshape(rows, 8, cols, 8, pixels.shape[-1])[::every]
    return kept.transpose(0, 2, 1, 3, 4).reshape(-1, 8, 8, pixels.shape[-1])


def _from_blocks(blocks: np.ndarray, step: np.ndarray) -> float | None:
    """The luma's noise ([0, 1] units) from its blocks' coefficients (see the module); None
    where even the flattest blocks hold more detail than noise of that level would (a
    fingerprint's ridges everywhere: its clean JPEG read as noise of 15-21, and denoised with
    it lost 3.6 dB)."""
    coefficients = np.rint(_DCT @ blocks @ _DCT.T / step)  # the file's integers, give or take
    # the flattest blocks: least energy at the lowest frequencies, which then do not count
    lowest = (_U + _V >= 1) & (_U + _V <= 2)
    energy = ((coefficients * step)[:, lowest] ** 2).sum(1)
    fewest = (FLAT_BLOCKS if len(blocks) >= 4 * FLAT_BLOCKS
              else max(FEWEST_BLOCKS, len(blocks) // 4))  # a small picture's quarter
    flat = max(fewest, int(FLATTEST * len(blocks)))
    order = np.argsort(energy, kind="stable")[:flat]
    zeros = (coefficients[order] == 0).mean(0)
    usable = ((step >= FINEST_STEP) & (zeros > USABLE_ZEROS[0]) & (zeros < USABLE_ZEROS[1])
              & (_U + _V >= 3))
    if usable.sum() < 4:
        return 0.0 if (zeros[(_U + _V >= 3)] >= USABLE_ZEROS[1]).all() else None
    z = torch.from_numpy(zeros[usable])
    each = torch.from_numpy(step[usable]) / (2 * np.sqrt(2) * torch.special.erfinv(z))
    sigma = float(each.median())
    # noise alone gives the lowest frequencies sigma^2 each: the flattest tenth about 0.3 of
    # that, 0.5-2.2 times it measured with noise of sigma = 15 on 19 images' crops
    detail = float(np.median(energy[order])) / (lowest.sum() * sigma ** 2)
    return None if detail > MOST_DETAIL else sigma / 255


#: how much more energy the flattest blocks' lowest frequencies may hold than the noise read
#: would give them, before the reading is taken for detail (see :func:`_from_blocks`): clean
#: JPEGs of fine texture everywhere 4-145, noisy ones 0.5-2.2 (fingerprint's 44-52 aside)
MOST_DETAIL = 4.0


def of_one_noise(sigma: float, gains: list[float]) -> float:
    """The noise of a picture's channels' mean, where its three channels hold one noise
    times ``gains`` (:class:`dip.tint.Tint`), from :func:`noise_sigma`'s reading, which
    took them for three independent noises: the luma then holds ``w . gains`` times the
    mean's noise, not :data:`LUMA_NOISE` times (a black-and-white photo with a red mark,
    sigma = 25, saved at quality 90, read 36.5-41.2 on the 9 colour images' crops)."""
    luma = sum(w * g for w, g in zip(LUMA_WEIGHTS, gains, strict=True))
    return sigma * LUMA_NOISE / luma


def trusted(sigma: float | None) -> float:
    """How much of a JPEG's reading (``sigma``, [0, 1] units) the denoising task takes: all
    of it from :data:`TRUSTED` up, none under :data:`DOUBTED`, a share rising in between."""
    if not sigma:
        return 0.0
    share = min(1.0, max(0.0, (sigma * 255 - DOUBTED) / (TRUSTED - DOUBTED)))
    return share * sigma
