"""The one optimisation loop of Deep Image Prior, for every task.

    θ* = argmin_θ ‖A(f_θ(z + ε_t)) − y‖²,  ε_t ~ N(0, σ_z²)          (paper, Eq. 2 and Sec. 4)

The returned image is an exponential moving average of the outputs f_θ(z) (the paper's
"averaged outputs"), or the last output when averaging is off, or the image a stop rule chose.
"""

from __future__ import annotations

import collections
import contextlib
import math
import numbers
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from dip.engine import Perf, StepEngine, kept_cpu_memory
from dip.errors import ConfigError, InputError, RunError, outside_dip
from dip.image import DipWarning
from dip.red import Red
from dip.stack import Slot, StackedEngine, signature
from dip.stopping import FixedBudget, StopRule
from dip.sure import Sure
from dip.threads import Neighbours, plan_lanes

#: a loss that is not a number in this many consecutive tries ends the run; each try halves
#: the learning rate, so the last one steps at 2**-20 of it (a finite rise still there is
#: accepted: :meth:`Guard.accepts`)
MAX_CONSECUTIVE_RESTORES = 20
#: a fit this long whose last loss is no lower than its first step's learned nothing (a
#: learning rate so large that every step saturates the output, or that the guard undoes)
LEARNS_WITHIN = 100
#: after a restore the learning rate is halved, and doubles back (up to the scheduled rate)
#: after every this many accepted steps
BACKOFF_RECOVERY_STEPS = 50

#: learning-rate schedules: (lr, lr_end, step, iters) -> the rate for that step (0-based)
SCHEDULES: dict[str, Callable[[float, float, int, int], float]] = {
    "constant": lambda lr, end, t, n: lr,
    # half a cosine from lr down to lr_end over the step budget (SGDR, Loshchilov & Hutter,
    # ICLR 2017, without restarts)
    "cosine": lambda lr, end, t, n: end + 0.5 * (lr - end) * (1 + math.cos(math.pi * t / n)),
}


def check_schedule(name: str) -> None:
    """``optim.schedule`` must name one of :data:`SCHEDULES`."""
    if name not in SCHEDULES:
        raise ConfigError(f"config key 'optim.schedule' must be one of "
                          f"{', '.join(SCHEDULES)}, got {name!r}")


@dataclass
class Progress:
    """What a callback sees after each step. ``estimate`` (the image the fit would return now)
    and ``output`` (this step's raw network output) are live tensors: copy to keep them."""

    step: int
    total: int
    loss: float
    estimate: torch.Tensor
    psnr: float | None = None
    output: torch.Tensor | None = None

    def __repr__(self) -> str:  # the step, not two images' worth of numbers
        psnr = "" if self.psnr is None else f", psnr={self.psnr:.2f}"
        return f"Progress(step={self.step}/{self.total}, loss={self.loss:.6g}{psnr})"


@dataclass
class FitResult:
    """The outcome of :func:`fit`.

    Attributes:
        image: ``(1, C, H, W)`` float32 in [0, 1], on the fit's device.
        iterations: steps run.
        returned_iteration: the step whose estimate ``image`` is.
        stop_reason: ``budget`` | the stop rule's name when it fired (``auto``) |
            ``interrupted``.
        peak_psnr, peak_iteration: best PSNR against the reference, and when, of the kind of
            image that is returned (the stop rule's candidate, else the output average),
            sampled every ``metrics_every`` steps (None without a reference).
        history: ``step``, ``loss``, the stop rule's ``variance`` (once its window is full) and,
            with a reference, ``psnr``, sampled every ``metrics_every`` steps; ``restores``:
            steps where the divergence guard acted.
    """

    image: torch.Tensor
    iterations: int
    returned_iteration: int
    stop_reason: str
    peak_psnr: float | None = None
    peak_iteration: int | None = None
    history: dict[str, list] = field(default_factory=dict)
    #: the noise level the stop rule worked with ([0, 1] units), None if it used none
    noise_level: float | None = None
    #: (step, threads) each time the fit's threads changed with the machine's load
    thread_changes: list[tuple[int, int]] = field(default_factory=list)
    #: the CPU threads its operations started on (:func:`fit_group`; 0 off the CPU)
    threads: int = 0

    def __repr__(self) -> str:  # the outcome, not the image and every step's curves
        return (f"FitResult(image={tuple(self.image.shape)}, iterations={self.iterations}, "
                f"returned_iteration={self.returned_iteration}, "
                f"stop_reason={self.stop_reason!r}, peak_psnr={self.peak_psnr}, "
                f"history={sorted(self.history)})")


