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
        schedule: str = "constant", lr_end: float = 0.0) -> FitResult:
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

    Raises:
        RunError: the loss diverged and the guard could not recover.
    """
    stop_rule = stop_rule or FixedBudget()
    if perf is None:
        perf = Perf(keep_cpu_memory=code.device.type == "cpu")
    net.train()  # the paper's generator always runs BatchNorm on the batch's statistics
    if schedule not in SCHEDULES:
        raise ConfigError(f"config key 'optim.schedule' must be one of "
                          f"{', '.join(SCHEDULES)}, got {schedule!r}")
    rate = None
    if schedule != "constant":
        def rate(t: int) -> float:
            return SCHEDULES[schedule](lr, lr_end, t, iters)
    stop_rule.start(observation)  # after the checks: it may measure the observation
    engine = StepEngine(net, code, operator, observation, lr=lr, perturb_std=perturb_std,
                        generator=generator, perf=perf, checkpoint=guard > 0)
    with kept_cpu_memory() if perf.keep_cpu_memory else contextlib.nullcontext():
        return _loop(engine, iters=iters, average=average, guard=guard, stop_rule=stop_rule,
                     metric=metric, metrics_every=metrics_every, callback=callback, rate=rate)


class Backoff:
    """The divergence guard's learning-rate factor: halved by every restore, doubled back after
    every :data:`BACKOFF_RECOVERY_STEPS` accepted steps until it is 1 again.

    Restoring the last good state and retrying at the same rate can retry the same bad step
    forever (the same weights, moments and rate; only the code's perturbation differs); at half
    the rate each time, the step shrinks until it is safe, and a transient spike costs the fit
    only a short slower stretch.
    """

    def __init__(self) -> None:
        self.factor, self.in_a_row, self.accepted = 1.0, 0, 0

    def failed(self) -> None:
        self.in_a_row += 1
        self.factor /= 2
        self.accepted = 0

    def passed(self) -> None:
        self.in_a_row = 0
        if self.factor < 1:
            self.accepted += 1
            if self.accepted % BACKOFF_RECOVERY_STEPS == 0:
                self.factor = min(1.0, self.factor * 2)


def _loop(engine: StepEngine, *, iters: int, average: float, guard: float, stop_rule: StopRule,
          metric: Callable[[torch.Tensor], float] | None, metrics_every: int,
          callback: Callable[[Progress], None] | None,
          rate: Callable[[int], float] | None) -> FitResult:
    estimate: torch.Tensor | None = None
    last_loss = float("inf")
    backoff = Backoff()
    base_lr = engine.lr
    peak_psnr, peak_iteration, psnr = None, None, None
    history: dict[str, list] = {"step": [], "loss": [], "psnr": [], "restores": []}
    step, stop_reason = 0, "budget"
    try:
        while step < iters:
            scheduled = rate(step) if rate is not None else base_lr
            engine.set_lr(scheduled * backoff.factor)
            out, loss = engine.step()
            loss_value = loss.item()

            # Divergence guard (the notebooks' "falling back to previous checkpoint"): Adam
            # sometimes takes a step that wrecks the fit. Undo it -- weights and Adam's
            # moments -- and retry at half the learning rate (Backoff).
            if guard > 0:
                if not math.isfinite(loss_value) or loss_value > guard * last_loss:
                    backoff.failed()
                    if backoff.in_a_row > MAX_CONSECUTIVE_RESTORES:
                        raise RunError(
                            f"the fit diverged at step {step + 1} and did not recover after "
                            f"{MAX_CONSECUTIVE_RESTORES} restores at ever lower learning "
                            f"rates; try a lower --set optim.lr")
                    engine.restore()
                    history["restores"].append(step + 1)
                    continue
                backoff.passed()
                engine.accept()
            last_loss = loss_value
            step += 1

            with torch.no_grad():
                if average > 0 and estimate is not None:
                    estimate.mul_(average).add_(out, alpha=1 - average)
                else:
                    estimate = out.clone()
            stop = stop_rule.update(step, out, estimate)
            if step % metrics_every == 0 or step == iters or stop:
                history["step"].append(step)
                history["loss"].append(loss_value)
                if stop_rule.variance is not None:
                    history.setdefault("variance", []).append(float(stop_rule.variance))
                if metric is not None:
                    # the kind of image that will be returned: the rule's candidate if it has
                    # one (e.g. the window mean), else the output average
                    candidate = stop_rule.candidate
                    psnr = metric(candidate if candidate is not None else estimate)
                    history["psnr"].append(psnr)
                    if peak_psnr is None or psnr > peak_psnr:
                        peak_psnr, peak_iteration = psnr, step
            if callback is not None:
                callback(Progress(step, iters, loss_value, estimate, psnr, out))
            if stop:
                stop_reason = stop_rule.name
                break
    except KeyboardInterrupt:
        # Ctrl-C: keep what we have; the caller decides whether to write it.
        stop_reason = "interrupted"

    if estimate is None:
        raise RunError("the fit was stopped before its first step; nothing to return")
    returned_iteration, image = step, estimate
    chosen = stop_rule.chosen  # one read: a rule may read its choice back from the device
    if chosen is not None:
        returned_iteration, image = chosen
    # With a stop rule the returned image is the rule's choice even when the budget ran out
    # first: the best moment it found so far (if it found none, the output average).
    return FitResult(image.detach().clamp(0, 1), step, returned_iteration, stop_reason,
                     peak_psnr, peak_iteration,
                     {k: v for k, v in history.items() if v or k != "psnr"})
