"""Corruption operators ``A`` (one small ``nn.Module`` each) and the synthesis of test inputs.

Deep Image Prior fits ``min_θ ‖A(f_θ(z)) − y‖²``: ``forward`` of each operator here is ``A``,
the physics that turned the clean image into the observation ``y``. Masks and kernels are
buffers, so ``.to(device)`` moves them with the module.

``window(top, left, height, width)`` gives the operator for a window of the result (a tile,
:mod:`dip.tiles`): the same module where the physics is the same everywhere, the window's
part of a mask where it is not.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from dip.errors import InputError


class Identity(nn.Module):
    """Denoising: the observation is the image itself (plus noise the prior must not fit).

    Shape:
        - Input: ``(N, C, H, W)``
        - Output: ``(N, C, H, W)``
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def window(self, top: int, left: int, height: int, width: int) -> nn.Module:
        return self


class Mask(nn.Module):
    """Inpainting: keep the known pixels, zero the rest.

    Args:
        known: ``(1, 1, H, W)`` or ``(1, C, H, W)`` tensor (or array), 1 where the pixel is
            known, 0 where it is missing (to be filled); values in between weigh a pixel.

    Shape:
        - Input: ``(N, C, H, W)``
        - Output: ``(N, C, H, W)``

    Raises:
        InputError: ``known`` is not ``(1, C, H, W)``, or holds values outside [0, 1] (an
            8-bit mask of 0 and 255 multiplied the picture by 255 where it is known).
    """

    known: torch.Tensor

    def __init__(self, known: torch.Tensor) -> None:
        super().__init__()
        known = torch.as_tensor(known)
        if known.dim() != 4 or known.shape[0] != 1:
            raise InputError(f"a mask must have shape (1, C, H, W), got {tuple(known.shape)}")
        known = known.float()
        if known.numel() and not bool(((known >= 0) & (known <= 1)).all()):
            raise InputError(f"a mask holds 1 where a pixel is known and 0 where it is "
                             f"missing; got values from {known.min().item():g} to "
                             f"{known.max().item():g} (an 8-bit mask: divide it by 255)")
        self.register_buffer("known", known)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.known

    def window(self, top: int, left: int, height: int, width: int) -> Mask:
        return Mask(self.known[..., top:top + height, left:left + width])


def _phase_half_offsets(taps: int, factor: int) -> torch.Tensor:
    """Tap positions, in low-resolution pixels, of a ``taps``-wide kernel centred on the
    middle of a ``factor x factor`` block (the half-pixel phase 0.5 of the paper's kernels and
    of Pillow's resampling)."""
    return (torch.arange(taps, dtype=torch.float64) - (taps - 1) / 2) / factor


def _separable(lobe: torch.Tensor) -> torch.Tensor:
    kernel = torch.outer(lobe, lobe)
    return (kernel / kernel.sum()).float()


def lanczos_kernel(factor: int, support: int = 2) -> torch.Tensor:
    """The paper's "lanczos2" anti-aliasing kernel for downsampling by ``factor``.

    Separable Lanczos window with ``support`` lobes, stretched by ``factor``, sampled at the
    half-pixel phase 0.5: for support 2 the paper's kernel of width ``4*factor + 1`` at phase
    0.5, which has ``4*factor`` taps per axis. Normalised to sum to 1.

    Shape:
        - Output: ``(2*support*factor, 2*support*factor)``
    """
    offsets = _phase_half_offsets(2 * support * factor, factor)
    return _separable(torch.special.sinc(offsets) * torch.special.sinc(offsets / support))