@dataclass
class Member:
    """One independent fit of a group (:func:`fit_group`): its own generator ``net``, code,
    corruption and observation, and its own stop rule, divergence guard, estimate and record.

    Attributes:
        net: the generator, on the same device as ``code``.
        code: the fixed input ``z``, ``(1, C_z, H, W)``.
        operator: the corruption ``A`` (an ``nn.Module``).
        observation: ``y``, shaped like ``operator(net(code))``.
        generator: source of the code's perturbations (seeded by the caller).
        stop_rule: decides when this member stops (default: its whole budget).
        metric: ``estimate -> PSNR`` against a reference (None: no reference).
        loss: ``loss(A(x), y)``, a 0-d tensor; default the mean squared error (the paper's).
        noise_sigma: the observation's noise level when known ([0, 1] units), for a stop rule
            that uses it; None: the rule estimates it.
        sure: fit by Stein's unbiased risk estimate (:mod:`dip.sure`) instead of ``loss``;
            ``code`` is then the noisy observation itself.
        red: DeepRED's denoiser term beside the data term (:mod:`dip.red`); None: the paper's
            fit.
    """

    net: nn.Module
    code: torch.Tensor
    operator: nn.Module
    observation: torch.Tensor
    generator: torch.Generator | None = None
    stop_rule: StopRule | None = None
    metric: Callable[[torch.Tensor], float] | None = None
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    noise_sigma: float | None = None
    sure: Sure | None = None
    red: Red | None = None


@dataclass(frozen=True)
class Settings:
    """What every member of a group fits with (the arguments of :func:`fit`)."""

    iters: int
    lr: float = 0.01
    average: float = 0.99
    perturb_std: float = 1 / 30
    guard: float = 3.16
    metrics_every: int = 10
    schedule: str = "constant"
    lr_end: float = 0.0


def _checked_settings(s: Settings) -> Settings:
    """:func:`fit`'s numbers, as the config checks them for a run (kornia's checks at the
    entry point: a torch error deep in Adam, or a silent wrong result, otherwise); numpy's
    numbers taken as Python's."""
    def whole(value: object) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)

    def number(value: object) -> bool:
        return isinstance(value, numbers.Real) and not isinstance(value, bool) \
            and math.isfinite(value)

    for name, value, ok, what in (
            ("iters", s.iters, whole(s.iters) and s.iters >= 1, "a whole number >= 1"),
            ("lr", s.lr, number(s.lr) and s.lr > 0, "a number > 0"),
            ("average", s.average, number(s.average) and 0 <= s.average < 1, "in [0, 1)"),
            ("perturb_std", s.perturb_std, number(s.perturb_std) and s.perturb_std >= 0,
             "a number >= 0"),
            ("guard", s.guard, number(s.guard) and (s.guard == 0 or s.guard > 1),
             "0 (off) or a number > 1"),
            ("metrics_every", s.metrics_every, whole(s.metrics_every) and s.metrics_every >= 1,
             "a whole number >= 1"),
            ("lr_end", s.lr_end, number(s.lr_end) and 0 <= s.lr_end and (  # lr="0.01": lr's
                not number(s.lr) or s.lr_end <= s.lr),
             "a number from 0 to lr")):
        if not ok:
            raise InputError(f"fit(): {name} must be {what}, got {value!r}")
    check_schedule(s.schedule)
    return Settings(int(s.iters), float(s.lr), float(s.average), float(s.perturb_std),
                    float(s.guard), int(s.metrics_every), s.schedule, float(s.lr_end))


