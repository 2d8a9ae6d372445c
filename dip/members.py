"""The members one run fits, and how their images make the result.

A run restores its image as ``restarts x tiles`` independent fits (:class:`Part`), fitted
together by :func:`dip.fitting.fit_group`:

- **restarts** (``optim.restarts`` K): K generators with different seeds fitted to the same
  observation. Their mean is the result: each fit's error is part noise the prior let through
  and part the network's own randomness, and the second part averages out (measured on the
  9 denoising crops: benchmarks/README.md). Their per-pixel standard deviation is an
  uncertainty map: where independent fits disagree (a large hole, fine texture), trust the
  result less.
- **tiles** (``tile.size``; :mod:`dip.tiles`): windows of the observation, each fitted as a
  problem of its own and blended back.

Restart 0 of an untiled run uses the run's seed itself, so ``restarts: 1`` without tiles is
the single fit dip has always run, bit for bit.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn import functional as F

from dip import metrics
from dip.errors import RunError
from dip.fitting import FitResult, Member
from dip.inputs import make_code
from dip.nets import build_net
from dip.red import from_config as red_from_config
from dip.stopping import MIN_SIGMA, build_stop_rule, estimate_sigma
from dip.sure import Sure
from dip.tasks import Problem
from dip.tiles import Blend, Tile


@dataclass(frozen=True)
class Part:
    """Which fit of a run a member is: its restart, and its tile (None: the whole image)."""

    restart: int
    tile: Tile | None = None

    def seed(self, seed: int) -> int:
        """The member's seed, from the run's: the run's own for restart 0 of the whole
        image, else a hash of the run's seed, the restart and the tile's place (so a member's
        fit depends on what it is, not on how many others there are)."""
        if self.restart == 0 and self.tile is None:
            return seed
        where = "whole" if self.tile is None else f"{self.tile.top},{self.tile.left}"
        return zlib.crc32(f"{seed}/{self.restart}/{where}".encode())

    def describe(self, scale: int = 1) -> dict:
        """The record's row: the restart, and the tile ``[top, left, height, width]`` in the
        result's pixels (``scale``: super-resolution's factor; the tile is cut in the
        input's), as the record's ``tiles`` are."""
        tile = None if self.tile is None else self.tile.scaled(scale)
        return {"restart": self.restart,
                "tile": None if tile is None else [tile.top, tile.left, tile.height,
                                                   tile.width]}


def parts(restarts: int, tiles: list[Tile] | None) -> list[Part]:
    """Every member of a run: each tile (or the whole image) times each restart."""
    return [Part(r, t) for t in (tiles or [None]) for r in range(restarts)]


@dataclass
class Combined:
    """The result of a run's members.

    Attributes:
        image: ``(1, C, H, W)`` in [0, 1] on the CPU.
        spread: the per-pixel standard deviation across restarts ``(1, C, H, W)`` (None with
            one restart).
        failed: the parts whose fit ended in an error, with it.
    """

    image: torch.Tensor
    spread: torch.Tensor | None
    failed: list[tuple[Part, RunError]]


def combine(members: list[Part], outcomes: list[FitResult | RunError | torch.Tensor],
            shape: tuple[int, ...], scale: int = 1) -> Combined:
    """Average each tile's restarts (the members that did not fail), blend the tiles.

    Args:
        members: the parts, in the order of ``outcomes``.
        outcomes: each member's fit result, its error, or an image already (an estimate so
            far, a tile that needed no fit).
        shape: the result's ``(1, C, H, W)``.
        scale: result pixels per observation pixel (super-resolution's factor).

    Raises:
        RunError: a tile (or the whole image) whose every restart failed: its first error.
    """
    by_tile: dict[Tile | None, list[torch.Tensor]] = {}
    failed = []
    for part, outcome in zip(members, outcomes):
        if isinstance(outcome, RunError):
            failed.append((part, outcome))
            continue
        picture = outcome.image if isinstance(outcome, FitResult) else outcome
        by_tile.setdefault(part.tile, []).append(picture.detach().float().cpu())
    for part, error in failed:
        if part.tile not in by_tile:
            raise error
    restarts = max(len(v) for v in by_tile.values())
    mean, spread = Blend(shape), Blend(shape) if restarts > 1 else None
    for tile, pictures in by_tile.items():
        stack = torch.cat(pictures)
        average = stack.mean(0, keepdim=True)
        if tile is None:
            return Combined(average.clamp(0, 1), _std(stack) if spread else None, failed)
        mean.add(tile.scaled(scale), average)
        if spread is not None:
            spread.add(tile.scaled(scale), _std(stack))
    return Combined(mean.result().clamp(0, 1),
                    spread.result() if spread is not None else None, failed)


def _std(stack: torch.Tensor) -> torch.Tensor:
    """Per-pixel standard deviation across a stack of images ``(K, C, H, W)`` (0 for K=1)."""
    if stack.shape[0] < 2:
        return torch.zeros_like(stack[:1])
    return stack.std(0, keepdim=True)


#: the uncertainty map's pixel value is this many times the standard deviation: 0.25 (64 grey
#: levels) of disagreement between restarts is white
UNCERTAINTY_SCALE = 4.0


def uncertainty_map(spread: torch.Tensor) -> torch.Tensor:
    """One grey channel ``(1, 1, H, W)``: the restarts' standard deviation (root mean square
    over colour channels) times :data:`UNCERTAINTY_SCALE`, clipped to 1."""
    rms = spread.square().mean(1, keepdim=True).sqrt()
    return (rms * UNCERTAINTY_SCALE).clamp(0, 1)


# --- building a run's members -------------------------------------------------------------------

def build_member(cfg: Any, problem: Problem, part: Part, channels: int,
                 reference: torch.Tensor | None = None,
                 noise_sigma: float | None = None,
                 returned: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Member:
    """The member fitting ``part`` of ``problem`` (on the problem's device), seeded by the
    part (:meth:`Part.seed`): its network (from its own generator: torch's global one, which
    the caller or another thread may be drawing from, is untouched), code and perturbations,
    stop rule, and a PSNR metric against its part of ``reference`` when there is one.
    ``noise_sigma``: the whole image's noise level, which every tile shares
    (:func:`dip.run.noise_level`), where the part does not know its own.
    ``returned``: what the run makes of a whole-image estimate (inpainting's known pixels put
    back, super-resolution's back-projection: :meth:`dip.tasks.Task.consistent`), so that the
    PSNR is the result's, not the network's."""
    sub = problem if part.tile is None else problem.window(part.tile)
    device = problem.observation.device
    seed = part.seed(cfg.seed)
    options = {k: v for k, v in vars(cfg.net).items() if k != "name"}
    net = build_net(cfg.net.name,
                    problem.code_channels(cfg.input.channels, channels, part.restart),
                    channels, seed=seed, **options)
    generator = torch.Generator(device=device).manual_seed(seed)
    sigma = sub.noise_sigma if sub.noise_sigma is not None else noise_sigma
    sure = None
    if sub.fits_sure(part.restart):  # the input is the noisy image itself (dip.sure)
        code = sub.observation.detach().clone()
        sigma = estimate_sigma(sub.observation) if sigma is None else sigma
        sure = Sure(sigma) if sigma >= MIN_SIGMA else None  # no noise: nothing to charge
    else:
        code = make_code(cfg.input.kind, cfg.input.channels, sub.out_size, cfg.input.scale,
                         generator)
    metric = None
    if reference is not None:
        ref = reference if part.tile is None else part.tile.scaled(problem.scale).crop(reference)
        shown = returned if part.tile is None and returned is not None else (lambda e: e)

        def metric(estimate: torch.Tensor) -> float:
            return metrics.psnr(shown(estimate), ref)

    return Member(net.to(device), code, sub.operator, sub.observation, generator,
                  build_stop_rule(cfg.stop), metric, sub.loss, sigma, sure,
                  red_from_config(cfg.red))


def stand_in(problem: Problem, part: Part) -> torch.Tensor:
    """What a part that was never fitted (an interrupted run) shows: its observation, resized
    to its result's size."""
    sub = problem if part.tile is None else problem.window(part.tile)
    obs = sub.observation.detach().float()
    if tuple(obs.shape[-2:]) == tuple(sub.out_size):
        return obs.clamp(0, 1)
    return F.interpolate(obs, size=sub.out_size, mode="bilinear", align_corners=False).clamp(0, 1)
