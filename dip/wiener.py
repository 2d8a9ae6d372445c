"""Collaborative Wiener filtering of a noisy image, with a restored image as its pilot.

BM3D's second step (Dabov, Foi, Katkovnik & Egiazarian, "Image denoising by sparse 3-D
transform-domain collaborative filtering", IEEE TIP 2007; colour as in their CBM3D, ICIP
2007), with Deep Image Prior's result as the pilot ("basic estimate") in place of BM3D's
first step:

1. **Grouping.** For every reference patch (every ``step`` pixels) the ``group`` patches of
   the pilot's luminance most like it within a ``search`` window, those closer than ``tau``.
2. **Empirical Wiener shrinkage.** The same places are cut from the noisy image; each group is
   taken to a 3-D spectrum (a 2-D DCT of each patch, a 1-D DCT across the group), where the
   pilot's spectrum ``P`` sets each coefficient's gain ``P^2 / (P^2 + sigma^2)``.
3. **Aggregation.** Every filtered patch is put back, weighted by ``1 / (sigma^2 sum gain^2)``
   (a group that kept less noise counts more) and a Kaiser window.

Colour images are filtered in an orthonormal opponent colour space (luminance, two colour
differences), where the noise stays white with the same sigma; groups are matched on the
luminance alone. The parameters are the paper's "normal profile" for its Wiener step, one set
for sigma <= 40 grey levels and one above (larger, sparser patches): nothing here was fitted
to dip's benchmark images.

The noise level is the one the fits' stop used (:func:`dip.stopping.estimate_sigma`, read from
the patches' spectrum) unless the user gives it.

Why: the DIP result is a good pilot but keeps some of the noise it fitted and smooths some
detail; the pilot's grouping and spectra let the filter recover detail the network smoothed
and drop noise it kept (benchmarks/README.md, "degradations.py": over the average of the
two fits, +0.24 / +0.47 dB on the sigma = 25 crops, centre / held-out corners, and +0.32 /
+0.82 at sigma = 50; level with CBM3D given the true sigma).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch.nn import functional as F

#: RGB to an orthonormal opponent space: luminance (R+G+B)/sqrt(3), then two colour differences
_OPPONENT = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, -1.0], [1.0, -2.0, 1.0]],
                         dtype=torch.float32)
_OPPONENT = _OPPONENT / _OPPONENT.norm(dim=1, keepdim=True)
#: about this many reference patches are matched and filtered at once: memory stays bounded
#: at any image size. 4096 took 645 MB over the process's base on a 512 px colour picture
#: (its groups' spectra, about ten copies of 100 MB), beside a run whose memory estimate
#: counts the fits; 256 takes 80 MB and is faster (6.1 s against 9.5: the groups stay in
#: cache), the same image to float rounding (7e-7)
_REFERENCES = 256
#: a value far from any pixel: patches reaching outside the image never match
_OUTSIDE = 1e3


@dataclass(frozen=True)
class Profile:
    """The Wiener step's parameters (Dabov et al. 2007, normal profile).

    Attributes:
        patch: patch side in pixels.
        step: pixels between reference patches.
        search: side of the window searched for similar patches (odd).
        group: most patches in a group (a power of two).
        tau: largest mean squared distance (per pixel, [0, 1] units) of a patch to its
            reference's, measured on the pilot's luminance.
    """

    patch: int
    step: int
    search: int
    group: int
    tau: float


#: sigma <= 40 / 255; above it
PROFILES = (Profile(8, 3, 39, 32, 400 / 255 ** 2), Profile(11, 6, 39, 32, 3500 / 255 ** 2))


def profile_for(sigma: float) -> Profile:
    """The paper's profile for noise of standard deviation ``sigma`` ([0, 1] units)."""
    return PROFILES[0] if sigma <= 40 / 255 else PROFILES[1]


