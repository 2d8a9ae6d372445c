"""How one optimisation step of :func:`dip.fitting.fit` runs on the hardware: the same arithmetic,
less overhead.

A step is: draw the code's perturbation, ``out = f_θ(z + ε)``, ``loss = ‖A(out) − y‖²``,
backward, Adam (a SURE fit, :mod:`dip.sure`, also runs the network at a probe and descends
SURE). :class:`StepEngine` runs it

- on the CPU with glibc's allocator told to keep freed memory (:func:`kept_cpu_memory`): the
  paper network's activations are 8–130 MB each, and glibc hands every block above its mmap
  threshold back to the kernel when it is freed, so each step page-faulted all of them in
  again (measured: 1.3× faster per step at 256×256 on the development CPU);
- on CUDA as a CUDA graph: the whole step is captured once and replayed, so a step costs one
  launch instead of hundreds of small ones from Python; channels_last layout and bfloat16
  autocast are options (both measured no faster for this network, benchmarks/README.md).

Every engine keeps the state each step started from (weights, BatchNorm statistics, Adam's
moments) in one of two buffers, so the divergence guard can put back the last state whose loss it
accepted without a copy per step beyond the one snapshot.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dip.errors import ConfigError, InputError
from dip.red import Red, RedState
from dip.sure import Sure

PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}
#: eager steps before a step is captured as a CUDA graph (cuDNN picks its kernels and the
#: allocator settles on them); they are real steps of the fit
GRAPH_WARMUP = 3


@dataclass(frozen=True)
class Perf:
    """How steps run on one device (resolved from the ``perf.*`` config keys)."""

    graphs: bool = False
    channels_last: bool = False
    autocast: torch.dtype | None = None
    keep_cpu_memory: bool = False
    #: members fitted at once share one step (:class:`dip.stack.StackedEngine`)
    stack: bool = False

    def describe(self) -> str:
        parts = [name for name, on in (("stacked", self.stack), ("cuda-graph", self.graphs),
                                       ("channels-last", self.channels_last),
                                       ("bf16", self.autocast is not None),
                                       ("kept-cpu-memory", self.keep_cpu_memory)) if on]
        return "+".join(parts) or "eager"


def warm_steps(perf: Perf) -> int:
    """Steps of a fit that run slower than the rest: its first (allocations, the kernels'
    first choices), and with a CUDA graph the eager steps and the capture before replays."""
    return 1 + (GRAPH_WARMUP + 1 if perf.graphs else 0)


SWITCHES = ("auto", "on", "off")


def check_perf(settings: Any) -> None:
    """Check the ``perf.*`` keys that do not depend on the device (:func:`resolve_perf` checks
    the rest once the device is known)."""
    for key in ("graphs", "channels_last", "stack"):
        if getattr(settings, key) not in SWITCHES:
            raise ConfigError(f"config key 'perf.{key}' must be one of {', '.join(SWITCHES)}, "
                              f"got {getattr(settings, key)!r}")
    if settings.precision not in PRECISIONS:
        raise ConfigError(f"config key 'perf.precision' must be one of "
                          f"{', '.join(PRECISIONS)}, got {settings.precision!r}")


def resolve_perf(settings: Any, device: torch.device, constant_lr: bool = True,
                 one_pass: bool = True) -> Perf:
    """Validated ``perf.*`` settings (:class:`dip.config.PerfConfig`) -> :class:`Perf` for
    ``device``; raises ConfigError for what that device cannot do.

    ``auto`` picks what measured faster on that kind of device (benchmarks/speed.py,
    benchmarks/multifit.py): CUDA graphs and stacks of members on CUDA (NCHW: channels_last
    measured slower there for this network, and on the CPU), the kept allocator on the CPU;
    float32 everywhere.
    """
    check_perf(settings)
    cuda = device.type == "cuda"
    if PRECISIONS[settings.precision] is not None and not cuda:
        raise ConfigError(f"perf.precision={settings.precision} is for CUDA devices; on "
                          f"{device.type} it is slower (no bfloat16 hardware on most CPUs)")

    def switch(value: str, auto: bool) -> bool:
        return auto if value == "auto" else value == "on"

    # A captured graph replays the learning rate it was captured with.
    graphs = switch(settings.graphs, cuda and constant_lr)
    if graphs and not cuda:
        raise ConfigError("perf.graphs=on needs a CUDA device")
    if graphs and not constant_lr:
        raise ConfigError("perf.graphs=on needs optim.schedule=constant")
    channels_last = switch(settings.channels_last, False)
    # a stack runs its members' convolutions as one grouped convolution: on CUDA many small
    # fits fill the chip together; on the CPU oneDNN runs the groups one after another
    # (0.4-1.2x), so there members run side by side on threads instead (dip.threads)
    # (``one_pass``: each member's step is one forward pass; SURE's are two, dip.sure, and
    # step side by side whatever perf.stack says)
    stack = switch(settings.stack, cuda and not channels_last) and one_pass
    if stack and channels_last:
        raise ConfigError("perf.stack=on runs in the NCHW layout; it cannot be combined with "
                          "perf.channels_last=on")
    return Perf(graphs=graphs, channels_last=channels_last,
                autocast=PRECISIONS[settings.precision],
                keep_cpu_memory=device.type == "cpu", stack=stack)


# --- the CPU allocator ------------------------------------------------------------------------

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_GLIBC_DEFAULTS = {_M_TRIM_THRESHOLD: 128 * 1024, _M_MMAP_MAX: 65536}


#: glibc's settings that :func:`kept_cpu_memory` changes and sets back to the defaults (and
#: those whose setting turns the adaptive mmap threshold off too)
_TUNED = ("mmap_max", "trim_threshold", "mmap_threshold", "top_pad")


def _tuned_by_environment() -> bool:
    """Whether the process's malloc was tuned by its environment in what kept_cpu_memory
    changes (glibc reads these once, at start-up; mallopt cannot read them back)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    return any(f"MALLOC_{name.upper()}_" in os.environ or f"glibc.malloc.{name}=" in tunables
               for name in _TUNED)