@contextmanager
def autograd_on() -> Iterator[None]:
    """Gradients recorded whatever the caller's mode (a decorator too): a fit called inside
    the caller's ``torch.no_grad()`` (common in a notebook or a server) or
    ``torch.inference_mode()`` failed with torch's 'element 0 of tensors does not require
    grad'. Both modes are per thread, and a new thread starts with gradients on. The
    caller's ``torch.autocast`` is turned off as well (dip's own ``perf.precision`` turns it on
    where asked): inside one, a fit ran in bfloat16 and gave another image, and denoising's
    Wiener filter failed with a RuntimeError (mixed dtypes in ``index_add_``)."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(False))
        stack.enter_context(torch.enable_grad())
        stack.enter_context(torch.autocast("cpu", enabled=False))
        if torch.cuda.is_available():
            stack.enter_context(torch.autocast("cuda", enabled=False))
        yield


def _check_parts(net: object, operator: object, generator: object, stop_rule: object,
                 threads: object, perf: object, noise_sigma: object, **hooks: object) -> None:
    """:func:`fit`'s objects, before anything runs: each failed deep inside (``threads="2"``
    in the thread plan, ``stop_rule="auto"`` at its first update, ``callback=5`` after the
    first step, ``noise_sigma="0.1"`` in the stop rule; ``noise_sigma=5``, 1275 grey levels,
    not at all)."""
    for name, value, ok, what in (
            ("net", net, isinstance(net, nn.Module), "a torch.nn.Module"),
            ("operator", operator, isinstance(operator, nn.Module), "a torch.nn.Module"),
            ("generator", generator, generator is None or isinstance(generator, torch.Generator),
             "a torch.Generator (or None)"),
            ("stop_rule", stop_rule, stop_rule is None or isinstance(stop_rule, StopRule),
             "a dip.stopping.StopRule (or None)"),
            ("threads", threads, threads is None or isinstance(threads, numbers.Integral)
             and not isinstance(threads, bool) and threads >= 1, "a whole number >= 1 (or None)"),
            ("perf", perf, perf is None or isinstance(perf, Perf),
             "a dip.engine.Perf (or None)"),
            ("noise_sigma", noise_sigma, noise_sigma is None or (
                isinstance(noise_sigma, numbers.Real) and not isinstance(noise_sigma, bool)
                and 0 <= noise_sigma <= 1), "a number in [0, 1] (or None)"),
            *((name, hook, hook is None or callable(hook), "a function (or None)")
              for name, hook in hooks.items())):
        if not ok:
            raise InputError(f"fit(): {name} must be {what}, got {type(value).__name__} "
                             f"{value!r}"[:200])
    params = list(net.parameters())
    if not any(p.requires_grad for p in params):  # none, or all frozen
        raise InputError("fit(): net has no parameters to fit (none that requires grad)")
    if any(p.is_inference() for p in params):
        raise InputError(_MADE_IN_INFERENCE.format("net's weights"))
    other = next((p.dtype for p in params if p.dtype != torch.float32), None)
    if other is not None:  # a network made under another default dtype: a raw conv error
        raise InputError(f"fit(): net's weights must be float32, got {other} (net.float(), "
                         f"or dip.nets.build_net, which makes float32 ones)")


#: a tensor made under ``torch.inference_mode()``: autograd cannot save it for the backward pass
_MADE_IN_INFERENCE = ("fit(): {} were made under torch.inference_mode(), whose tensors autograd "
                      "cannot use; make them outside that block")


def _check_tensors(code: torch.Tensor, observation: torch.Tensor) -> None:
    """:func:`fit`'s tensors: float32, finite, on a real device, the code one network input
    ``(1, C, H, W)`` (the observation's shape is checked against ``operator(net(code))``'s at
    the first step: :class:`dip.engine.StepEngine`)."""
    for name, t in (("code", code), ("observation", observation)):
        if not isinstance(t, torch.Tensor):
            raise InputError(f"fit(): {name} must be a torch.Tensor, got {type(t).__name__}")
        wrong = ("float32" if t.dtype != torch.float32  # (float64 read 'not on meta' too)
                 else "one picture (1, C, H, W)" if name == "code" and (
                     t.dim() != 4 or t.shape[0] != 1)
                 else "on a device that holds its values, not 'meta'" if t.is_meta
                 else "of at least one pixel" if t.numel() == 0
                 else "dense (torch.strided)" if t.layout != torch.strided else None)
        if wrong:
            raise InputError(f"fit(): {name} must be {wrong}; got {t.dtype} {tuple(t.shape)} "
                             f"{'' if t.layout == torch.strided else f'{t.layout} '}"
                             f"on {t.device}")
        if t.requires_grad:
            raise InputError(f"fit(): {name} must not require grad (pass it detached)")
        if t.is_inference():
            raise InputError(_MADE_IN_INFERENCE.format(f"the {name}'s values"))
        if not bool(torch.isfinite(t).all()):
            raise InputError(f"fit(): {name} holds values that are not finite (NaN or inf)")
    highest = float(observation.max())
    if highest > 2:  # an operator of sums may make such values: a warning
        warnings.warn(f"fit(): the observation reaches {highest:g}, and the network's output "
                      f"is in [0, 1]: 8-bit pixels are divided by 255 first", DipWarning,
                      stacklevel=outside_dip())


def check_default_device() -> None:
    """dip makes its tensors on the CPU and moves them where its fit runs; a program that set
    torch's default device elsewhere (``torch.set_default_device``) would have them made there
    and a fit fail inside torch.

    Raises:
        InputError: torch's default device is not the CPU.
    """
    made = torch.get_default_device() if hasattr(torch, "get_default_device") \
        else torch.empty(0).device  # (torch 2.2)
    if made.type != "cpu":
        raise InputError(f"torch's default device is {made} (torch.set_default_device): dip "
                         f"places its own tensors; call torch.set_default_device(None) first")


def fit(net: nn.Module, code: torch.Tensor, operator: nn.Module, observation: torch.Tensor, *,
        iters: int, lr: float = 0.01, average: float = 0.99, perturb_std: float = 1 / 30,
        guard: float = 3.16, generator: torch.Generator | None = None,
        stop_rule: StopRule | None = None,
        metric: Callable[[torch.Tensor], float] | None = None, metrics_every: int = 10,
        callback: Callable[[Progress], None] | None = None, perf: Perf | None = None,
        schedule: str = "constant", lr_end: float = 0.0,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        noise_sigma: float | None = None, keep_on_interrupt: bool = False,
        threads: int | None = None) -> FitResult:
    """Fit ``net`` so that ``operator(net(code))`` matches ``observation``.

    Args:
        net, code, operator, observation, generator, stop_rule, metric, loss, noise_sigma:
            as the attributes of :class:`Member`.
        iters: the step budget (upper bound).
        lr: Adam's learning rate.
        average: weight of the exponential moving average of outputs (0: return the last).
        perturb_std: std of the Gaussian perturbation of ``code`` at each step.
        guard: a loss above ``guard`` × the previous step's loss (or not finite) restores the
            previous weights and Adam's moments and halves the rate (:class:`Guard`); 0
            disables.
        metrics_every: how often the history (and the PSNR peak) is sampled.
        callback: called with a :class:`Progress` after every step.
        perf: how steps run on the device (:func:`dip.engine.resolve_perf`); default: plain
            eager steps, with the kept allocator on the CPU.
        schedule: ``constant`` | ``cosine`` (from ``lr`` to ``lr_end`` over ``iters``); a
            schedule other than constant needs ``perf.graphs`` off.
        keep_on_interrupt: Ctrl-C (KeyboardInterrupt) ends the loop and the result so far is
            returned with ``stop_reason`` ``interrupted``; False (the default): it propagates,
            as any library call lets it.
        threads: CPU threads for the fit's operations; None: torch's current setting.

    Raises:
        InputError: an argument out of range, torch's default device not the CPU
            (:func:`check_default_device`), a tensor that is not one float32 picture
            ``(1, C, H, W)`` with finite values, a code that ``net`` cannot take or an
            observation of another shape than ``operator(net(code))`` (at the first step).
            An observation above 2 is warned of (:class:`dip.errors.DipWarning`): the
            network's output is in [0, 1], and an operator may sum it.
        RunError: the loss diverged and the guard could not recover, or a fit of
            :data:`LEARNS_WITHIN` steps or more learned nothing (``_Fit._learned_nothing``).
    """
    check_default_device()
    settings = _checked_settings(Settings(iters, lr, average, perturb_std, guard, metrics_every,
                                          schedule, lr_end))
    _check_parts(net, operator, generator, stop_rule, threads, perf, noise_sigma,
                 metric=metric, callback=callback, loss=loss)
    _check_tensors(code, observation)
    member = Member(net, code, operator, observation, generator, stop_rule, metric, loss,
                    noise_sigma)
    with _callers_parts():
        outcome, = fit_group([member], settings, perf=perf, threads=threads,
                             keep_on_interrupt=keep_on_interrupt,
                             callback=None if callback is None else lambda i, p: callback(p))
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


@contextmanager
def _callers_parts() -> Iterator[None]:
    """torch's error for :func:`fit`'s parts that do not fit together, which the step engine
    marks at the first step (a code of other channels than the net takes, a mask of another
    size than its output), as the caller's mistake: an InputError saying which call failed."""
    try:
        yield
    except RuntimeError as exc:
        what = getattr(exc, "dip_failed_call", None)
        if what is None:
            raise
        said = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
        raise InputError(f"fit(): {what} failed at the first step: {said}") from exc