def bicubic_kernel(factor: int) -> torch.Tensor:
    """Pillow's (and MATLAB's ``imresize``'s) antialiased bicubic downsampling by ``factor``:
    Keys' cubic convolution with ``a = -0.5`` stretched by the factor -- how most small
    pictures are made.

    Shape:
        - Output: ``(4*factor, 4*factor)``
    """
    x = _phase_half_offsets(4 * factor, factor).abs()
    a = -0.5
    lobe = torch.where(x <= 1, (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1,
                       torch.where(x < 2, a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a,
                                   torch.zeros_like(x)))
    return _separable(lobe)


def area_kernel(factor: int) -> torch.Tensor:
    """Area (box) downsampling: each small pixel the mean of its ``factor x factor`` block
    (Pillow's BOX, OpenCV's INTER_AREA).

    Shape:
        - Output: ``(factor, factor)``
    """
    return torch.full((factor, factor), 1.0 / factor ** 2, dtype=torch.float32)


#: the widest kernel side accepted, blur or downsampling: a typo such as box:900 must not
#: run for hours, nor box:100000 try to allocate 40 GB
MAX_KERNEL = 255


def _check_side(what: str, given: str, side: int | None) -> None:
    """Refuse a kernel ``side`` pixels wide (None: too wide to count) over
    :data:`MAX_KERNEL`, before it is built."""
    if side is None or side > MAX_KERNEL:
        wide = (f"is {side} pixels wide, over" if side is not None and side < 10 ** 6
                else "is wider than")
        raise InputError(f"{what} of {given} {wide} {MAX_KERNEL} pixels")


def gaussian_downsample_kernel(factor: int, sigma: float) -> torch.Tensor:
    """A Gaussian blur of ``sigma`` high-resolution pixels, then one pixel per block (at the
    block's centre): the blur-and-decimate degradation of much of the SR literature.

    Shape:
        - Output: ``(T, T)``, ``T = factor + 2 * ceil(3 * sigma)``
    """
    if not (math.isfinite(sigma) and sigma > 0):
        raise InputError(f"a Gaussian downsampling kernel needs a finite sigma > 0, got {sigma}")
    # a typo such as gaussian:120 must not make a 700-tap convolution (nor gaussian:1e308 an
    # infinite width): checked before the kernel is built
    taps = factor + 2 * math.ceil(3 * sigma) if sigma < MAX_KERNEL else None
    _check_side("a Gaussian downsampling kernel", f"sigma {sigma:g}", taps)
    # an even width when the factor is even: centred on the block's middle, as the others
    return gaussian_kernel(sigma, taps)


#: name -> kernel for a factor; ``gaussian:SIGMA`` (:func:`gaussian_downsample_kernel`) is the
#: one that takes a number
DOWNSAMPLE_KERNELS = {
    "lanczos": lanczos_kernel,
    # three lobes: Pillow's LANCZOS and ImageMagick's default Lanczos, not the paper's two
    "lanczos3": lambda factor: lanczos_kernel(factor, support=3),
    "bicubic": bicubic_kernel,
    "area": area_kernel,
}
#: what ``--kernel`` of super-resolution accepts, for messages and ``--help``
DOWNSAMPLE_USAGE = "lanczos, lanczos3, bicubic, area or gaussian:SIGMA"


def downsample_kernel(spec: str, factor: int) -> torch.Tensor:
    """``lanczos`` | ``lanczos3`` | ``bicubic`` | ``area`` | ``gaussian:SIGMA`` -> the kernel
    for ``factor``.

    Raises:
        InputError: an unknown name, or a Gaussian without a positive sigma.
    """
    name, colon, value = spec.partition(":")
    name = name.strip().lower()
    if name == "gaussian":
        if not colon:
            raise InputError("the Gaussian downsampling kernel needs its sigma: "
                             "gaussian:SIGMA, e.g. gaussian:1.2")
        try:
            sigma = float(value)
        except ValueError:
            raise InputError(f"cannot read the sigma of {spec[:40]!r}; write gaussian:SIGMA, "
                             f"e.g. gaussian:1.2") from None
        return gaussian_downsample_kernel(factor, sigma)
    if name not in DOWNSAMPLE_KERNELS or colon:
        raise InputError(f"unknown downsampling kernel {spec[:40]!r}; use {DOWNSAMPLE_USAGE}")
    return DOWNSAMPLE_KERNELS[name](factor)


class Downsample(nn.Module):
    """Super-resolution: anti-aliased downsampling by ``factor`` with a known kernel (default
    the paper's Lanczos; :func:`downsample_kernel` for the others).

    A fixed depthwise convolution with stride ``factor``, after replicate padding so that an
    ``(H, W)`` image becomes ``(H/factor, W/factor)`` exactly (the paper's ``preserve_size``).

    Args:
        factor: one of :attr:`FACTORS`.
        kernel: a spec for :func:`downsample_kernel` (``lanczos``, ``lanczos3``,
            ``bicubic``, ``area``, ``gaussian:SIGMA``).

    Shape:
        - Input: ``(N, C, H, W)`` with ``H`` and ``W`` multiples of ``factor``
        - Output: ``(N, C, H/factor, W/factor)``
    """

    kernel: torch.Tensor
    #: the factors the paper's kernel is defined and measured for
    FACTORS = (2, 4, 8)

    def __init__(self, factor: int, kernel: str = "lanczos") -> None:
        super().__init__()
        if factor not in self.FACTORS:
            raise InputError(f"superres factor must be one of "
                             f"{', '.join(map(str, self.FACTORS))}, got {factor}")
        self.factor = factor
        weights = downsample_kernel(kernel, factor)
        self.register_buffer("kernel", weights[None, None])
        # (taps - factor) / 2 on each side keeps the output at exactly H / factor (every
        # kernel's taps minus the factor is even).
        self.pad = (weights.shape[0] - factor) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if self.pad:
            x = F.pad(x, (self.pad,) * 4, mode="replicate")
        return F.conv2d(x, self.kernel.expand(c, 1, -1, -1), stride=self.factor, groups=c)

    def window(self, top: int, left: int, height: int, width: int) -> nn.Module:
        return self

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """The transpose of :meth:`forward`: ``<A x, y> = <x, A^T y>`` for every ``x``, ``y``.

        Shape:
            - Input: ``(N, C, h, w)``
            - Output: ``(N, C, h * factor, w * factor)``
        """
        c, p = y.shape[1], self.pad
        g = F.conv_transpose2d(y, self.kernel.expand(c, 1, -1, -1), stride=self.factor,
                               groups=c)
        if not p:
            return g
        # replicate padding copied each border row (then column) p times: its transpose adds
        # those copies back onto the border row (rows first, so corners land in the corner)
        rows = g[..., p:-p, :].clone()
        rows[..., 0, :] += g[..., :p, :].sum(-2)
        rows[..., -1, :] += g[..., -p:, :].sum(-2)
        x = rows[..., p:-p].clone()
        x[..., 0] += rows[..., :p].sum(-1)
        x[..., -1] += rows[..., -p:].sum(-1)
        return x


#: the root-mean-square rounding error of an 8-bit picture (uniform over a grey level), in
#: [0, 1] units: where the exact solve would amplify rounding, :func:`back_project` stops once
#: the correction meets the input this closely (the discrepancy principle)
ROUNDING = 1 / 255 / 12 ** 0.5

#: the most a back-projection's correction may exceed the residual it corrects (root mean
#: squares): where it gains, on real crops with kernels up to ``gaussian:3`` at x4, it is
#: 1.3-2.8 times; a solve that amplifies more fits the input's own error (noise, rounding)
#: into the result: 6-53 times on 4-5 px inputs with noise of 3 grey levels, whose few
#: unknowns the conjugate gradients solve exactly (corrections of 12-140 grey levels: a
#: checkerboard)
AMPLIFIES = 4.0


def back_project(op: Downsample, x: torch.Tensor, y: torch.Tensor, iters: int = 50,
                 tol: float = 1e-6, rounding: float = ROUNDING) -> torch.Tensor:
    """The image nearest to ``x`` that ``op`` maps to ``y``: ``x + A^T (A A^T)^-1 (y - A x)``.

    Super-resolution's counterpart of keeping inpainting's known pixels: the network's image
    after the fast preset's budget still misses the small input by 39-46 dB (PSNR of it shrunk
    again, 128 px crops; 26-36 where the stop ended the fit early), and the correction puts
    back exactly the part of the image the input determines (the low frequencies), leaving
    the network's detail above them. It is the minimum-norm step of iterative
    back-projection (Irani & Peleg, CVGIP 1991) solved at once, with conjugate gradients on
    ``A A^T`` (symmetric positive definite for a downsampling kernel; deepinv's
    ``LinearPhysics.A_dagger`` solves the same system).

    A blur wider than about half the factor (``gaussian:1.5`` at x2) makes ``A A^T`` ill
    conditioned: solved exactly, the input's rounding comes back amplified. There the
    conjugate gradients stop at the first step whose residual is within ``rounding`` (root
    mean square), as regularised solvers do (Hanke, "Conjugate gradient type methods for
    ill-posed problems", 1995): on a 128 px crop of kodim03 shrunk with ``gaussian:1.5`` at
    x2, its bicubic upscaling projected so gains 2.9 dB, and 2.2 after 200 steps towards the
    exact solution. A wider blur (from about three quarters of the factor, ``gaussian:1.6``
    at x2, depending on the picture) does not get that close in ``iters`` steps.

    Args:
        op: the downsampling operator of the fit.
        x: the estimate ``(N, C, H, W)``.
        y: the observation ``(N, C, H / factor, W / factor)``.
        iters: at most this many conjugate-gradient steps (a handful reach float32 rounding
            for the usual kernels: ``A A^T`` of a normalised kernel is well conditioned).
        tol: stop once the residual's norm is this fraction of the first one's.
        rounding: where ``iters`` steps do not reach ``tol``, the first step whose residual
            is this close to ``y`` is taken; where none is, ``x`` is returned as it is. So it
            is where the correction would be more than :data:`AMPLIFIES` times the residual.

    Shape:
        - Output: ``(N, C, H, W)``, not clamped (the caller clamps to [0, 1]).
    """
    r = y - op(x)
    u, p = torch.zeros_like(r), r.clone()
    rr = (r * r).sum()
    first = rr / r.numel()  # the residual's mean square, for the amplification's bound
    target, close = tol ** 2 * rr, rounding ** 2 * r.numel()
    within = u if rr <= close else None  # the first solution within the input's rounding
    for _ in range(iters):
        if rr <= target:
            break
        q = op(op.adjoint(p))
        a = rr / (p * q).sum()
        u, r = u + a * p, r - a * q
        rr, previous = (r * r).sum(), rr
        p = r + (rr / previous) * p
        if within is None and rr <= close:
            within = u
    if rr > target:
        u = within
    if u is None:
        return x
    correction = op.adjoint(u)
    if (correction * correction).mean() > AMPLIFIES ** 2 * first:
        return x  # the input's error, amplified (see AMPLIFIES)
    return x + correction


class Blur(nn.Module):
    """Deblurring: the image convolved with a known kernel, every channel alike.

    The image is extended by reflection at its borders, the edge pixel not repeated (torch's
    and NumPy's 'reflect', ``scipy.ndimage``'s 'mirror'; MATLAB's ``imfilter`` 'symmetric'
    repeats it, so an input blurred there differs at its borders; replication where the
    kernel is wider than the image) and convolved ('valid'), so the
    result has the input's size. ``dip corrupt --blur`` makes its inputs with this same module,
    so a synthetic input's border is blurred exactly as the operator assumes; a real photo's
    border was blurred with what lay beyond the frame, for which reflection is the usual
    stand-in.

    Args:
        kernel: ``(h, w)``, non-negative; normalised here to sum 1 and padded with zeros to
            odd sides (so it has a centre pixel).

    Shape:
        - Input: ``(N, C, H, W)``
        - Output: ``(N, C, H, W)``
    """

    kernel: torch.Tensor

    def __init__(self, kernel: torch.Tensor) -> None:
        super().__init__()
        kernel = torch.as_tensor(kernel, dtype=torch.float64)  # a sum of 1e38s stays finite
        if kernel.dim() != 2 or kernel.numel() == 0:
            raise InputError(f"a blur kernel is a 2-D array of at least one weight, got shape "
                             f"{tuple(kernel.shape)}")
        if not torch.isfinite(kernel).all() or (kernel < 0).any() or kernel.sum() <= 0:
            raise InputError("a blur kernel must be finite, non-negative and not all zero")
        kernel = (kernel / kernel.sum()).float()
        kh, kw = kernel.shape
        kernel = F.pad(kernel, (0, 1 - kw % 2, 0, 1 - kh % 2))
        # conv2d correlates: flipping makes it the convolution the kernel describes
        self.register_buffer("kernel", (kernel / kernel.sum()).flip(0, 1)[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, (kh, kw) = x.shape[1], self.kernel.shape[-2:]
        ph, pw = kh // 2, kw // 2
        mode = "reflect" if ph < x.shape[-2] and pw < x.shape[-1] else "replicate"
        x = F.pad(x, (pw, pw, ph, ph), mode=mode)
        return F.conv2d(x, self.kernel.expand(c, 1, -1, -1), groups=c)

    def window(self, top: int, left: int, height: int, width: int) -> nn.Module:
        # the same blur: within the kernel's reach of a tile's inner edges the observation
        # was blurred with the neighbours' pixels, not the tile's reflection, but leaving
        # those pixels out of the tile's fit did not pay (benchmarks/deblur_tiles.py): the
        # blend's ramps already weigh a tile down near its edges
        return self


def gaussian_kernel(sigma: float, size: int | None = None) -> torch.Tensor:
    """An isotropic Gaussian of standard deviation ``sigma`` pixels, ``size`` wide (default
    ``2 * ceil(3 sigma) + 1``, at most :data:`MAX_KERNEL`), normalised to sum 1."""
    if not (math.isfinite(sigma) and sigma > 0):
        raise InputError(f"a Gaussian blur needs a finite sigma > 0, got {sigma}")
    if size is not None and size < 1:
        raise InputError(f"a Gaussian blur needs a size >= 1, got {size}")
    size = size or (2 * math.ceil(3 * sigma) + 1 if sigma < MAX_KERNEL else None)
    _check_side("a Gaussian blur", f"sigma {sigma:g}", size)
    xs = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    # relative to the centre's weight: a sigma far under a pixel keeps the middle tap(s) at 1
    # where exp(-x^2 / 2 sigma^2) itself would be 0 everywhere (and the kernel 0 / 0)
    g = torch.exp(-(xs ** 2 - xs.abs().min() ** 2) / (2 * sigma ** 2))
    return (torch.outer(g, g) / torch.outer(g, g).sum()).float()


def box_kernel(size: int) -> torch.Tensor:
    """A ``size x size`` uniform (box) blur."""
    if size < 1:
        raise InputError(f"a box blur needs a size >= 1, got {size}")
    _check_side("a box blur", f"size {size}", size)
    return torch.full((size, size), 1.0 / size ** 2, dtype=torch.float32)


def motion_kernel(length: float, angle: float) -> torch.Tensor:
    """A straight motion blur ``length`` pixels long at ``angle`` degrees (counter-clockwise
    from the x axis): a segment through the kernel's centre whose ends are ``length`` - 1
    apart, each pixel weighted by 1 - its distance to the segment (an anti-aliased line), so
    ``motion:9,0`` is ``ones(1, 9) / 9``, as MATLAB's ``fspecial('motion', 9, 0)`` and the
    usual recipes make it. (It was drawn with bilinear weights, whose soft ends made a blur
    about 8.4 px long: a real 9 px blur deblurred with it barely got sharper.)"""
    if not (length >= 1 and math.isfinite(angle)):
        raise InputError(f"a motion blur needs a length >= 1 and a finite angle, got "
                         f"{length}, {angle}")
    half = (length - 1) / 2
    size = 2 * math.ceil(half) + 1 if length < 2 * MAX_KERNEL else None
    _check_side("a motion blur", f"length {length:g}", size)
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(offsets, offsets, indexing="ij")
    rad = math.radians(angle)
    ux, uy = math.cos(rad), -math.sin(rad)  # rows grow downwards
    along = (x * ux + y * uy).clamp(-half, half)  # the segment's nearest point
    distance = torch.hypot(x - along * ux, y - along * uy)
    kernel = (1 - distance).clamp(min=0)
    kernel[kernel < 1e-9] = 0  # (cos 90 is not quite 0: no dust beside a vertical line)
    return (kernel / kernel.sum()).float()


# --- synthesis of corrupted inputs (for `dip corrupt`, tests and benchmarks) -----------------

def add_noise(clean: torch.Tensor, sigma: float, generator: torch.Generator) -> torch.Tensor:
    """Additive white Gaussian noise of std ``sigma`` (in 0–255 units), clipped to [0, 1].

    Clipping matches what a saved 8-bit noisy image holds (the paper's noisy PNGs are clipped).

    Shape:
        - Input: ``(1, C, H, W)`` in [0, 1]
        - Output: same
    """
    if not (math.isfinite(sigma) and sigma >= 0):  # nan made an all-black image, exit 0
        raise InputError(f"noise sigma must be a number >= 0, got {sigma}")
    noise = torch.randn(clean.shape, generator=generator, device=clean.device,
                        dtype=clean.dtype)
    return (clean + noise * (sigma / 255.0)).clamp(0, 1)


#: the largest Poisson peak :func:`add_poisson` takes (photons at white)
MAX_PEAK = 1e9


def add_poisson(clean: torch.Tensor, peak: float, generator: torch.Generator) -> torch.Tensor:
    """Photon (shot) noise: Poisson counts of mean ``peak * clean`` divided by ``peak``, so
    white is ``peak`` photons on average; clipped to [0, 1] as a saved image holds it.

    Shape:
        - Input: ``(1, C, H, W)`` in [0, 1]
        - Output: same
    """
    # past about 1e18 torch's counts overflow (negative, without a word); at 1e9 photons the
    # noise is already under a 16-bit image's step
    if not 0 < peak <= MAX_PEAK:
        raise InputError(f"the Poisson peak (photons at white) must be > 0 and <= "
                         f"{MAX_PEAK:.0e}, got {peak}")
    counts = torch.poisson(clean.double() * peak, generator=generator)
    return (counts / peak).clamp(0, 1).to(clean.dtype)


def drop_pixels(clean: torch.Tensor, fraction: float,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove a random ``fraction`` of pixels (all channels of a pixel together).

    Returns ``(corrupted, known)`` where ``known`` is ``(1, 1, H, W)``, 1 = kept pixel.
    """
    if not 0 <= fraction < 1:
        raise InputError(f"{{arg:drop_pixels}} must be a fraction in [0, 1), got {fraction}")
    _, _, h, w = clean.shape
    known = (torch.rand((1, 1, h, w), generator=generator, device=clean.device,
                        dtype=torch.float32)
             >= fraction).to(clean.dtype)
    return clean * known, known


def valid_superres_size(h: int, w: int, factor: int) -> tuple[int, int]:
    """The largest size ``<= (h, w)`` divisible by ``factor`` (crop before downscaling)."""
    return h - h % factor, w - w % factor
