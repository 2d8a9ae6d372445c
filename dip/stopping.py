"""Stop rules: when to end the fit, and which estimate to return.

A rule sees the estimate after every step and answers "stop now?". A rule that prefers an
earlier estimate than the last one exposes it as ``chosen`` (step, image); otherwise the fit
returns its current estimate. New rules register in :data:`STOP_RULES`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dip.errors import ConfigError


class StopRule:
    """Interface. ``update`` is called once per step with the estimate the fit would return."""

    name = "base"

    def update(self, step: int, estimate: torch.Tensor) -> bool:
        """Return True to stop after ``step``."""
        raise NotImplementedError

    @property
    def chosen(self) -> tuple[int, torch.Tensor] | None:
        """``(step, image)`` the rule selected, or None to return the current estimate."""
        return None


class FixedBudget(StopRule):
    """Never stop early: run the whole ``optim.iters`` budget (the paper's protocol)."""

    name = "fixed"

    def update(self, step: int, estimate: torch.Tensor) -> bool:
        return False


STOP_RULES: dict[str, Callable[..., StopRule]] = {
    "fixed": FixedBudget,
}


def build_stop_rule(name: str, **options) -> StopRule:
    try:
        factory = STOP_RULES[name]
    except KeyError:
        raise ConfigError(f"unknown stop.rule {name!r}; known: {', '.join(STOP_RULES)}") from None
    return factory(**options)