@autograd_on()
def fit_group(members: Sequence[Member | Callable[[], Member]], settings: Settings, *,
              perf: Perf | None = None, threads: int | None = None,
              callback: Callable[[int, Progress], None] | None = None,
              keep_on_interrupt: bool = False, at_once: int | None = None,
              adapt_threads: bool = False) -> list[FitResult | RunError | None]:
    """Fit several independent members at once: restarts of one image, tiles, batch jobs.

    Members share nothing but the settings and the cores: each has its own network, Adam,
    divergence guard, stop rule and estimate, and its result does not depend on which other
    members share its step (on the CPU each member's operations run on one thread, so its
    arithmetic is the same alone or in a group: :mod:`dip.threads`). With ``perf.stack`` (on
    CUDA by default) the members alive at once take each step together as one stack
    (:class:`dip.stack.StackedEngine`; the same arithmetic up to float rounding, and nothing
    of one member reaches another). A member that has stopped stops costing.
    ``callback(index, progress)`` is called after each member's step (one call at a time).

    Args:
        members: each a :class:`Member`, or a function that builds one when its turn comes
            (the many tiles of a large photo are built, fitted and released a few at a time).
        at_once: at most this many members exist at a time (None: all); on the CPU at least
            one per worker thread.
        adapt_threads: a member fitted alone on several CPU threads drops to the threads that
            other processes leave free while it runs, and climbs back when they are idle
            (:class:`dip.threads.Neighbours`; each change is in the result's
            ``thread_changes``). Without it the threads stay as they are: the same image
            whatever the machine's load.

    Returns:
        per member, its :class:`FitResult`, the :class:`RunError` that ended it (a diverging
        member ends alone; the others go on), or None for one that an interruption kept from
        starting.

    Raises:
        KeyboardInterrupt: Ctrl-C, unless ``keep_on_interrupt`` (then every member started
            returns what it has, ``stop_reason`` ``interrupted``).
    """
    if not members:
        return []
    check_schedule(settings.schedule)
    sources = list(members)
    if not isinstance(sources[0], Member):
        sources[0] = sources[0]()
    device = sources[0].code.device
    if perf is None:
        perf = Perf(keep_cpu_memory=device.type == "cpu")
    live = len(sources) if at_once is None else max(1, min(at_once, len(sources)))
    cpu = device.type == "cpu"
    scheduler, intra = _scheduler(sources, settings, perf, live, threads, callback, cpu,
                                  adapt_threads and cpu)
    with kept_cpu_memory() if perf.keep_cpu_memory else contextlib.nullcontext(), \
            _intra_op_threads(intra if cpu else None):
        scheduler.run(keep_on_interrupt)
    for outcome in scheduler.outcomes if cpu else []:
        if isinstance(outcome, FitResult):
            outcome.threads = intra
    return scheduler.outcomes