def _dct(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``(n, n)``: rows are the basis."""
    k = torch.arange(n, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * k[None] + 1) * k[:, None] / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m.float()


def _starts(n: int, patch: int, step: int) -> torch.Tensor:
    """Reference patches' first rows (or columns): every ``step``, and the last one."""
    starts = list(range(0, n - patch + 1, step))
    if starts[-1] != n - patch:
        starts.append(n - patch)
    return torch.tensor(starts)


def _match(guide: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
           pr: Profile) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The most similar patches to each reference ``(rows[i], cols[i])`` in ``guide``.

    Returns ``(top, left, size)``: the matches' corners ``(R, group)`` (closest first, the
    reference itself among them) and each group's size, the largest power of two not above
    the number of matches closer than ``tau``.
    """
    p, s = pr.patch, pr.search // 2
    width = guide.shape[1]
    padded = F.pad(guide[None, None], (s, s, s, s), value=_OUTSIDE)[0, 0]
    r0, r1 = int(rows.min()), int(rows.max())
    a = guide[r0:r1 + p]
    distance = torch.empty(len(rows), 2 * s + 1, 2 * s + 1, dtype=guide.dtype)
    for i, dy in enumerate(range(-s, s + 1)):
        # every horizontal shift of this row band at once: (2s + 1, rows, width)
        b = padded[s + r0 + dy:s + r1 + p + dy].unfold(1, width, 1).permute(1, 0, 2)
        d = F.avg_pool2d(F.avg_pool2d(((a - b) ** 2)[:, None], (p, 1), stride=1), (1, p),
                         stride=1)[:, 0]  # a p x p box, as two 1-D ones
        distance[:, i] = d[:, rows - r0, cols].T
    distance = distance.flatten(1)
    offsets = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
    nearest, which = distance.topk(min(pr.group, len(offsets)), dim=1, largest=False)
    close = (nearest <= pr.tau).sum(1).clamp(min=1)
    size = 2 ** torch.floor(torch.log2(close.double())).long()
    shift = torch.tensor(offsets)[which]  # (R, group, 2)
    return rows[:, None] + shift[..., 0], cols[:, None] + shift[..., 1], size


def _filter_groups(noisy: torch.Tensor, pilot: torch.Tensor, top: torch.Tensor,
                   left: torch.Tensor, sigma: float, pr: Profile, num: torch.Tensor,
                   den: torch.Tensor) -> None:
    """Wiener-filter groups of one size ``(R, g)`` and add them to ``num`` / ``den``."""
    p, c, width = pr.patch, noisy.shape[0], noisy.shape[-1]
    g = top.shape[1]
    i = torch.arange(p)
    rows = top[..., None, None] + i[:, None]  # (R, g, p, 1)
    cols = left[..., None, None] + i[None, :]  # (R, g, 1, p)
    d, a = _dct(p), _dct(g)

    def spectrum(t: torch.Tensor) -> torch.Tensor:  # a 2-D DCT per patch, a 1-D one across
        return a @ (d @ t @ d.T).reshape(c, -1, g, p * p)

    def pixels(t: torch.Tensor) -> torch.Tensor:  # its inverse (orthonormal: transposes)
        return d.T @ (a.T @ t).reshape(c, -1, g, p, p) @ d

    observed, guide = spectrum(noisy[:, rows, cols]), spectrum(pilot[:, rows, cols])
    gain = guide ** 2 / (guide ** 2 + sigma ** 2)
    patches = pixels(gain * observed)
    weight = 1.0 / (sigma ** 2 * gain.pow(2).sum((2, 3)))  # (C, R): per group and channel
    kaiser = torch.kaiser_window(p, periodic=False, beta=2.0, dtype=torch.float32)
    window = weight[:, :, None, None, None] * (kaiser[:, None] * kaiser[None])
    where = (rows * width + cols).expand(-1, -1, p, p).reshape(-1)
    num.index_add_(1, where, (patches * window).reshape(c, -1))
    den.index_add_(1, where, window.expand(c, -1, g, p, p).reshape(c, -1))


def collaborative_wiener(noisy: torch.Tensor, pilot: torch.Tensor, sigma: float) -> torch.Tensor:
    """Filter ``noisy`` with ``pilot``'s groups and spectra (module docstring).

    Args:
        noisy: the observation ``(1, C, H, W)``, C = 1 or 3, in [0, 1].
        pilot: an estimate of the clean image, same shape.
        sigma: the noise's standard deviation, [0, 1] units; 0 (no noise) returns ``noisy``.

    Shape:
        Returns ``(1, C, H, W)`` in [0, 1], on the CPU.
    """
    if noisy.shape != pilot.shape or noisy.dim() != 4 or noisy.shape[1] not in (1, 3):
        raise ValueError(f"noisy and pilot must both be (1, 1 or 3, H, W), got "
                         f"{tuple(noisy.shape)} and {tuple(pilot.shape)}")
    pr = profile_for(sigma)
    h, w = noisy.shape[-2:]
    if sigma <= 0:  # no noise: nothing to filter, every gain P^2 / (P^2 + 0) is 1 (the pilot
        return noisy.clamp(0, 1)  # was returned: a clean picture came back as the network's)
    if h < pr.patch or w < pr.patch:  # no patch to group: the pilot, unfiltered
        return pilot.clamp(0, 1)
    colour = noisy.shape[1] == 3
    y, x = noisy[0].float().cpu(), pilot[0].float().clamp(0, 1).cpu()
    if colour:
        y, x = (torch.einsum("ij,jhw->ihw", _OPPONENT, t) for t in (y, x))
    guide = x[0] / math.sqrt(3) if colour else x[0]  # luminance (R+G+B)/3: the paper's tau
    rows, cols = torch.meshgrid(_starts(h, pr.patch, pr.step), _starts(w, pr.patch, pr.step),
                                indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    num, den = (torch.zeros(y.shape[0], h * w, dtype=y.dtype) for _ in range(2))
    starts = rows.unique()
    per_chunk = max(1, _REFERENCES * len(starts) // len(rows))  # reference rows at once
    for first in range(0, len(starts), per_chunk):
        chosen = torch.isin(rows, starts[first:first + per_chunk])
        top, left, size = _match(guide, rows[chosen], cols[chosen], pr)
        for g in size.unique().tolist():
            same = size == g
            _filter_groups(y, x, top[same, :g], left[same, :g], sigma, pr, num, den)
    out = (num / den).view(-1, h, w)
    if colour:
        out = torch.einsum("ji,jhw->ihw", _OPPONENT, out)
    return out[None].clamp(0, 1)


def seconds_per_pixel(noisy: torch.Tensor, sigma: float, side: int = 128) -> float:
    """The filter's seconds per pixel on this machine (for a run's estimate said before it
    starts), timed on a ``side`` px centre crop of ``noisy`` with a smoothed copy as its pilot.
    The work per pixel does not grow with the image: every reference patch is matched in a
    window of its own size, in bands of :data:`_REFERENCES` references.

    Shape:
        noisy: ``(1, C, H, W)``, C = 1 or 3, in [0, 1].
    """
    h, w = noisy.shape[-2:]
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    crop = noisy[..., top:top + side, left:left + side].float().cpu()
    pilot = F.avg_pool2d(crop, 5, stride=1, padding=2, count_include_pad=False)
    start = time.perf_counter()
    collaborative_wiener(crop, pilot, sigma)
    return (time.perf_counter() - start) / (crop.shape[-2] * crop.shape[-1])