def _glibc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


_kept_lock = threading.Lock()
_kept_users = 0


@contextmanager
def kept_cpu_memory() -> Iterator[None]:
    """While inside, glibc serves every block from its heap and does not give freed memory
    back, so a step reuses the pages of the last one. When the last fit inside leaves (fits in
    several threads share one process-wide setting), glibc's documented defaults are set back
    and the heap is trimmed; glibc's own adaptive mmap threshold, once a value is set, stays
    off for the process. Does nothing where the C library is not glibc, nor where the
    process's allocator was tuned through its environment (``MALLOC_MMAP_MAX_``,
    ``GLIBC_TUNABLES=glibc.malloc...``): the defaults set back would undo that tuning."""
    global _kept_users
    libc = None if _tuned_by_environment() else _glibc()
    if libc is None:
        yield
        return
    with _kept_lock:
        _kept_users += 1
        if _kept_users == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)
    try:
        yield
    finally:
        with _kept_lock:
            _kept_users -= 1
            if _kept_users == 0:
                for key, value in _GLIBC_DEFAULTS.items():
                    libc.mallopt(key, value)
                libc.malloc_trim(0)


# --- the step ---------------------------------------------------------------------------------

def out_of_memory(exc: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; the CPU and MPS allocators raise a RuntimeError (on
    Windows the CPU's says "not enough memory"), Python a MemoryError."""
    if isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return any(words in text for words in ("out of memory", "can't allocate memory",
                                           "not enough memory"))


def _described(value: Any) -> str:
    return (f"a tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor)
            else type(value).__name__)


def _adam(params: list[torch.Tensor], lr: float, graphs: bool,
          device_type: str) -> torch.optim.Optimizer:
    """Adam as a graph can replay it (state on the device) on CUDA; on the CPU the fused
    kernel (one pass over all weights: 5.7 -> 1.6 ms per step for the paper network here)."""
    if graphs:
        return torch.optim.Adam(params, lr=lr, capturable=True)
    if device_type == "cpu":
        try:
            return torch.optim.Adam(params, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # torch without a fused CPU Adam
            pass
    return torch.optim.Adam(params, lr=lr)


def on_side_stream(run: Callable[[], Any]) -> Any:
    """``run()`` on a side CUDA stream, waited for: the eager steps before a graph's capture
    (torch.cuda.graphs' warm-up)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        result = run()
    torch.cuda.current_stream().wait_stream(side)
    return result


#: ``loss(A(x), y)`` -> a 0-d tensor
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse(prediction: torch.Tensor, observation: torch.Tensor) -> torch.Tensor:
    """The paper's data term: the mean squared error."""
    return torch.mean((prediction - observation) ** 2)


class StepEngine:
    """Runs fit's steps for one network, code, operator and observation.

    ``step()`` runs one step from the current weights and returns this step's output and its
    loss (a 0-d tensor, the loss of the weights the step started from); ``accept()`` marks
    those weights good; ``restore()`` puts back the last accepted state (weights, BatchNorm
    statistics, Adam's moments).

    Args:
        net, code, operator, observation: as :func:`dip.fitting.fit`; ``net`` and ``code`` are on
            the device already.
        lr: Adam's learning rate.
        perturb_std: std of the code's Gaussian perturbation at each step.
        generator: source of the perturbation.
        perf: how to run (:func:`resolve_perf`).
        checkpoint: keep the state for ``restore()`` (the divergence guard).
        warmup: eager steps before a CUDA graph is captured (cuDNN picks its kernels and the
            allocator settles on them); they are real steps of the fit.
        loss: ``loss(A(out), y)``; default the mean squared error.
        sure: fit by Stein's unbiased risk estimate instead (:mod:`dip.sure`; denoising, the
            code being the noisy image): each step adds the input's eSURE noise and takes a
            second forward pass at a probe; ``loss`` stays what the step reports (the guard
            and the trace judge the data term), SURE is what it descends.
        red: DeepRED's denoiser term (:mod:`dip.red`): each step also pulls the output
            towards ADMM's ``x − u``, and ``x`` and ``u`` follow each step; ``loss`` stays the
            data term.
    """

    def __init__(self, net: nn.Module, code: torch.Tensor, operator: nn.Module,
                 observation: torch.Tensor, *, lr: float, perturb_std: float,
                 generator: torch.Generator | None, perf: Perf = Perf(),
                 checkpoint: bool = True, warmup: int = GRAPH_WARMUP,
                 loss: Loss | None = None, sure: Sure | None = None,
                 red: Red | None = None) -> None:
        self.perf, self.operator, self.observation = perf, operator, observation
        self.loss_fn = loss or mse
        self.sure = sure
        self.red = red
        self.red_state: RedState | None = None  # made from the first output (dip.red)
        fmt = torch.channels_last if perf.channels_last else torch.contiguous_format
        self.net = net.to(memory_format=fmt)
        self.code = code.contiguous(memory_format=fmt)
        self.perturb_std, self.generator = perturb_std, generator
        self.device_type = code.device.type
        # The perturbation is drawn in the code's logical (NCHW) order whatever the layout, so
        # every layout sees the same random numbers.
        self.noise = torch.empty(code.shape, device=code.device, dtype=code.dtype)
        self.input = torch.empty_like(self.code)
        if sure is not None:  # the divergence's probe, the input along it, the noise's level
            self.probe = torch.empty_like(self.code)
            self.probed_input = torch.empty_like(self.code)
            self.level = torch.empty((), device=code.device, dtype=code.dtype)
        self.params = [p for p in net.parameters()]
        self.optimizer = _adam(self.params, lr, perf.graphs, self.device_type)
        self.lr = lr
        # Two snapshot buffers of everything a step changes: the weights, BatchNorm's running
        # statistics and Adam's moments and step count -- the state the current step started
        # from, and the last state whose loss was accepted. Restoring Adam too matters: a
        # fresh Adam's first update moves every weight by about lr (m/sqrt(v) = sign(g)), which
        # wrecks a fitted network again at once, so a restore to fresh moments could only
        # alternate restore and wreck (measured: 97 restores in 150 steps after one spike).
        self.checkpoint = checkpoint
        self.state: list[torch.Tensor] = []
        self.snapshots: list[list[torch.Tensor]] | None = None
        self.good, self.pending = 0, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.warmup = warmup if perf.graphs else 0
        self.steps = 0
        self.out: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None

    def _state(self) -> list[torch.Tensor]:
        """The tensors a step changes, in a fixed order. Adam creates its moments (and a
        DeepRED fit its ADMM variables) on the first step, so the list grows once."""
        optim_state = [value for p in self.params for value in
                       self.optimizer.state.get(p, {}).values() if torch.is_tensor(value)]
        red = self.red_state.tensors() if self.red_state is not None else []
        return self.params + list(self.net.buffers()) + optim_state + red

    @torch.no_grad()  # a copy outside no_grad would link the snapshot into autograd
    def _snapshot(self) -> None:
        state = self._state()
        if len(state) != len(self.state):  # first step, or Adam's state just appeared
            self.state = state
            keep = self.snapshots[self.good] if self.snapshots is not None else None
            self.snapshots = [[t.detach().clone() for t in state] for _ in range(2)]
            if keep is not None and len(keep) < len(state):
                # the accepted state predates Adam's moments: they were zero (fresh)
                for slot, old in zip(self.snapshots[self.good], keep + [None] * len(state)):
                    slot.copy_(old) if old is not None else slot.zero_()
        torch._foreach_copy_(self.snapshots[self.pending], self.state)

    def _draw_input(self) -> None:
        if self.sure is not None:
            # eSURE (Jo et al. 2021): fresh noise of a random level on the noisy image
            self.noise.normal_(generator=self.generator)
            self.level.uniform_(0, self.sure.input_noise * self.sure.sigma,
                                generator=self.generator)
            torch.addcmul(self.code, self.noise, self.level, out=self.input)
            self.probe.normal_(generator=self.generator)
            torch.mul(self.probe, self.sure.step, out=self.probed_input)
            self.probed_input.add_(self.input)
        elif self.perturb_std > 0:
            self.noise.normal_(generator=self.generator)
            torch.add(self.code, self.noise, alpha=self.perturb_std, out=self.input)
        else:
            self.input.copy_(self.code)

    def _forward_backward(self) -> tuple[torch.Tensor, torch.Tensor]:
        # no autocast weight cache: a captured graph must not hold casts from a past step;
        # no autocast object at all without it (older torch rejects some device types)
        autocast = (torch.autocast(self.device_type, dtype=self.perf.autocast,
                                   cache_enabled=False)
                    if self.perf.autocast is not None else contextlib.nullcontext())
        try:  # (free where nothing is raised: no object made each step)
            with autocast:
                out = self.net(self.input)
                # SURE's divergence: the output again at the input moved along the probe
                probed = self.net(self.probed_input) if self.sure is not None else None
        except RuntimeError as exc:
            self._mark_first(exc, "net(code)")
            raise
        out = out.float()
        try:
            predicted = self.operator(out)
        except RuntimeError as exc:
            self._mark_first(exc, "operator(net(code))")
            raise
        if not self.steps and predicted.shape != self.observation.shape:  # not broadcast
            raise InputError(f"operator(net(code)) is {tuple(predicted.shape)} but the "
                             f"observation is {tuple(self.observation.shape)}")
        loss = self.loss_fn(predicted, self.observation)
        if not self.steps and not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
            raise InputError(f"loss(prediction, observation) must return a 0-d tensor, got "
                             f"{_described(loss)}")
        objective = (loss if probed is None
                     else loss + self.sure.penalty(out, probed.float(), self.probe))
        if self.red is not None:
            if self.red_state is None:  # x starts at the first output (an eager step)
                self.red_state = RedState(self.red, out)
            objective = objective + self.red.penalty(out, self.red_state.target)
        objective.backward()
        self.optimizer.step()
        return out.detach(), loss.detach()

    def _mark_first(self, exc: RuntimeError, what: str) -> None:
        """At the first step, torch's error for parts that may not fit together (a code of
        other channels than the net takes, a mask of another size than its output) is
        marked with the call that failed (``dip_failed_call``): :func:`dip.fitting.fit`,
        whose caller gave the parts, says so as an InputError; a run's own parts' errors
        (dip's, the device's) stay as they are."""
        if not self.steps and not out_of_memory(exc) and not isinstance(
                exc, NotImplementedError) and not str(exc).startswith(("CUDA", "cuDNN")):
            exc.dip_failed_call = what

    def _eager(self) -> tuple[torch.Tensor, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        return self._forward_backward()

    def _capture(self) -> None:
        """Record one whole step (forward, loss, backward, Adam) as a CUDA graph; its output
        and loss tensors are then rewritten in place by every replay."""
        self.optimizer.zero_grad(set_to_none=True)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.out, self.loss = self._forward_backward()

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One step; returns ``(output, loss)``, both overwritten by the next step."""
        self.pending = 1 - self.good
        if self.checkpoint:
            self._snapshot()
        self._draw_input()
        if not self.perf.graphs:
            self.out, self.loss = self._eager()
        elif self.steps < self.warmup:
            self.out, self.loss = on_side_stream(self._eager)
        else:
            if self.graph is None:
                self._capture()
            self.graph.replay()
        self.steps += 1
        if self.red_state is not None:  # ADMM's x and u follow the step (dip.red)
            self.red_state.update(self.out, self.steps)
        return self.out, self.loss

    def set_lr(self, lr: float) -> None:
        """Adam's learning rate from the next step on. A captured CUDA graph holds the rate it
        was captured with, so a new rate there means capturing the step again (the guard's
        back-off does this rarely; a schedule would every step, and is refused with graphs)."""
        if lr == self.lr:
            return
        self.lr = lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.graph = None

    def accept(self) -> None:
        """The weights the last step started from gave an acceptable loss: keep them."""
        self.good = self.pending

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the last accepted state: weights, BatchNorm statistics and Adam's moments.
        Everything happens in place, so a captured graph stays valid."""
        if self.snapshots is None:
            raise RuntimeError("restore() needs checkpoint=True")
        torch._foreach_copy_(self.state, self.snapshots[self.good])