def _scheduler(sources: list, settings: Settings, perf: Perf, live: int, threads: int | None,
               callback: Callable[[int, Progress], None] | None, cpu: bool,
               adapt_threads: bool) -> tuple[_Scheduler | _Stacks, int]:
    """How a group's members step (and the intra-op threads for it): in stacks of up to
    ``live`` (perf.stack) on every thread, or side by side, a worker per core on the CPU
    (one thread each: :mod:`dip.threads`) and one after another on an accelerator."""
    threads = threads or torch.get_num_threads()
    # a stack runs one forward pass per step; SURE's members (two each) and DeepRED's (a
    # denoiser between steps) step side by side
    if perf.stack and live > 1 and not any(
            isinstance(m, Member) and (m.sure is not None or m.red is not None)
            for m in sources):
        return _Stacks(sources, settings, perf, live, callback), threads
    lanes = plan_lanes(live, threads)
    workers = lanes.workers if cpu else 1
    scheduler = _Scheduler(sources, lambda i, m: _Fit(i, m, settings, perf), workers,
                           max(live, workers), callback)
    if adapt_threads and workers == 1 and lanes.intra > 1:
        scheduler.watch, scheduler.most = Neighbours(), lanes.intra
    return scheduler, lanes.intra


@contextmanager
def _intra_op_threads(threads: int | None) -> Iterator[None]:
    """torch's (process-wide) intra-op threads set to ``threads`` while inside."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


class Guard:
    """The divergence guard (the notebooks' "falling back to previous checkpoint"): Adam
    sometimes takes a step that wrecks the fit. A step whose loss is not finite or above
    ``threshold`` times the last accepted one is undone -- weights and Adam's moments -- and
    retried at half the learning rate.

    Restoring the last good state and retrying at the same rate can retry the same bad step
    forever (the same weights, moments and rate; only the code's perturbation differs); at half
    the rate each time, the step shrinks until it is safe. The rate doubles back after every
    :data:`BACKOFF_RECOVERY_STEPS` accepted steps, so a transient spike costs the fit only a
    short slower stretch. ``threshold`` 0 turns the guard off.
    """

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.factor, self.in_a_row, self.accepted = 1.0, 0, 0
        self.last_loss = self.first_loss = float("inf")

    def accepts(self, loss: float, step: int) -> bool:
        """Judge the loss of the weights step ``step`` started from.

        Raises:
            RunError: :data:`MAX_CONSECUTIVE_RESTORES` restores in a row did not make the
                loss a number.
        """
        if self.threshold and (not math.isfinite(loss) or loss > self.threshold * self.last_loss):
            if math.isfinite(loss) and self.in_a_row == MAX_CONSECUTIVE_RESTORES:
                # A step at 2**-20 of the rate moves the weights next to nothing, so the rise
                # is not the step's: the loss it is measured against was luck (a first loss far
                # under the next ones: dip's own result fitted again with the same seed went
                # 1.7e-4 -> 7.3e-3 at every rate, and ended in an error). It is accepted, as
                # the new reference, at the whole rate again.
                self.factor = 1.0
                self.first_loss = max(self.first_loss, loss)  # the start, as luck had it not
            else:
                self.in_a_row += 1
                self.factor /= 2
                self.accepted = 0
                if self.in_a_row > MAX_CONSECUTIVE_RESTORES:
                    raise RunError(f"the fit diverged at step {step} and did not recover after "
                                   f"{MAX_CONSECUTIVE_RESTORES} restores at ever lower learning "
                                   f"rates; try a lower {{arg:optim.lr}}")
                return False
        self.in_a_row = 0
        if self.first_loss == float("inf"):
            self.first_loss = loss
        if self.factor < 1:
            self.accepted += 1
            if self.accepted % BACKOFF_RECOVERY_STEPS == 0:
                self.factor = min(1.0, self.factor * 2)
        self.last_loss = loss
        return True


@dataclass
class _Trace:
    """The curves a fit records every ``metrics_every`` steps, and the PSNR peak."""

    metric: Callable[[torch.Tensor], float] | None
    history: dict[str, list] = field(
        default_factory=lambda: {"step": [], "loss": [], "psnr": [], "restores": []})
    psnr: float | None = None
    peak_psnr: float | None = None
    peak_iteration: int | None = None

    def sample(self, step: int, loss: float, stop_rule: StopRule,
               estimate: torch.Tensor) -> None:
        self.history["step"].append(step)
        self.history["loss"].append(loss)
        if stop_rule.variance is not None:
            self.history.setdefault("variance", []).append(float(stop_rule.variance))
        if self.metric is not None:
            # the kind of image that will be returned: the rule's candidate if it has one
            # (e.g. the window mean), else the output average
            candidate = stop_rule.candidate
            self.psnr = _measured(self.metric(candidate if candidate is not None
                                              else estimate))
            self.history["psnr"].append(self.psnr)
            if self.peak_psnr is None or self.psnr > self.peak_psnr:
                self.peak_psnr, self.peak_iteration = self.psnr, step


def _measured(value: object) -> float:
    """A metric's value as a float (a 0-d tensor's too); anything else stored in the
    history would end up in a record that JSON cannot write, or make no peak."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or math.isnan(value):
        raise InputError(f"fit(): metric(estimate) must return a number, got "
                         f"{type(value).__name__} {value!r}"[:200])
    return float(value)


class _Fit:
    """One member's fit in progress: its engine, guard, estimate, stop rule and trace.
    :meth:`advance` takes one step (accepted, or undone by the guard); only one thread at a
    time advances a member."""

    def __init__(self, index: int, m: Member, settings: Settings, perf: Perf,
                 own_engine: bool = True) -> None:
        self.index, self.settings = index, settings
        self.stop_rule = m.stop_rule or FixedBudget()
        m.net.train()  # the paper's generator always runs BatchNorm on the batch's statistics
        # after the checks: it may measure the observation
        self.stop_rule.start(m.observation, noise_sigma=m.noise_sigma)
        # a member of a stack (:class:`_Stacks`) steps in its stack's engine instead
        self.engine = (StepEngine(m.net, m.code, m.operator, m.observation, lr=settings.lr,
                                  perturb_std=settings.perturb_std, generator=m.generator,
                                  perf=perf, checkpoint=settings.guard > 0, loss=m.loss,
                                  sure=m.sure, red=m.red)
                       if own_engine else None)
        self.member = None if own_engine else m
        # what a stack compares (its network's repr and shapes): once, not at every repack
        self.shape = None if own_engine else signature(m.net, m.code)
        self.judge, self.trace = Guard(settings.guard), _Trace(m.metric)
        self.estimate: torch.Tensor | None = None
        self.step, self.stop_reason = 0, "budget"
        self.error: RunError | None = None
        self.done = False
        self.thread_changes: list[tuple[int, int]] = []

    def rate(self) -> float:
        s = self.settings
        base = SCHEDULES[s.schedule](s.lr, s.lr_end, self.step, s.iters)
        return base * self.judge.factor

    def advance(self) -> Progress | None:
        """One step; returns the progress to report (None when the guard undid the step)."""
        self.engine.set_lr(self.rate())
        out, loss = self.engine.step()
        return self.settle(out, loss.item(), self.engine.accept, self.engine.restore)

    def settle(self, out: torch.Tensor, loss_value: float, accept: Callable[[], None],
               undo: Callable[[], None]) -> Progress | None:
        """The guard's verdict on a step that gave ``out`` with ``loss_value`` (``accept()``
        or ``undo()`` tells the engine), and, when accepted, the average, the stop rule and
        the trace; returns the progress to report (None when the guard undid the step)."""
        s = self.settings
        if not self.judge.accepts(loss_value, self.step + 1):
            undo()
            self.trace.history["restores"].append(self.step + 1)
            return None
        accept()
        self.step += 1
        with torch.no_grad():  # the paper's exponential average of the outputs
            if s.average > 0 and self.estimate is not None:
                self.estimate.mul_(s.average).add_(out, alpha=1 - s.average)
            else:
                self.estimate = out.clone()
        stop = self.stop_rule.update(self.step, out, self.estimate)
        if self.step % s.metrics_every == 0 or self.step == s.iters or stop:
            self.trace.sample(self.step, loss_value, self.stop_rule, self.estimate)
        if stop:
            self.stop_reason = self.stop_rule.name
        self.done = stop or self.step >= s.iters
        return Progress(self.step, s.iters, loss_value, self.estimate, self.trace.psnr, out)

    def release(self) -> None:
        """Drop the network, its optimiser and the rule's buffers (the outcome is taken)."""
        self.engine = self.stop_rule = self.estimate = self.member = None

    def _learned_nothing(self) -> RunError | None:
        """A fit of :data:`LEARNS_WITHIN` steps or more whose last loss is no lower than its
        first step's, or not half of it while the guard undid a step for every two it kept:
        the output saturated, or the guard kept undoing a rate too large (a grey image, not a
        result). A fit on a picture with little to learn still lowers its loss a little, and
        one the guard undoes often near a loss of zero (inpainting) has halved it long ago."""
        judge, undone = self.judge, len(self.trace.history["restores"])
        first, last, often = judge.first_loss, judge.last_loss, 2 * undone >= self.step
        # (a loss of 0 from the first step: nothing to fit, as a tile wholly inside a hole)
        if self.step < LEARNS_WITHIN or first <= 0 or (
                last < first and not (often and last > first / 2)):
            return None
        how = (f"is not half its first step's ({first:.4g}), and the guard undid {undone} "
               f"steps" if last < first else f"is no lower than its first step's ({first:.4g})")
        return RunError(f"the fit learned nothing: after {self.step} steps its loss "
                        f"({last:.4g}) {how}; the learning rate is likely too large: try a "
                        f"lower {{arg:optim.lr}}")

    def outcome(self) -> FitResult | RunError:
        if self.error is not None:
            return self.error
        if self.estimate is None:
            return RunError("the fit was stopped before its first step; nothing to return")
        returned_iteration, image = self.step, self.estimate
        chosen = self.stop_rule.chosen  # one read: a rule may read its choice from the device
        if chosen is not None:
            returned_iteration, image = chosen
        # With a stop rule the returned image is the rule's choice even when the budget ran
        # out first: the best moment it found so far (if it found none, the output average).
        if not bool(torch.isfinite(image).all()):  # diverged with the guard off
            return RunError(f"the fit diverged (its output is not a number at step "
                            f"{returned_iteration}); try a lower {{arg:optim.lr}}, or the "
                            f"divergence guard ({{arg:optim.guard=3.16}}, its default)")
        stuck = self._learned_nothing()
        if stuck is not None:
            return stuck
        trace = self.trace
        return FitResult(image.detach().clamp(0, 1), self.step, returned_iteration,
                         self.stop_reason, trace.peak_psnr, trace.peak_iteration,
                         {k: v for k, v in trace.history.items() if v or k != "psnr"},
                         self.stop_rule.noise_level, self.thread_changes)


class _Scheduler:
    """Steps members until each is done, ``workers`` at a time: in the calling thread when
    ``workers`` is 1, else on that many threads. Members wait in a queue and a worker takes
    the next one for each step, so no worker idles while a member waits; at most ``at_once``
    members exist, the next one built when one finishes (and its memory released)."""

    def __init__(self, sources: list[Member | Callable[[], Member]],
                 make: Callable[[int, Member], _Fit], workers: int, at_once: int,
                 callback: Callable[[int, Progress], None] | None) -> None:
        self.sources, self.make, self.workers, self.at_once = sources, make, workers, at_once
        self.callback = callback
        self.outcomes: list[FitResult | RunError | None] = [None] * len(sources)
        self.waiting: collections.deque[_Fit] = collections.deque()
        self.started = self.alive = 0
        self.held: set[_Fit] = set()  # being stepped by a worker now
        self.lock = threading.Lock()  # the queue, the counts, one callback at a time
        self.building = threading.Lock()
        self.stopping = threading.Event()
        self.failure: BaseException | None = None
        self.watch: Neighbours | None = None  # set: adapt one fit's threads to the load
        self.most = 1

    def _take(self) -> _Fit | None:
        """The next member to step (a new one when there is room), or None: nothing left."""
        with self.lock:
            # fill the room first: every member that may exist is stepped in turn
            if self.alive >= self.at_once or self.started >= len(self.sources):
                if not self.waiting:
                    return None
                f = self.waiting.popleft()
                self.held.add(f)
                return f
            index, self.started, self.alive = self.started, self.started + 1, self.alive + 1
        source = self.sources[index]
        self.sources[index] = None  # the member lives in its fit from now on
        # one build at a time: a member's weights are drawn from torch's global generator,
        # seeded for that member (two at once would draw from each other's seeds)
        with self.building:
            f = self.make(index, source if isinstance(source, Member) else source())
        with self.lock:
            self.held.add(f)
        return f

    def _step(self, f: _Fit) -> None:
        try:
            progress = f.advance()
            if progress is not None and self.callback is not None:
                with self.lock:
                    self.callback(f.index, progress)
        except RunError as exc:  # this member ends; the others go on
            f.error, f.done = exc, True
        with self.lock:
            self.held.discard(f)
            if f.done:
                self.outcomes[f.index] = f.outcome()
                f.release()
                self.alive -= 1
            else:
                self.waiting.append(f)

    def _work(self) -> None:
        while not self.stopping.is_set():
            f = self._take()
            if f is None:
                return
            self._step(f)
            if self.watch is not None and self.watch.due():
                self._adapt()

    def _adapt(self) -> None:
        """The threads the neighbours leave free (:class:`dip.threads.Neighbours`)."""
        threads = min(self.most, self.watch.free())
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
            for f in [*self.waiting, *self.held]:
                f.thread_changes.append((f.step, threads))

    def run(self, keep_on_interrupt: bool) -> None:
        try:
            if self.workers <= 1:
                self._work()
            else:
                self._run_threads()
        except KeyboardInterrupt:
            self.stopping.set()
            _interrupted([*self.waiting, *self.held], self.outcomes, keep_on_interrupt)

    def _run_threads(self) -> None:
        threads = [threading.Thread(target=self._guarded_work, daemon=True)
                   for _ in range(self.workers)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.1)  # short waits: Ctrl-C reaches the main thread between them
        finally:
            self.stopping.set()
            for t in threads:
                t.join()
        if self.failure is not None:
            raise self.failure

    def _guarded_work(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # out of memory, a bug: stop the group, re-raise
            self.failure = exc
            self.stopping.set()


def _interrupted(unfinished: list[_Fit], outcomes: list, keep_on_interrupt: bool) -> None:
    """Ctrl-C: keep what the members have, when the caller asked (the caller decides whether
    to write it); else, or with nothing to keep, the KeyboardInterrupt goes on (call this
    inside its ``except``)."""
    if not keep_on_interrupt or (all(f.estimate is None for f in unfinished)
                                 and not any(isinstance(o, FitResult) for o in outcomes)):
        raise
    for f in unfinished:
        f.stop_reason, f.done = "interrupted", True
        outcomes[f.index] = f.outcome()


class _Stacks:
    """Steps members in stacks (:class:`dip.stack.StackedEngine`): up to ``at_once`` members
    of one shape take every step together. A member that finishes leaves its row idle until a
    quarter of the stack is idle; then the stack is packed again from the members still
    running and the next ones waiting (each carries its weights, Adam's moments and the guard's
    snapshot along), so a finished member soon stops costing and new ones (the next tiles)
    take its place. Members of another shape (:func:`dip.stack.signature`) wait, at most
    ``at_once`` of them, for a stack of their own once this one is done. The members' own
    networks are not trained in place: their weights are copied into the stack."""


    def __init__(self, sources: list[Member | Callable[[], Member]], settings: Settings,
                 perf: Perf, at_once: int,
                 callback: Callable[[int, Progress], None] | None) -> None:
        self.sources, self.settings, self.perf = sources, settings, perf
        self.at_once, self.callback = at_once, callback
        self.outcomes: list[FitResult | RunError | None] = [None] * len(sources)
        self.started = 0
        self.held_back: list[_Fit] = []  # built, but of another shape than the stack
        self.fits: list[_Fit | None] = []  # the stack's rows (None: finished)
        self.engine: StackedEngine | None = None

    def _next(self) -> _Fit | None:
        if self.started >= len(self.sources):
            return None
        index, self.started = self.started, self.started + 1
        source, self.sources[index] = self.sources[index], None
        # a member's weights are drawn when it is built (from its own seed: build_net)
        member = source if isinstance(source, Member) else source()
        return _Fit(index, member, self.settings, self.perf, own_engine=False)

    def _pack(self) -> bool:
        """Pack the stack again when a quarter of it is idle; False when nothing is left."""
        live = [f for f in self.fits if f is not None]
        idle = len(self.fits) - len(live)
        if self.engine is not None and idle < max(1, len(self.fits) // 4):
            return True
        carried = {id(f): self.engine.carry(i) for i, f in enumerate(self.fits)
                   if f is not None} if self.engine is not None else {}
        self.engine = None  # release the old stack before the new one is built
        if not live and self.held_back:  # the next shape's turn
            live.append(self.held_back.pop(0))
        shape = live[0].shape if live else None
        for f in [f for f in self.held_back if f.shape == shape][:self.at_once - len(live)]:
            self.held_back.remove(f)
            live.append(f)
        while len(live) < self.at_once and len(self.held_back) < self.at_once:
            f = self._next()
            if f is None:
                break
            if shape is not None and f.shape != shape:
                self.held_back.append(f)
                continue
            shape = shape or f.shape
            live.append(f)
        self.fits = live
        if not live:
            return False
        slots = [Slot(f.member.net, f.member.code, f.member.operator, f.member.observation,
                      f.member.loss, f.member.generator, carried.get(id(f)))
                 for f in live]
        self.engine = StackedEngine(slots, [f.rate() for f in live],
                                    perturb_std=self.settings.perturb_std, perf=self.perf,
                                    checkpoint=self.settings.guard > 0)
        return True

    def _step(self) -> None:
        engine, fits = self.engine, self.fits
        engine.set_rates([f.rate() if f is not None else 0.0 for f in fits])
        out, losses = engine.step()
        values = losses.tolist()  # one read-back for the whole stack
        for i, f in enumerate(fits):
            if f is None:
                continue
            try:
                progress = f.settle(out[i], values[i], lambda i=i: engine.accept(i),
                                    lambda i=i: engine.reject(i))
                if progress is not None and self.callback is not None:
                    self.callback(f.index, progress)
            except RunError as exc:  # this member ends; the others go on
                f.error, f.done = exc, True
            if f.done:
                self.outcomes[f.index] = f.outcome()
                f.release()
                fits[i] = None
        engine.commit()

    def run(self, keep_on_interrupt: bool) -> None:
        try:
            while self._pack():
                self._step()
        except KeyboardInterrupt:  # members held back have not started: None
            _interrupted([f for f in self.fits if f is not None], self.outcomes,
                         keep_on_interrupt)
