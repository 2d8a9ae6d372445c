"""Regularisation by denoising inside the fit: DeepRED (Mataev, Elad & Milanfar, "DeepRED:
Deep Image Prior Powered by RED", ICCV Workshops 2019).

RED (Romano, Elad & Milanfar, SIAM J. Imaging Sciences 2017) adds the explicit prior
``λ/2 · xᵀ(x − D(x))`` of a denoiser ``D`` to the paper's data term; DeepRED splits the image
into the network's output and a copy ``x`` and solves with ADMM, so that ``D`` is never
differentiated:

    1. θ ← one Adam step on  ‖A(f_θ(z)) − y‖² + μ‖f_θ(z) − (x − u)‖²        (their Eq. 7)
    2. x ← (λ·D(x) + μ·(f_θ(z) + u)) / (λ + μ)        (Eq. 11, the fixed-point update)
    3. u ← u + f_θ(z) − x

``D(x)`` is refreshed every few steps (their code: every 10) and used between refreshes. The
fit still returns its outputs' average; ``x`` only pulls the outputs towards what the denoiser
likes. DeepRED's denoisers were BM3D and NLM; dip's is non-local means (:func:`nlm`), in torch
on the fit's device, about 0.07 s for a 128 px colour image on one CPU thread.

Measured for x4 super-resolution: benchmarks/README.md, "degradations.py".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from dip.errors import ConfigError


def nlm(x: torch.Tensor, sigma: float, patch: int = 5, search: int = 11) -> torch.Tensor:
    """Non-local means (Buades, Coll & Morel, CVPR 2005): each pixel becomes the average of the
    pixels in a ``search`` × ``search`` window around it, weighted by how alike the
    ``patch`` × ``patch`` patches around the two are (all channels together), with the weight
    ``exp(−max(d − 2σ², 0) / h²)``, ``d`` the patches' mean squared difference and ``h = 0.8σ``
    (the form scikit-image's ``denoise_nl_means`` uses). Borders are reflected.

    On an image smaller than the window the window and the patch shrink to it (a reflected
    border must be narrower than the image).

    Shape:
        - Input: ``(1, C, H, W)`` in [0, 1]
        - Output: ``(1, C, H, W)``
    """
    _, _, h, w = x.shape
    reach, half = min(search // 2, h - 1, w - 1), min(patch // 2, h - 1, w - 1)
    search, patch = 2 * reach + 1, 2 * half + 1
    padded = F.pad(x, (reach,) * 4, mode="reflect")
    level = 2 * sigma ** 2
    cutoff = max((0.8 * sigma) ** 2, 1e-12)
    total = torch.zeros_like(x)
    weights = torch.zeros_like(x[:, :1])
    for dy in range(search):
        for dx in range(search):
            other = padded[..., dy:dy + h, dx:dx + w]
            distance = ((x - other) ** 2).mean(1, keepdim=True)
            distance = F.avg_pool2d(F.pad(distance, (half,) * 4, mode="reflect"), patch,
                                    stride=1)
            weight = torch.exp(-(distance - level).clamp(min=0) / cutoff)
            total += weight * other
            weights += weight
    return total / weights


@dataclass(frozen=True)
class Red:
    """DeepRED's settings (the config's ``red`` section).

    Attributes:
        weight: λ, the denoiser's pull (DeepRED's super-resolution code: 0.05); > 0.
        admm: μ, ADMM's penalty on ``f_θ(z) − x`` (theirs: 0.06); > 0.
        sigma: the noise level the denoiser is told, in [0, 1] units (theirs: 5 / 255).
        every: steps between two runs of the denoiser (theirs: 10).
    """

    weight: float
    admm: float = 0.06
    sigma: float = 5 / 255
    every: int = 10

    def penalty(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``μ · mean((out − target)²)``, what step 1 adds to the data term; ``target`` is
        ``x − u``."""
        return self.admm * torch.mean((out - target) ** 2)


class RedState:
    """One fit's ADMM variables: ``x``, ``u``, the denoised ``D(x)`` and ``x − u``, created from
    the fit's first output (``x`` starts there, ``u`` at 0). Every tensor is updated in place,
    so a captured CUDA graph that reads :attr:`target` stays valid, and the engine keeps
    :meth:`tensors` in its snapshots: a step the divergence guard undoes is undone here too."""

    def __init__(self, red: Red, first: torch.Tensor) -> None:
        self.red = red
        self.x = first.detach().clone()
        self.u = torch.zeros_like(self.x)
        self.denoised = self.x.clone()
        self.target = self.x.clone()

    def tensors(self) -> list[torch.Tensor]:
        return [self.x, self.u, self.denoised, self.target]

    @torch.no_grad()
    def update(self, out: torch.Tensor, step: int) -> None:
        """Steps 2 and 3 after the network's step ``step`` (1-based) gave ``out``."""
        r = self.red
        if step % r.every == 0:
            self.denoised.copy_(nlm(self.x, r.sigma))
        # x = (λ·D(x) + μ·(out + u)) / (λ + μ), in place: no tensor made at each step
        self.x.copy_(out).add_(self.u).mul_(r.admm).add_(self.denoised, alpha=r.weight)
        self.x.div_(r.weight + r.admm).clamp_(0, 1)
        self.u.add_(out).sub_(self.x)
        torch.sub(self.x, self.u, out=self.target)


#: the ``red.*`` keys' ranges: (lowest, whether the lowest itself is allowed, highest). A loss
#: weight or ADMM penalty past 1000 only overflows float32; sigma is in 0-255 units
RANGES = {"weight": (0, True, 1000), "admm": (0, False, 1000), "sigma": (0, False, 255),
          "every": (0, False, None)}


def check_red(section: Any) -> None:
    """The ``red.*`` config keys' ranges (:data:`RANGES`), each refused in one line."""
    for key, (low, closed, high) in RANGES.items():
        value = getattr(section, key)
        if value < low or (value == low and not closed) or (high is not None and value > high):
            bounds = (f">= {low}" if closed else f"> {low}") + (
                "" if high is None else f" and <= {high}")
            off = " (0: off)" if key == "weight" else ""
            raise ConfigError(f"config key 'red.{key}' must be {bounds}{off}, got {value}")


def from_config(section: Any) -> Red | None:
    """The :class:`Red` the ``red`` section asks for, or None when ``red.weight`` is 0."""
    if section.weight == 0:
        return None
    return Red(section.weight, section.admm, section.sigma / 255, section.every)


#: image-sized tensors a fit with the term keeps: x, u, the denoised copy and x − u, and the
#: divergence guard's two snapshots of each (:class:`dip.engine.StepEngine`)
KEPT_IMAGES = 4 * 3


def seconds_per_step(red: Red, channels: int, size: tuple[int, int],
                     device: torch.device) -> float:
    """The denoiser's share of one step of a fit whose result is ``channels`` × ``size``: one
    run of :func:`nlm`, timed after a first one, over :attr:`Red.every` (the estimate said
    before a run: a few calibration steps never reach a denoiser run)."""
    # its own generator: the caller's global one is not advanced by an estimate (which
    # runs this only when the calibration cache has no rate for it)
    x = torch.rand(1, channels, *size, device=device, dtype=torch.float32,
                   generator=torch.Generator(device).manual_seed(0))
    nlm(x, red.sigma)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    nlm(x, red.sigma)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) / red.every
