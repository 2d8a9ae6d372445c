"""Stein's unbiased risk estimate (SURE) as the denoising fit's objective.

Jo, Chun & Choi, "Rethinking Deep Image Prior for Denoising" (ICCV 2021): for ``y = x + n``
with white Gaussian noise of std σ, and a denoiser ``f`` applied to ``y``,

    SURE(f) = ‖f(y) − y‖² / N − σ² + 2σ² · div_y f(y) / N

is an unbiased estimate of ``‖f(y) − x‖² / N``, the error against the clean image that
nobody has (Stein 1981). Fitting the network to SURE instead of to ``‖f − y‖²`` charges it
for every bit of the noise it copies (the divergence: how much the output follows a change
of the input), so the fit no longer drifts towards the noise the way the paper's does.
That needs the network to be a function of ``y``: its input is the noisy image itself, not
a random code.

- The divergence is a Monte-Carlo estimate with one probe ``b ~ N(0, I)`` per step,
  ``bᵀ (f(y + εb) − f(y)) / ε`` (Ramani, Blu & Unser, "Monte-Carlo SURE", IEEE TIP 2008):
  a second forward pass, so a step costs about twice the paper's.
- Each step the input also gets fresh noise of a random std in ``[0, input_noise · σ)``
  (Jo et al.'s "eSURE" with a uniform level), and the fit returns its outputs' exponential
  average (their "stochastic temporal ensemble", dip's ``optim.average``).

Measured against the paper's objective and CBM3D: benchmarks/README.md, "degradations.py".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sure:
    """The SURE objective for noise of std ``sigma`` ([0, 1] units, > 0).

    Attributes:
        sigma: the noise's standard deviation (dip estimates it:
            :func:`dip.stopping.estimate_sigma`).
        input_noise: the input's extra noise per step has a std drawn uniformly from
            ``[0, input_noise · sigma)`` (Jo et al.: 0.5).
        epsilon: the divergence probe's step, ``epsilon · sigma`` (Jo et al.: 0.5).
    """

    sigma: float
    input_noise: float = 0.5
    epsilon: float = 0.5

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"SURE needs a noise level above 0, got {self.sigma}")

    @property
    def step(self) -> float:
        """ε, the probe's step, in [0, 1] units."""
        return self.epsilon * self.sigma

    def penalty(self, out: torch.Tensor, probed: torch.Tensor,
                probe: torch.Tensor) -> torch.Tensor:
        """``2σ² · div / N − σ²``: what SURE adds to the mean squared error ``‖out − y‖² / N``.

        Shape:
            out, probed, probe: ``(N, C, H, W)``: the output at the input, at the input plus
            ``step · probe``, and the probe. Returns a 0-d tensor.
        """
        divergence = torch.mean(probe * (probed - out)) / self.step
        return 2 * self.sigma ** 2 * divergence - self.sigma ** 2
