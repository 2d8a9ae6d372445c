"""The one optimisation loop of Deep Image Prior, for every task.

    θ* = argmin_θ ‖A(f_θ(z + ε_t)) − y‖²,  ε_t ~ N(0, σ_z²)          (paper, Eq. 2 and Sec. 4)

The returned image is an exponential moving average of the outputs f_θ(z) (the paper's
"averaged outputs"), or the last output when averaging is off, or the image a stop rule chose.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from dip.engine import Perf, StepEngine, kept_cpu_memory
from dip.errors import ConfigError, RunError
from dip.stopping import FixedBudget, StopRule

#: a divergence that the guard cannot undo in this many consecutive tries ends the run; each
#: try halves the learning rate, so the last one steps at 2**-20 of it
MAX_CONSECUTIVE_RESTORES = 20
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


def fit(net: nn.Module, code: torch.Tensor, operator: nn.Module, observation: torch.Tensor, *,
        iters: int, lr: float = 0.01, average: float = 0.99, perturb_std: float = 1 / 30,
        guard: float = 3.16, generator: torch.Generator | None = None,
        stop_rule: StopRule | None = None,
        metric: Callable[[torch.Tensor], float] | None = None, metrics_every: int = 10,
        callback: Callable[[Progress], None] | None = None, perf: Perf | None = None,
        schedule: str = "constant", lr_end: float = 0.0,
        loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        noise_sigma: float | None = None, keep_on_interrupt: bool = False) -> FitResult:
    """Fit ``net`` so that ``operator(net(code))`` matches ``observation``.

    Args:
        net: the generator, on the same device as ``code``.
        code: the fixed input ``z``, ``(1, C_z, H, W)``.
        operator: the corruption ``A`` (an ``nn.Module``).
        observation: ``y``, shaped like ``operator(net(code))``.
        iters: the step budget (upper bound).
        lr: Adam's learning rate.
        average: weight of the exponential moving average of outputs (0: return the last).
        perturb_std: std of the Gaussian perturbation of ``code`` at each step.
        guard: a loss above ``guard`` × the previous step's loss (or not finite) restores the
            previous weights and resets Adam's moments; 0 disables.
        generator: source of the perturbation noise (seeded by the caller).
        stop_rule: decides when to stop (default: run the whole budget).
        metric: ``estimate -> PSNR`` against a reference, evaluated every ``metrics_every``
            steps to record the peak; None when there is no reference.
        callback: called with a :class:`Progress` after every step.
        perf: how steps run on the device (:func:`dip.engine.resolve_perf`); default: plain
            eager steps, with the kept allocator on the CPU.
        schedule: ``constant`` | ``cosine`` (from ``lr`` to ``lr_end`` over ``iters``); a
            schedule other than constant needs ``perf.graphs`` off.
        loss: ``loss(A(x), y)``, a 0-d tensor; default the mean squared error (the paper's).
        noise_sigma: the observation's noise level when known (in [0, 1] units), for a stop
            rule that uses it; None: the rule estimates it.
        keep_on_interrupt: Ctrl-C (KeyboardInterrupt) ends the loop and the result so far is
            returned with ``stop_reason`` ``interrupted``; False (the default): it propagates,
            as any library call lets it.

    Raises:
        RunError: the loss diverged and the guard could not recover.
    """
    stop_rule = stop_rule or FixedBudget()
    if perf is None:
        perf = Perf(keep_cpu_memory=code.device.type == "cpu")
    net.train()  # the paper's generator always runs BatchNorm on the batch's statistics
    check_schedule(schedule)
    rate = None
    if schedule != "constant":
        def rate(t: int) -> float:
            return SCHEDULES[schedule](lr, lr_end, t, iters)
    # after the checks: it may measure the observation
    stop_rule.start(observation, noise_sigma=noise_sigma)
    engine = StepEngine(net, code, operator, observation, lr=lr, perturb_std=perturb_std,
                        generator=generator, perf=perf, checkpoint=guard > 0, loss=loss)
    with kept_cpu_memory() if perf.keep_cpu_memory else contextlib.nullcontext():
        return _loop(engine, iters=iters, average=average, guard=guard, stop_rule=stop_rule,
                     metric=metric, metrics_every=metrics_every, callback=callback, rate=rate,
                     keep_on_interrupt=keep_on_interrupt)


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
        self.last_loss = float("inf")

    def accepts(self, loss: float, step: int) -> bool:
        """Judge the loss of the weights step ``step`` started from.

        Raises:
            RunError: :data:`MAX_CONSECUTIVE_RESTORES` restores in a row did not help.
        """
        if self.threshold and (not math.isfinite(loss) or loss > self.threshold * self.last_loss):
            self.in_a_row += 1
            self.factor /= 2
            self.accepted = 0
            if self.in_a_row > MAX_CONSECUTIVE_RESTORES:
                raise RunError(f"the fit diverged at step {step} and did not recover after "
                               f"{MAX_CONSECUTIVE_RESTORES} restores at ever lower learning "
                               f"rates; try a lower {{arg:optim.lr}}")
            return False
        self.in_a_row = 0
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
            self.psnr = self.metric(candidate if candidate is not None else estimate)
            self.history["psnr"].append(self.psnr)
            if self.peak_psnr is None or self.psnr > self.peak_psnr:
                self.peak_psnr, self.peak_iteration = self.psnr, step


def _loop(engine: StepEngine, *, iters: int, average: float, guard: float, stop_rule: StopRule,
          metric: Callable[[torch.Tensor], float] | None, metrics_every: int,
          callback: Callable[[Progress], None] | None,
          rate: Callable[[int], float] | None, keep_on_interrupt: bool) -> FitResult:
    estimate: torch.Tensor | None = None
    judge, trace, base_lr = Guard(guard), _Trace(metric), engine.lr
    step, stop_reason = 0, "budget"
    try:
        while step < iters:
            engine.set_lr((rate(step) if rate is not None else base_lr) * judge.factor)
            out, loss = engine.step()
            loss_value = loss.item()
            if not judge.accepts(loss_value, step + 1):
                engine.restore()
                trace.history["restores"].append(step + 1)
                continue
            engine.accept()
            step += 1
            with torch.no_grad():  # the paper's exponential average of the outputs
                if average > 0 and estimate is not None:
                    estimate.mul_(average).add_(out, alpha=1 - average)
                else:
                    estimate = out.clone()
            stop = stop_rule.update(step, out, estimate)
            if step % metrics_every == 0 or step == iters or stop:
                trace.sample(step, loss_value, stop_rule, estimate)
            if callback is not None:
                callback(Progress(step, iters, loss_value, estimate, trace.psnr, out))
            if stop:
                stop_reason = stop_rule.name
                break
    except KeyboardInterrupt:
        # Ctrl-C: keep what we have, when the caller asked; the caller decides whether to
        # write it.
        if not keep_on_interrupt or estimate is None:
            raise
        stop_reason = "interrupted"
    return _result(estimate, step, stop_reason, stop_rule, trace)


def _result(estimate: torch.Tensor | None, step: int, stop_reason: str, stop_rule: StopRule,
            trace: _Trace) -> FitResult:
    if estimate is None:
        raise RunError("the fit was stopped before its first step; nothing to return")
    returned_iteration, image = step, estimate
    chosen = stop_rule.chosen  # one read: a rule may read its choice back from the device
    if chosen is not None:
        returned_iteration, image = chosen
    # With a stop rule the returned image is the rule's choice even when the budget ran out
    # first: the best moment it found so far (if it found none, the output average).
    return FitResult(image.detach().clamp(0, 1), step, returned_iteration, stop_reason,
                     trace.peak_psnr, trace.peak_iteration,
                     {k: v for k, v in trace.history.items() if v or k != "psnr"})
