"""Denoising: the observation is the image itself, plus noise the prior must not fit.

    A = identity,  y = x + n

The stop rule's noise floor (the discrepancy principle, configs/denoise.yaml) is this task's:
it compares the estimate with the input itself, which only here is the image plus noise.
"""

from __future__ import annotations

from typing import Any

import torch

from dip import image, metrics, operators
from dip.request import Option
from dip.tasks import Corruption, Inputs, Problem, Task, register


def _add_noise(picture: image.Picture, sigma: float, generator: torch.Generator,
               output: Any) -> tuple[image.Picture, dict, dict]:
    return picture.with_pixels(operators.add_noise(picture.pixels, sigma, generator)), {}, {}


class Denoise(Task):
    name = "denoise"
    help = "Remove noise from INPUT."
    owns = {"stop.noise_floor": 0.0}
    corruptions = (
        Corruption(Option("noise", kind="float", minimum=0, metavar="SIGMA",
                          help="Add Gaussian noise of std SIGMA (0-255 units, e.g. 25)."),
                   _add_noise, after=("blur",), order=10),
    )

    def problem(self, inputs: Inputs, cfg: Any) -> Problem:
        picture = inputs.picture
        return Problem(operators.Identity(), picture.pixels, picture.size)

    def metrics(self, result: torch.Tensor, ref: torch.Tensor, inputs: Inputs,
                cfg: Any) -> dict[str, Any]:
        return {"input_psnr": metrics.psnr(inputs.picture.pixels, ref)}

    def describe(self, m: dict[str, Any]) -> str:
        return f"noisy input {m['input_psnr']:.2f} dB"


register(Denoise())
