"""Stop rules: when to end the fit, and which estimate to return.

A rule sees every step's raw network output and the fit's current estimate (the output average)
and answers "stop now?". A rule that prefers an earlier image than the last one exposes it as
``chosen`` (step, image); otherwise the fit returns its current estimate. Rules register in
:data:`STOP_RULES` under the name ``stop.rule`` takes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch.nn import functional as F

from dip.errors import ConfigError


def estimate_sigma(y: torch.Tensor, patch: int = 8, most: int = 1 << 18,
                   clipped: bool = True) -> float:
    """The standard deviation of white Gaussian noise in ``y``, without the clean image.

    Chen, Zhu & Heng, "An efficient statistical method for image noise level estimation"
    (ICCV 2015): the eigenvalues of the patches' covariance are the image's (a few large) plus
    sigma^2 each; the noise's are the tail whose mean equals its median. Patches are sampled
    on a grid of at most ``most`` positions. Where the input was clipped to [0, 1] (a saved
    photo: its noise pushed pixels past black and white), the clipped noise is weaker than
    the noise added; :func:`_unclipped` reads back the latter.

    Why not the median of the finest wavelet band (Donoho & Johnstone 1994, dip's estimate
    before): fine texture lies in that band and reads as noise. On a fur crop with noise of
    sigma = 15 it read 27.2, where this reads 17.3, and the stop and SURE then smoothed the
    fur away (benchmarks/README.md, "The noise level from the patches' spectrum").

    A small colour picture has too few patches for ``patch``-sided ones (3 x 8 x 8 = 192
    dimensions): the noise's eigenvalues then spread (Marchenko-Pastur) and the tail's mean
    falls under sigma^2, so the side is shrunk until there are
    :data:`PATCHES_PER_DIMENSION` patches per dimension. On the 9 colour images' crops with
    noise of sigma = 25, 8x8 read 0.70 sigma at 32 px and 0.88 at 48 px, this 0.97 and 0.98;
    from 96 px the side stays 8 (``benchmarks/noise_estimate.py``). A grey picture's 64
    dimensions read within 7 % at 32 px from sigma = 15 up, and smaller patches read its
    texture as noise more (1.39 sigma at sigma = 5 instead of 1.23): it keeps 8x8.

    A clean picture of few grey levels (text, line art, a lone dot on black, a screenshot) is
    no low-rank signal: its patches' spectrum has no noise tail, and the tail read its content
    as noise (a white pixel on black, 32 px: 17.3 grey levels; clean text 62-85; flat-colour
    UI 13-25), which the fit and the filter then took away. Noise leaves few exact ties, and
    :func:`_consistent` lowers the reading to the most noise that some part of the picture,
    with its pixels at 0 or 1 and its equal neighbours, allows: those pictures read 0 to 2.7
    grey levels (``benchmarks/noise_estimate.py --clean``); the 720 noisy and 180 clean
    crops of ``benchmarks/noise_estimate.py`` read as before, to the last bit.

    ``clipped``: whether ``y`` is a picture clipped to [0, 1]; not a residual (any values),
    whose noise is read as it is.

    Shape:
        y: ``(1, C, H, W)``, values in [0, 1]. Returns sigma in the same units (0 for an image
        smaller than the smallest patch).
    """
    sigma = _spectrum_sigma(y, patch, most)
    if sigma is None:
        return 0.0
    if y.shape[1] == 3 and sigma < ONE_NOISE:  # one noise in three channels: see ONE_NOISE
        return estimate_sigma(y.mean(1, keepdim=True), patch, most, clipped)
    return _consistent(y, _unclipped(y, sigma, most)) if clipped else sigma


def _spectrum_sigma(y: torch.Tensor, patch: int, most: int) -> float | None:
    """The noise the tail of the patches' spectrum reads (:func:`estimate_sigma` before its
    corrections for clipping and exact ties); None for a picture smaller than a patch."""
    h, w = y.shape[-2:]
    side = _patch_side(y.shape[1], h, w, patch)
    if h < side or w < side:
        return None
    stride = max(1, math.ceil(math.sqrt((h - side + 1) * (w - side + 1) / most)))
    # in float64 on the CPU, whatever the image's device: Apple's MPS has no float64 (nor
    # eigvalsh), and the CPU default denoising on a Mac ended in a traceback here
    eigen = torch.linalg.eigvalsh(_patch_covariance(y.detach().to("cpu", torch.float64),
                                                    side, stride)).flip(0)
    for i in range(eigen.numel()):
        tail = eigen[i:]
        if tail.mean() <= tail.median():
            break
    return float(tail.mean().clamp(min=0).sqrt())


def one_noise(y: torch.Tensor, patch: int = 8, most: int = 1 << 18) -> bool:
    """Whether a colour picture's noise, if any, is one noise in its three channels: its
    patches' spectrum reads none (:data:`ONE_NOISE`). False for a grey picture and for one
    too small to read (:func:`measurable`: its spectrum reads the noise low, down to 0).

    Shape:
        y: ``(1, C, H, W)`` in [0, 1].
    """
    if y.shape[1] != 3 or not measurable(*y.shape[-2:], patch):
        return False
    sigma = _spectrum_sigma(y, patch, most)
    return sigma is not None and sigma < ONE_NOISE


#: Where a colour picture's patches' spectrum reads less noise than this (a thousandth of a
#: grey level: none, up to round-off; before the corrections for clipping and exact ties,
#: which lower a clean flat-colour drawing's reading to 0 as well), :func:`estimate_sigma`
#: reads it in the channels' mean. A black-and-white photo saved in colour with a coloured
#: mark or frame, or a tint (its channels not all equal, so not read as grey), holds one
#: noise in its three channels, which leaves two thirds of the colour patches' dimensions
#: without noise: the tail read 0 (or 10^-6 grey levels, from round-off) for sigma = 25,
#: and denoising gave it back as it was. The channels' mean holds that noise whole.
ONE_NOISE = 1e-3 / 255


def blocks(y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The four pixels of every 2x2 block of ``y`` ``(..., H, W)``, as four ``(..., H // 2,
    W // 2)`` views (top left, top right, bottom left, bottom right; an odd last row or
    column left out): Haar's finest details are made of them."""
    y = y[..., :y.shape[-2] // 2 * 2, :y.shape[-1] // 2 * 2]
    return y[..., 0::2, 0::2], y[..., 0::2, 1::2], y[..., 1::2, 0::2], y[..., 1::2, 1::2]


def measurable(h: int, w: int, patch: int = 8) -> bool:
    """Whether :func:`estimate_sigma` can read the noise of an ``h`` x ``w`` grey picture (or
    of a colour one's channels' mean, read where its colour patches read none): more patches
    than a patch has dimensions. In a smaller one (a square one under 16 px) the patches'
    covariance is singular, and its tail reads the noise low, down to 0."""
    return h >= patch and w >= patch and (h - patch + 1) * (w - patch + 1) > patch ** 2


#: patches a band of :func:`_patch_covariance` unfolds at once
BAND_PATCHES = 1 << 14


def _patch_covariance(y: torch.Tensor, patch: int, stride: int) -> torch.Tensor:
    """The covariance of ``y``'s ``patch``-sided patches on a grid of ``stride``, summed over
    bands of about :data:`BAND_PATCHES` of them, in two passes (their mean, then the centred
    products): unfolded at once, the 2^18 patches of a colour picture and their centred copy
    took 0.8 GB beside a run the memory estimate had planned without them.

    Shape:
        y: ``(1, C, H, W)`` float64; the result ``(C p^2, C p^2)``.
    """
    rows = list(range(0, y.shape[-2] - patch + 1, stride))
    per_row = len(range(0, y.shape[-1] - patch + 1, stride))
    step = max(1, BAND_PATCHES // per_row)

    def bands() -> Iterator[torch.Tensor]:
        for i in range(0, len(rows), step):
            top, last = rows[i], rows[min(i + step, len(rows)) - 1]
            yield F.unfold(y[..., top:last + patch, :], patch, stride=stride)[0]

    count = len(rows) * per_row
    mean = sum(band.sum(1, keepdim=True) for band in bands()) / count
    products = sum(c @ c.T for c in (band - mean for band in bands()))
    return products / count


#: patches per dimension of a patch (C x side^2) that :func:`estimate_sigma` wants
PATCHES_PER_DIMENSION = 32
#: the smallest side it shrinks a patch to
SMALLEST_PATCH = 3


def _patch_side(channels: int, h: int, w: int, largest: int) -> int:
    """For a colour picture, the largest side up to ``largest`` whose patches are
    :data:`PATCHES_PER_DIMENSION` times as many as their dimensions in an ``h`` x ``w``
    picture (else the smallest); ``largest`` for a grey one."""
    if channels == 1:
        return largest
    for side in range(largest, SMALLEST_PATCH, -1):
        if channels * side ** 2 * PATCHES_PER_DIMENSION <= (h - side + 1) * (w - side + 1):
            return side
    return min(SMALLEST_PATCH, largest)


def _clipped_variance(mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """The variance of ``clip(mean + sigma Z, 0, 1)``, Z standard normal (a censored normal:
    the mass past each bound sits on it)."""
    normal = torch.distributions.Normal(mean.new_zeros(()), 1.0)
    a, b = -mean / sigma, (1 - mean) / sigma
    cdf_a, cdf_b = normal.cdf(a), normal.cdf(b)
    pdf_a, pdf_b = normal.log_prob(a).exp(), normal.log_prob(b).exp()
    inside = cdf_b - cdf_a
    first = (1 - cdf_b) + mean * inside + sigma * (pdf_a - pdf_b)
    second = ((1 - cdf_b) + mean ** 2 * inside + 2 * mean * sigma * (pdf_a - pdf_b)
              + sigma ** 2 * (inside + a * pdf_a - b * pdf_b))
    return (second - first ** 2).clamp(min=0)


def _unclipped(y: torch.Tensor, clipped: float, most: int) -> float:
    """The sigma of the noise added before ``y`` was clipped to [0, 1], from the clipped
    noise's ``clipped``: the sigma whose clipped variance, averaged over the pixels (each
    about its 7x7 neighbourhood's mean), is ``clipped^2`` (Foi, "Clipped noisy images:
    heteroskedastic modeling and practical denoising", Signal Processing 2009). An input
    with no pixel at 0 or 1 was not clipped: ``clipped`` as it is. Measured on the 54
    benchmark crops: at sigma = 50 the clipped noise reads 45.0 on average, this 48.0."""
    if clipped < MIN_SIGMA or not bool(((y <= 0) | (y >= 1)).any()):
        return clipped
    means = F.avg_pool2d(y.detach().to("cpu", torch.float64), 7, stride=1, padding=3,
                         count_include_pad=False)  # (on the CPU: MPS has no float64)
    means = means.flatten()[::max(1, math.ceil(means.numel() / most))].clamp(0, 1)
    low, high = clipped, 4 * clipped
    for _ in range(30):  # bisection: the clipped variance grows with sigma
        mid = (low + high) / 2
        low, high = ((mid, high) if _clipped_variance(means, mid).mean() < clipped ** 2
                     else (low, mid))
    return (low + high) / 2


#: the chance that :func:`_consistent` lowers the reading of noise that is there (each test)
TIES_FALSE_ALARM = 1e-6
#: half an 8-bit grey level: a rounded value reads 0 from below it
HALF_LEVEL = 0.5 / 255


def _most_ties(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The most of a picture's pixels that noise of ``sigma`` (each element) leaves exactly
    at 0 or 1, and of its pairs of neighbours exactly equal, whatever the clean values in
    [0, 1], the picture clipped and rounded to 8 bits (Foi 2009's clipped normal, rounded): a
    clean x reads 0 with probability p0 = Phi((q - x) / sigma) <= Phi(q / sigma), q half a
    grey level, 1 with p1 = Phi((x - 1 + q) / sigma), an inner level at most c = 2 Phi(q /
    sigma) - 1; two pixels are equal with probability sum_v P_i(v) P_j(v) <= max_x sum_v
    P_x(v)^2 (Cauchy-Schwarz) <= p0^2 + p1^2 + c (1 - p0 - p1), convex in (p0, p1): at most
    its largest at the corners of their ranges over x."""
    normal = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), 1.0)
    edge, middle, far = (normal.cdf(at / sigma) for at in
                         (HALF_LEVEL, HALF_LEVEL - 0.5, HALF_LEVEL - 1))
    cell = 2 * edge - 1
    ties = torch.stack([p0 ** 2 + p1 ** 2 + cell * (1 - p0 - p1)
                        for p0 in (middle, edge) for p1 in (far, middle)]).amax(0)
    return edge + far, ties


#: the side of the tiles :func:`_consistent` tests on their own
TIES_TILE = 32


def _tile_sums(marks: torch.Tensor) -> torch.Tensor:
    """The sums of ``marks`` ``(H, W)`` over each :data:`TIES_TILE`-sided tile (tiles every
    :data:`TIES_TILE` pixels and one flush with the far edges: every pixel in one; a picture
    smaller than a tile is one tile)."""
    h, w = marks.shape
    rows, cols = min(TIES_TILE, h), min(TIES_TILE, w)
    table = F.pad(marks.double().cumsum(0).cumsum(1), (1, 0, 1, 0))
    top = torch.tensor(sorted({*range(0, h - rows + 1, rows), h - rows}))[:, None]
    left = torch.tensor(sorted({*range(0, w - cols + 1, cols), w - cols}))[None, :]
    return (table[top + rows, left + cols] - table[top, left + cols]
            - table[top + rows, left] + table[top, left]).flatten()


def _consistent(y: torch.Tensor, sigma: float) -> float:
    """``sigma``, or less where every :data:`TIES_TILE`-sided tile of the picture ``(1, C,
    H, W)`` has more pixels at exactly 0 or 1, or more exactly equal neighbours (disjoint
    pairs along the rows), than noise of it could leave (:func:`_most_ties`, less
    Hoeffding's margin for :data:`TIES_FALSE_ALARM`): the largest level any tile allows, 0
    under :data:`MIN_SIGMA`. Noise leaves a pixel at a bound with probability 1/2 at most and
    two neighbours equal with about 1/4 at most; a clean picture's flat runs, which read as
    noise in the patches' spectrum where the picture is few grey levels (every pixel a bound
    or a tie), leave much more. Any one tile, so that a noisy photo on a clean page or frame
    still reads its noise where its own tiles are: with a quarter of the tiles, a 64 px one
    on a 160 px page read 0 and came back from denoising untouched, where one tile of dense
    anti-aliased text on a clean page lets it read 4.9 (1.7 with a quarter).

    What the model cannot tell from clean (the reading falls): a noisy picture whose clean
    values lie past black or white, crushed or overexposed in every tile (more than half
    its pixels at the bound: F16 at 2x exposure with sigma = 25 reads 2.9, 15.3 unchecked,
    ``benchmarks/noise_estimate.py --clean``); noise posterised to a few levels or enlarged
    by repeating pixels (many equal pairs); and noise over about 160 grey levels, which the
    patches read low, at a level whose ties the picture then contradicts
    (benchmarks/README.md, "A clean picture that is no photo").
    The marks are counted per pixel over the channels."""
    if sigma <= 0 or min(y.shape[-2:]) < 2:
        return sigma
    y = y.detach()[0].cpu()
    channels, h, w = y.shape
    even = w // 2 * 2
    equal, pairs = torch.zeros(h, w, dtype=torch.int16), torch.zeros(h, w, dtype=torch.int16)
    equal[:, 0:even:2] = (y[..., 0:even:2] == y[..., 1:even:2]).sum(0)  # at each pair's left
    pairs[:, 0:even:2] = channels
    bound = ((y <= 0) | (y >= 1)).sum(0)
    seen = []
    for marks, count in ((bound, torch.full((h, w), channels)), (equal, pairs)):
        count = _tile_sums(count)
        seen.append(_tile_sums(marks) / count
                    - (math.log(1 / TIES_FALSE_ALARM) / (2 * count)).sqrt())

    def fitting(level: torch.Tensor) -> torch.Tensor:  # each tile: could noise of it be there?
        most_bound, most_equal = _most_ties(level)
        return (seen[0] <= most_bound) & (seen[1] <= most_equal)

    def allowed(level: float) -> bool:  # by some tile
        return bool(fitting(torch.tensor(level, dtype=torch.float64)).any())

    if allowed(sigma):
        return sigma
    # the largest level any tile allows, by bisection (each tile's ties' bounds fall as
    # sigma grows, to ~66 grey levels)
    low, high = 0.0, sigma
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if allowed(mid) else (low, mid)
    return low if low >= MIN_SIGMA else 0.0


class StopRule:
    """Interface. ``update`` is called once per step, after the optimiser's step."""

    name = "base"
    #: the rule's signal after the last update (a 0-d tensor), recorded in the fit's history
    variance: torch.Tensor | None = None

    def start(self, observation: torch.Tensor, noise_sigma: float | None = None) -> None:
        """Called once before the first step with the fit's observation ``y`` and its noise
        level when the task knows it ([0, 1] units; None: unknown)."""

    def update(self, step: int, output: torch.Tensor, estimate: torch.Tensor) -> bool:
        """Return True to stop after ``step``.

        Args:
            output: this step's raw network output ``(1, C, H, W)``.
            estimate: the image the fit would return now (the output average).
        """
        raise NotImplementedError

    @property
    def chosen(self) -> tuple[int, torch.Tensor] | None:
        """``(step, image)`` the rule selected, or None to return the current estimate."""
        return None

    @property
    def candidate(self) -> torch.Tensor | None:
        """The image the rule would keep if it chose now (None: the fit's estimate)."""
        return None

    @property
    def noise_level(self) -> float | None:
        """The noise level the rule works with ([0, 1] units; for the record), None when it
        uses none."""
        return None

    def memory(self, shape: tuple[int, ...]) -> int:
        """Bytes the rule keeps for a fit whose outputs have ``shape`` (for the estimate)."""
        return 0


class FixedBudget(StopRule):
    """Never stop early: run the whole ``optim.iters`` budget (the paper's protocol)."""

    name = "fixed"

    def update(self, step: int, output: torch.Tensor, estimate: torch.Tensor) -> bool:
        return False


#: the smallest noise level the noise floor acts on (half a grey level of an 8-bit image)
MIN_SIGMA = 0.5 / 255


#: the longest running-variance window: it holds that many outputs in memory (10^11 ran out
#: of memory with the advice "a smaller image")
MAX_WINDOW = 10000


class VarianceStop(StopRule):
    """ES-WMV: stop at the minimum of the outputs' running variance, without ground truth.

    Wang, Li, Zhuang, Chen, Liang, Sun, "Early Stopping for Deep Image Prior", TMLR 2023
    (arXiv 2112.06074), Alg. 1. Over the last ``window`` outputs x_i,

        VAR_t = (1/W) Σ_i ‖x_i − x̄‖² / N,

    which is U-shaped over the fit like the PSNR curve upside down: it falls while the network
    learns the image and rises once it starts to fit the corruption. The rule remembers the
    image at each new minimum of VAR_t and stops when ``patience`` steps bring no new minimum.

    The variance is kept with a sliding-window Welford update (O(N) per step, a ring buffer of
    ``window`` frames written once each) and recomputed exactly every ``window`` steps to drop
    float32 drift. Frames are stored in float16 (their rounding error, ~1e-4, is far below the
    step-to-step changes the variance measures; the buffer costs 2·W·N bytes) and the running
    sums use the rounded frames, so adding and removing a frame cancel exactly. The minimum
    is tracked on the device with ``torch.where``, so the rule reads a value back to the host
    only every ``check_every`` steps, not every step.

    Args:
        window: W, outputs in the variance (ES-WMV: 100; dip's measured default: 200).
        patience: P, steps without a new minimum before stopping (ES-WMV: 1000; dip: 200).
        patience_ratio: if > 0, the patience grows with the minimum's step t*: stop after
            ``max(patience, patience_ratio * t*)`` steps without a new minimum, so a run whose
            best moment comes late also waits proportionally longer for a better one.
        tolerance: a step whose variance is within this fraction of the minimum so far counts
            as the minimum too, so on a flat valley the rule keeps the LATEST such step (the
            network is still improving there) instead of the first.
        returns: the image to keep at the minimum: ``output`` (the raw iterate, as the paper),
            ``average`` (the fit's output average at that step), or ``window`` (the mean of the
            W outputs in the window).
        check_every: how often to read the minimum's step back to decide whether to stop.
        noise_floor: denoising only (the observation is the noisy image itself). If > 0, a
            step counts only once the estimate's residual to the noisy image is down to the
            noise: ``mean((x̂ − y)²) <= noise_floor · σ²`` (Morozov's discrepancy principle).
            An estimate further from y than the noise has not yet taken in the image, so a
            variance minimum before that point is the network's slow start, not the moment to
            stop (measured: benchmarks/README.md, "noise floor"). Until a step qualifies the
            rule neither chooses nor stops; if none does within the budget, the fit returns
            its output average at the budget, as a fixed-budget run. A σ under half a grey
            level (:data:`MIN_SIGMA`) turns the floor off.
        sigma: the noise's standard deviation (in [0, 1] units) for the floor; 0: estimated
            from the observation (:func:`estimate_sigma`).
    """

    name = "auto"
    RETURNS = ("output", "average", "window")

    def __init__(self, window: int = 200, patience: int = 200, returns: str = "window",
                 patience_ratio: float = 0.25, tolerance: float = 0.05,
                 check_every: int = 10, noise_floor: float = 0.0, sigma: float = 0.0) -> None:
        if not 2 <= window <= MAX_WINDOW:  # it holds `window` outputs in memory
            raise ConfigError(f"config key 'stop.window' must be from 2 to {MAX_WINDOW}, got "
                              f"{window}")
        if patience < 1:
            raise ConfigError(f"config key 'stop.patience' must be >= 1, got {patience}")
        if returns not in self.RETURNS:
            raise ConfigError(f"config key 'stop.returns' must be one of "
                              f"{', '.join(self.RETURNS)}, got {returns!r}")
        if patience_ratio < 0:
            raise ConfigError(f"config key 'stop.patience_ratio' must be >= 0, got "
                              f"{patience_ratio}")
        if tolerance < 0:
            raise ConfigError(f"config key 'stop.tolerance' must be >= 0, got {tolerance}")
        if noise_floor < 0:
            raise ConfigError(f"config key 'stop.noise_floor' must be >= 0, got {noise_floor}")
        if sigma < 0:
            raise ConfigError(f"config key 'stop.sigma' must be >= 0 (0: estimate it), got "
                              f"{sigma * 255:g}")
        self.noise_floor, self.sigma = noise_floor, sigma
        self.observation: torch.Tensor | None = None
        self._residual: torch.Tensor | None = None  # (estimate - observation)², in place
        self.floor_mse = 0.0
        self.window, self.patience, self.returns = window, patience, returns
        self.patience_ratio, self.tolerance = patience_ratio, tolerance
        self.check_every = max(1, check_every)
        self.count = 0
        self.frames: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None
        self.m2: torch.Tensor | None = None  # Σ_i ‖x_i − x̄‖² over the window (a 0-d tensor)
        self.best_var: torch.Tensor | None = None
        self.best_step: torch.Tensor | None = None
        self.best_image: torch.Tensor | None = None
        #: the latest VAR_t (None until the window is full)
        self.variance = None
        self._candidate: torch.Tensor | None = None

    def start(self, observation: torch.Tensor, noise_sigma: float | None = None) -> None:
        if self.noise_floor > 0:
            if not self.sigma:  # given in the config first, then known by the task
                self.sigma = noise_sigma if noise_sigma else estimate_sigma(observation)
            # Below half a grey level there is no noise to speak of (a flat graphic's median
            # coefficient is exactly 0): no floor, or no step would ever count.
            if self.sigma < MIN_SIGMA:
                return
            self.observation = observation.detach()
            self.floor_mse = self.noise_floor * self.sigma ** 2
            self._residual = torch.empty_like(self.observation)

    def _allocate(self, x: torch.Tensor) -> None:
        self.frames = torch.empty((self.window, *x.shape), dtype=torch.float16, device=x.device)
        self.mean = torch.zeros_like(x)
        self.m2 = torch.zeros((), dtype=x.dtype, device=x.device)
        self.best_var = torch.full((), float("inf"), dtype=x.dtype, device=x.device)
        self.best_step = torch.full((), -1, dtype=torch.long, device=x.device)  # -1: none yet
        self.best_image = torch.zeros_like(x)

    @torch.no_grad()
    def update(self, step: int, output: torch.Tensor, estimate: torch.Tensor) -> bool:
        stored = output.detach().to(torch.float16)
        x = stored.float()  # the rounded frame: what is added now is what is removed later
        if self.frames is None:
            self._allocate(x)
        slot = self.count % self.window
        if self.count < self.window:  # filling the window: plain Welford
            delta = x - self.mean
            self.mean.add_(delta, alpha=1 / (self.count + 1))
            self.m2 += (delta * (x - self.mean)).sum()
        else:  # sliding: x replaces the oldest frame, old = x - d
            d = x - self.frames[slot].float()
            # M2 += Σ d·(x − mean' + old − mean) with mean' = mean + d/W
            self.m2 += (d * (2 * (x - self.mean) - d * (1 + 1 / self.window))).sum()
            self.mean.add_(d, alpha=1 / self.window)
        self.frames[slot].copy_(stored)
        self.count += 1
        if self.count % self.window == 0:
            self._recompute()
        if self.count < self.window:
            return False

        self.variance = self.m2.clamp(min=0) / (self.window * x.numel())
        candidate = {"output": x, "average": estimate, "window": self.mean}[self.returns]
        self._candidate = candidate
        # All on the device and in place: no read-back, no new image-sized tensor per step.
        if self.observation is None:
            torch.minimum(self.variance, self.best_var, out=self.best_var)
            near_min = self.variance <= self.best_var * (1 + self.tolerance)
        else:  # only steps whose estimate is within the noise floor of y count
            residual = torch.sub(estimate, self.observation, out=self._residual).square_()
            eligible = residual.mean() <= self.floor_mse
            torch.where(eligible, torch.minimum(self.variance, self.best_var), self.best_var,
                        out=self.best_var)
            near_min = eligible & (self.variance <= self.best_var * (1 + self.tolerance))
        self.best_step.masked_fill_(near_min, step)
        torch.where(near_min, candidate, self.best_image, out=self.best_image)
        if step % self.check_every:
            return False
        best = int(self.best_step)
        return best >= 0 and step - best >= self.patience_after(best)

    def _recompute(self) -> None:
        """Exact mean and M2 from the stored frames, one frame at a time (no W×N float32
        temporary): removes the drift of thousands of incremental updates."""
        self.mean.zero_()
        for frame in self.frames:
            self.mean += frame.float()
        self.mean /= self.window
        m2 = torch.zeros_like(self.m2)
        for frame in self.frames:
            m2 += ((frame.float() - self.mean) ** 2).sum()
        self.m2 = m2

    def patience_after(self, best_step: int) -> int:
        """Steps to wait for a new minimum after one found at ``best_step``."""
        return max(self.patience, int(self.patience_ratio * best_step))

    @property
    def chosen(self) -> tuple[int, torch.Tensor] | None:
        if self.best_step is None or self.count < self.window:
            return None
        best = int(self.best_step)
        return None if best < 0 else (best, self.best_image)

    @property
    def candidate(self) -> torch.Tensor | None:
        return self._candidate

    @property
    def noise_level(self) -> float | None:
        return self.sigma if self.noise_floor else None

    def memory(self, shape: tuple[int, ...]) -> int:
        # float16 frames, the running mean, the image at the minimum, the floor's residual
        numel = math.prod(shape)
        return self.window * 2 * numel + 3 * 4 * numel


class AutoIfNoisy(VarianceStop):
    """The automatic stop (:class:`VarianceStop`) where the observation's noise reads at
    least ``least`` ([0, 1] units), the whole budget (:class:`FixedBudget`) where it reads
    less: read once, at :meth:`start`, from the task's noise level or :func:`estimate_sigma`.

    Deblurring's fast preset: at the protocol's noise (σ = √2) the fit still improves at its
    2500-step budget and the variance flattens long before, so the whole budget runs; at σ = 5
    and 10 the fixed budget learnt the noise and ended under the blurred input (kodim03's
    128 px crop at σ = 10: 24.98 dB against the input's 25.76), and the automatic stop keeps
    the peak (29.48; benchmarks/README.md, "degradations.py"). The estimate
    is close on a blurred picture (its texture is blurred away): 1.39-1.46 at σ = √2, 4.9-5.1
    at 5, 9.7-10.1 at 10 on the 18 benchmark crops each.
    """

    def __init__(self, least: float, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.least, self.on, self.read = least, True, None

    def start(self, observation: torch.Tensor, noise_sigma: float | None = None) -> None:
        self.read = noise_sigma if noise_sigma else estimate_sigma(observation)
        self.on = self.read >= self.least
        if self.on:  # (the floor, where there is one, takes the level read: not read twice)
            super().start(observation, self.read)

    def update(self, step: int, output: torch.Tensor, estimate: torch.Tensor) -> bool:
        return self.on and super().update(step, output, estimate)

    @property
    def noise_level(self) -> float | None:
        return self.read


#: the most :func:`noise_budget` grows a budget (the time a user waits at most doubles)
MAX_BUDGET_GROWTH = 2.0


def noise_budget(iters: int, sigma: float, budget_sigma: float) -> int:
    """The automatic stop's step budget for an input whose noise is ``sigma``, when ``iters``
    is the budget for noise of ``budget_sigma`` (both in [0, 1] units; ``budget_sigma`` 0:
    ``iters`` for every input).

    The less noise, the later the fit's best moment: with the fast preset's 1200 steps (chosen
    at σ = 25) 15 of the 18 σ = 15 crops ran to the end still improving, and 2400 steps gave
    +0.76 dB on the centre crops, +0.41 on the corners (benchmarks/README.md,
    "degradations.py"), while σ = 50 fits stop after 600–900. The budget grows as the noise's
    power falls, ``(budget_sigma / sigma)²``, at most :data:`MAX_BUDGET_GROWTH` times: σ = 15
    gets the doubled budget measured, σ ≥ ``budget_sigma`` the budget as it is. A σ under
    :data:`MIN_SIGMA` (no noise to speak of) gets the most."""
    if budget_sigma <= 0 or sigma >= budget_sigma:
        return iters
    growth = (MAX_BUDGET_GROWTH if sigma < MIN_SIGMA
              else min(MAX_BUDGET_GROWTH, (budget_sigma / sigma) ** 2))
    return round(iters * growth)


def _variance_settings(s: Any) -> dict[str, Any]:
    """:class:`VarianceStop`'s arguments from the ``stop`` settings (it checks most)."""
    if s.budget_sigma < 0 or 0 < s.budget_sigma < 1:
        raise ConfigError(f"config key 'stop.budget_sigma' is in 0-255 pixel units, >= 1 "
                          f"(0: off), got {s.budget_sigma}")
    return dict(window=s.window, patience=s.patience, returns=s.returns,
                patience_ratio=s.patience_ratio, tolerance=s.tolerance,
                noise_floor=s.noise_floor, sigma=s.sigma / 255)


def _auto_if_noisy(s: Any) -> AutoIfNoisy:
    if not 0 <= s.noisy_sigma <= 255:
        raise ConfigError(f"config key 'stop.noisy_sigma' is in 0-255 pixel units, from 0 to "
                          f"255, got {s.noisy_sigma}")
    return AutoIfNoisy(s.noisy_sigma / 255, **_variance_settings(s))


#: name -> factory taking the ``stop`` settings (:class:`dip.config.StopConfig` or anything
#: with the same attributes); each rule checks the settings it uses (and build_stop_rule all)
STOP_RULES: dict[str, Callable[[Any], StopRule]] = {
    "auto": lambda s: VarianceStop(**_variance_settings(s)),
    "fixed": lambda s: FixedBudget(),
    "auto_if_noisy": _auto_if_noisy,
}

_VARIANCE = ("window", "patience", "patience_ratio", "tolerance", "returns", "noise_floor")
#: the ``stop.*`` keys each rule reads (besides ``rule``; ``sigma`` is read wherever the run
#: uses a noise level: :func:`dip.run.noise_level`); ``budget_sigma`` only by ``auto``
#: (:func:`noise_budget`)
READS: dict[str, tuple[str, ...]] = {
    "auto": (*_VARIANCE, "budget_sigma"),
    "fixed": (),
    "auto_if_noisy": (*_VARIANCE, "noisy_sigma"),
}


def unread_settings(rule: str, given: Iterable[str]) -> list[str]:
    """The ``stop.*`` keys among ``given`` (dotted) that ``rule`` does not read, ``stop.sigma``
    and ``stop.rule`` aside: a setting asked for and silently ignored misleads."""
    reads = {f"stop.{key}" for key in (*READS[rule], "rule", "sigma")}
    return sorted(key for key in given if key.startswith("stop.") and key not in reads)


def build_stop_rule(settings: Any) -> StopRule:
    """Build the rule named by ``settings.rule`` from the other ``stop.*`` settings."""
    try:
        factory = STOP_RULES[settings.rule]
    except KeyError:
        raise ConfigError(f"unknown stop.rule {settings.rule!r}; known: "
                          f"{', '.join(STOP_RULES)}") from None
    # checked whatever the rule: SURE and the Wiener filter take the noise level from it too
    # (1e6 under the fixed budget made an all-black image with exit 0; 1e300 overflowed the
    # fit with a traceback)
    if not (settings.sigma == 0 or 1 <= settings.sigma <= 255):
        raise ConfigError(f"config key 'stop.sigma' is in 0-255 pixel units (25 for noise of "
                          f"standard deviation 25 grey levels; 0: estimate it), got "
                          f"{settings.sigma}")
    # every stop.* key checked whichever rule reads it: a config file's stop.window=1 or
    # noisy_sigma=-1 is a mistake under --stop fixed too, and would surface only on the day
    # the file met the rule that reads it
    _auto_if_noisy(settings)
    return factory(settings)
