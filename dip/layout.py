"""How a run is laid out on its device: the whole image or tiles, the members fitted at once,
the threads, and what it will cost (:mod:`dip.estimate`) -- decided before the first step.

``tile.size`` auto fits the whole image when its estimated peak memory fits the budget
(``perf.max_memory``, else the device's free memory less a margin) and its result's longer
side is at most ``tile.whole_max`` (when set), and tiles of ``tile.auto_size`` pixels
otherwise; a number fixes the tile, off never tiles.

``whole_max`` is for quality, not memory: the fast preset's step budget was chosen on 128 px
crops, and a larger image fitted whole stops under-fitted (denoising at 512 px on the CPU:
tiles of 128 gave +0.9 to +4 dB over the whole fit; benchmarks/README.md, "tiles.py").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from dip import estimate as costs
from dip.errors import InputError
from dip.members import Part, parts
from dip.nets import build_net
from dip.red import KEPT_IMAGES
from dip.stopping import build_stop_rule
from dip.tasks import Problem
from dip.threads import plan_lanes, resolve_threads
from dip.tiles import MIN_TILE, Tile, grid, overlap_for

#: of the free memory, what a run leaves to everything else
MARGIN = 0.2
#: tiles fitted at once on an accelerator whose members run one after another (more only
#: cost memory); on the CPU at least one per worker thread
GPU_AT_ONCE = 4
#: the most members in one stack (perf.stack, dip.stack): on CUDA, as many as the memory
#: budget holds up to this (benchmarks/README.md, "multifit.py")
STACK_MOST = 16
#: a stack's step on CUDA holds this many times the memory estimated for its members' steps
#: (measured on the H200: 16 stacked tiles of 256 px, paper network, CUDA graph: 46.3 GB
#: reserved against 16.6 GB estimated for their steps plus 2.9 GB for their state; the eager
#: warm-up's blocks stay cached beside the graph's own pool, and a stacked member saves 1.23x
#: the activations it saves alone)
STACK_STEP_MEMORY = 2.7


@dataclass
class Layout:
    """The members of a run and how they run.

    Attributes:
        parts: every member (restarts x tiles), in order.
        tiles: the tiles (None: the whole image), ``side`` and ``overlap`` in result pixels.
        solved: parts that need no fit (a tile with nothing to restore) -> their result.
        threads: CPU threads for the fit (``perf.threads`` resolved).
        at_once: members alive at a time.
        peak_bytes: estimated peak memory; ``whole_bytes`` the whole image's, ``budget``
            what the run may use (None: unknown).
        why: one line on why the image is tiled or not.
        stacked: the members alive at once take each step together (:mod:`dip.stack`).
        packed_bytes: the peak as part of a stack of several runs (``dip run --pack``).
    """

    parts: list[Part]
    tiles: list[Tile] | None
    side: int | None
    overlap: int
    threads: int
    at_once: int
    peak_bytes: int
    whole_bytes: int
    budget: int | None
    why: str
    solved: dict[int, torch.Tensor] = field(default_factory=dict)
    #: the members alive at once share one step (perf.stack)
    stacked: bool = False
    #: the peak when the run's members take their steps in a stack with other runs' (a packed
    #: batch job with perf.stack); 0: as ``peak_bytes``
    packed_bytes: int = 0

    def fitted(self) -> list[int]:
        """The indices of the parts that are fitted."""
        return [i for i in range(len(self.parts)) if i not in self.solved]

    def describe(self) -> dict[str, Any]:
        """The layout for the record (``tiles``), when the image is tiled."""
        return {"size": self.side, "overlap": self.overlap, "count": len(self.tiles or []),
                "solved": len({self.parts[i].tile for i in self.solved}), "why": self.why}


def peak_bytes(cfg: Any, problem: Problem, channels: int, member_side: tuple[int, int],
               concurrent: int, alive: int, step_factor: float = 1.0) -> int:
    """Estimated peak memory of a run: the process itself, ``concurrent`` members computing a
    step of ``member_side`` result pixels at once (each ``step_factor`` times a step's
    estimate), ``alive`` members' state, and the whole image's buffers."""
    pixels = member_side[0] * member_side[1]
    options = {k: v for k, v in vars(cfg.net).items() if k != "name"}
    # the widest input among the restarts run (alternating objectives: dip.tasks.Problem;
    # restart 0 alone fits the squared error: --restarts 1 was charged SURE's input and
    # passes, 2.95 GB planned for a 512 px fit that took 1.63)
    restarts = range(min(cfg.optim.restarts, 2))
    code = max(problem.code_channels(cfg.input.channels, channels, r) for r in restarts)

    def net(device: str = "cpu") -> torch.nn.Module:
        return build_net(cfg.net.name, code, channels, seed=0, device=device, **options)

    signature = repr((cfg.net, code, channels))
    weights = sum(p.numel() for p in net("meta").parameters())
    stop = build_stop_rule(cfg.stop).memory((1, channels, *member_side))
    state = costs.member_bytes(weights, channels, code, pixels, stop)
    if cfg.red.weight > 0:  # DeepRED's ADMM variables and their snapshots (dip.red)
        state += KEPT_IMAGES * 4 * channels * pixels
    # SURE's step keeps two forward passes for its backward (dip.sure)
    passes = 2 if any(problem.fits_sure(r) for r in restarts) else 1
    step = passes * costs.BACKWARD * costs.activation_bytes(signature, net, code, pixels)
    out_pixels = problem.out_size[0] * problem.out_size[1]
    whole = 8 * 4 * channels * out_pixels  # input, observation, reference, blend, result
    return int(costs.process_bytes() + concurrent * step * step_factor + alive * state + whole)


def plan_layout(cfg: Any, problem: Problem, channels: int, device: torch.device,
                solved: Callable[[Problem], torch.Tensor | None],
                stack: bool = False,
                blind: Callable[[Problem], bool] = lambda part: False) -> Layout:
    """Decide the run's layout (see the module docstring); ``stack``: the members alive at
    once take each step together (``perf.stack`` resolved: auto on CUDA only); ``blind``:
    whether a fit of a tile would see nothing of the picture (:meth:`Task.blind`)."""
    restarts, cpu, stacked = cfg.optim.restarts, device.type == "cpu", stack
    # on the CPU a stack takes every thread, members side by side one each
    threads = resolve_threads(cfg.perf.threads, 1 if stacked else restarts) if cpu else 1
    workers = (restarts if stacked else plan_lanes(restarts, threads).workers if cpu else 1)
    factor = STACK_STEP_MEMORY if stacked else 1.0
    whole = peak_bytes(cfg, problem, channels, problem.out_size, min(workers, restarts),
                       restarts, factor if restarts > 1 else 1.0)
    packed = (0 if not stacked else whole if restarts > 1 else
              peak_bytes(cfg, problem, channels, problem.out_size, 1, 1, factor))
    free = costs.free_bytes(device)
    budget = (int(cfg.perf.max_memory * 2 ** 30) if cfg.perf.max_memory
              else None if free is None else int(free * (1 - MARGIN)))
    size = cfg.tile.size
    over_memory = budget is not None and whole > budget
    longer, most = max(problem.out_size), cfg.tile.whole_max
    over_size = bool(most) and longer > most
    if size == "off" and cfg.perf.max_memory and over_memory:
        raise InputError(f"{{arg:max_memory}} of {cfg.perf.max_memory:g} GB is less than the "
                         f"whole image needs ({whole / 2 ** 30:.2f} GB), and {{arg:tile=off}} "
                         f"keeps it whole; drop one of the two")
    def untiled() -> Layout:
        if budget is None:
            why = "whole image"
        else:
            needs, has = costs.in_gb(whole, budget)
            why = f"whole image: {needs} GB {'fits in' if whole <= budget else 'is over'} {has} GB"
        return Layout(parts(restarts, None), None, None, 0, threads, restarts, whole, whole,
                      budget, why, stacked=stacked and restarts > 1, packed_bytes=packed)

    if size == "off" or (size == "auto" and not over_memory and not over_size):
        return untiled()
    side = int(size) if size.isdecimal() else cfg.tile.auto_size
    t = _tiling(cfg, problem, channels, device, side, budget, stacked)
    # auto's tiles halve until they fit the budget (a --max-memory below 256 px tiles' need)
    while size == "auto" and budget is not None and t.peak > budget and side // 2 >= MIN_TILE:
        side //= 2
        t = _tiling(cfg, problem, channels, device, side, budget, stacked)
    t = _seeing(t, lambda side: _tiling(cfg, problem, channels, device, side, budget,
                                        stacked), problem, blind, size == "auto", budget)
    if cfg.perf.max_memory and t.peak > budget:
        raise InputError(f"{{arg:max_memory}} of {cfg.perf.max_memory:g} GB is less than the "
                         f"run needs in tiles of {t.side} px ({t.peak / 2 ** 30:.2f} GB"
                         + (f"; give a smaller {{arg:tile}}, {MIN_TILE} or more)"
                            if size != "auto" and side > MIN_TILE else ", the smallest dip uses)"))
    if len(t.tiles) == 1:  # a tile the picture's size is the whole picture: fitted as such
        return untiled()  # (--tile 64 of a 40 px picture said '1 tile of 64 px', a tile's seed)
    why = (f"{len(t.tiles)} tile{'s' if len(t.tiles) != 1 else ''} of {t.side} px: "
           + _why_tiled(size, over_memory, whole, budget, longer, most))
    answers = {w: answer for w in t.tiles if (answer := solved(problem.window(w))) is not None}
    done = {i: answers[p.tile] for i, p in enumerate(t.members) if p.tile in answers}
    return Layout(t.members, t.tiles, t.side, t.overlap, _fits_threads(cfg, t, len(done), cpu),
                  t.at_once, t.peak, whole, budget, why, done,
                  stacked=stacked and t.at_once > 1, packed_bytes=t.packed)


def _fits_threads(cfg: Any, t: _Tiling, solved: int, cpu: bool) -> int:
    """The tiles' threads per fit; where one tile alone has anything to restore, a fit
    alone's (``OMP_NUM_THREADS``, else the free cores: it took every usable core, as the
    member of a group of tiles that needed no fit)."""
    if cpu and len(t.members) - solved == 1:
        return resolve_threads(cfg.perf.threads, 1)
    return t.threads


def _why_tiled(size: str, over_memory: bool, whole: int, budget: int | None, longer: int,
               most: int) -> str:
    if size != "auto":
        return "the size asked for"
    if over_memory:
        return "the whole image would need {} GB, over {} GB".format(*costs.in_gb(whole, budget))
    return (f"{longer} px is over the {most} px the preset fits whole (its step budget is for "
            f"smaller images)")


def _seeing(t: _Tiling, tiling: Callable[[int], _Tiling], problem: Problem,
            blind: Callable[[Problem], bool], auto: bool, budget: int | None) -> _Tiling:
    """Tiles that each see some of the picture: a fit of a tile wholly inside an inpainting's
    hole has nothing to learn from and returned the untrained network's output, the same
    whatever the photo. Auto's tiles grow until none is blind, within the memory budget;
    tiles the user sized, or that the budget keeps small, are refused with the size that
    sees."""
    def first_blind(t: _Tiling) -> Tile | None:
        return next((w for w in t.tiles if blind(problem.window(w))), None)

    first = hole = first_blind(t)
    if first is None:
        return t
    # (the whole picture always sees some: a mask that leaves nothing known is refused)
    longest, side, grown = max(problem.out_size), t.side, t
    while hole is not None and side < longest:
        side = min(side + max(16, side // 4), longest)
        grown = tiling(side)
        hole = first_blind(grown)
    if auto and (budget is None or grown.peak <= budget):
        return grown
    where = first.scaled(problem.scale)
    raise InputError(f"the holes cover a whole tile of {t.side} px (rows {where.top}-"
                     f"{where.top + where.height}, columns {where.left}-"
                     f"{where.left + where.width}), where a fit sees none of the picture; "
                     f"give {{arg:tile={grown.side}}}, or {{arg:tile=off}}" + (
                         " (the memory budget keeps tiles smaller)" if auto else ""))


@dataclass
class _Tiling:
    """Tiles of one side: the members they make, and what fitting them costs."""

    tiles: list[Tile]
    members: list[Part]
    side: int  # in result pixels, as the tiles are cut: a whole number of input pixels
    overlap: int
    threads: int
    at_once: int
    peak: int
    packed: int


def _tiling(cfg: Any, problem: Problem, channels: int, device: torch.device, side: int,
            budget: int | None, stacked: bool) -> _Tiling:
    """The run in tiles of ``side`` result pixels (see :func:`plan_layout`)."""
    restarts, cpu = cfg.optim.restarts, device.type == "cpu"
    factor = STACK_STEP_MEMORY if stacked else 1.0
    scale = problem.scale
    # cut in input pixels (super-resolution's are `scale` result pixels each)
    cut, margin = max(1, side // scale), overlap_for(side, cfg.tile.overlap) // scale
    tiles = grid(tuple(problem.observation.shape[-2:]), cut, margin)
    members = parts(restarts, tiles)
    threads = (resolve_threads(cfg.perf.threads, 1 if stacked else len(members)) if cpu
               else 1)
    biggest = (max(t.height for t in tiles) * scale, max(t.width for t in tiles) * scale)

    def peak_of(at_once: int, in_stack: bool | None = None) -> int:
        in_stack = stacked and at_once > 1 if in_stack is None else in_stack
        computing = (at_once if stacked else plan_lanes(at_once, threads).workers if cpu
                     else 1)
        return peak_bytes(cfg, problem, channels, biggest, computing, at_once,
                          factor if in_stack else 1.0)

    at_once = _tiles_at_once(len(members), restarts, threads, cpu, stacked, budget, peak_of)
    return _Tiling(tiles, members, cut * scale, margin * scale, threads, at_once,
                   peak_of(at_once), peak_of(at_once, True) if stacked else 0)


def _tiles_at_once(members: int, restarts: int, threads: int, cpu: bool, stacked: bool,
                   budget: int | None, peak_of: Callable[[int, bool], int]) -> int:
    """Tiles alive at once: a stack of as many as the budget holds (up to STACK_MOST; a
    stack's peak grows by the same step and state with each member); else a worker's each on
    the CPU, and a few on an accelerator that steps them one after another; at least every
    restart of a tile."""
    if stacked:
        room = STACK_MOST
        if budget is not None:
            one = peak_of(1, True)
            room = 1 + max(0, budget - one) // max(1, peak_of(2, True) - one)
        at_once = max(1, min(members, STACK_MOST, room))
    elif cpu:
        at_once = plan_lanes(members, threads).workers
    else:
        at_once = GPU_AT_ONCE
    return max(at_once, min(restarts, members))


def side_by_side(layout: Layout) -> int:
    """How many members compute at the same time: a stack's members, the CPU's workers, or
    one on an accelerator that steps its members one after another (threads are 1 there)."""
    if layout.stacked:
        return min(layout.at_once, len(layout.fitted()))
    return plan_lanes(layout.at_once, layout.threads).workers


def calibration_key(cfg: Any, problem: Problem, layout: Layout, channels: int,
                    side: tuple[int, int]) -> str:
    stacked = " stacked" if layout.stacked else ""
    code = (cfg.input.channels if problem.objective == "mse"  # else: SURE's fits (dip.sure)
            else problem.objective)
    # DeepRED's denoiser (dip.red) runs between steps: its share of a step is its own rate
    red = f"|red every {cfg.red.every}" if cfg.red.weight > 0 else ""
    return (f"{cfg.net}|code {code}|out {channels}|{side[0]}x{side[1]}|"
            f"{side_by_side(layout)} at once{stacked}|{layout.threads} threads{red}")


def member_side(problem: Problem, layout: Layout) -> tuple[int, int]:
    """The result size of the run's typical member (the first tile, or the whole image)."""
    if layout.tiles is None:
        return tuple(problem.out_size)
    t = layout.tiles[0].scaled(problem.scale)
    return t.height, t.width


def seconds(layout: Layout, per_member_step: float, iters: int) -> float:
    """The run's time: every fitted member's budget at the measured rate (members that run
    side by side are in the rate)."""
    return len(layout.fitted()) * iters * per_member_step


def calibration_parts(layout: Layout) -> list[int]:
    """The parts whose members (built afresh, thrown away after) time the run's steps: its
    first ones, as many as run side by side."""
    return layout.fitted()[:max(1, side_by_side(layout))]
