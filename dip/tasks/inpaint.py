"""Inpainting: the observation is the image with its holes zeroed.

    A = multiply by the known-pixel map,  y = the input's known pixels

The holes come from a mask image (white = fill, the convention of paint programs; or the
paper's white = keep) or from the input's own transparency (``mask: alpha``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from dip import image, metrics, operators
from dip.errors import InputError
from dip.request import Option
from dip.tasks import Corruption, Inputs, Problem, Task, register

#: ``mask=FROM_ALPHA``: the holes are the input's transparent pixels
FROM_ALPHA = "alpha"


def _drop_pixels(picture: image.Picture, fraction: float, generator: torch.Generator,
                 output: Path) -> tuple[image.Picture, dict, dict]:
    """Remove a fraction of the pixels; the mask (white = missing) is written beside."""
    pixels, known = operators.drop_pixels(picture.pixels, fraction, generator)
    mask_path = output.with_name(f"{output.stem}_mask.png")
    return picture.with_pixels(pixels), {"mask": (mask_path, image.Picture(1 - known))}, {}


class Inpaint(Task):
    name = "inpaint"
    help = "Fill the holes of INPUT marked by --mask."
    options = (
        Option("mask", kind="path", words=FROM_ALPHA, companion=True, record=True,
               metavar="FILE|alpha",
               help="Image of the same size: white (non-zero) = pixels to fill, black = keep "
                    "(the convention of OpenCV, scikit-image and paint programs). 'alpha': "
                    "fill the input's transparent pixels (a file named alpha: ./alpha)."),
        Option("mask_keeps", kind="flag", default=False, record=True,
               help="Read the mask the other way round: white = known pixels (the convention "
                    "of the Deep Image Prior paper's code)."),
    )
    corruptions = (
        Corruption(Option("drop_pixels", kind="float", metavar="P",
                          help="Remove a fraction P of the pixels; also writes "
                               "OUTPUT_mask.png (white = missing, ready for `dip inpaint "
                               "--mask`)."),
                   _drop_pixels, order=20),
    )

    def check(self, args: dict[str, Any]) -> None:
        if args.get("mask") is None:
            raise InputError("inpaint needs {arg:mask} (an image of the holes, or alpha)")

    def load(self, picture: image.Picture, args: dict[str, Any], cfg: Any,
             max_pixels: int) -> Inputs:
        mask = args["mask"]
        if mask != FROM_ALPHA:
            known = image.load_mask(mask, picture.size, keeps=args.get("mask_keeps", False),
                                    max_pixels=max_pixels)
            return Inputs(picture, {"known": known})
        if picture.alpha is None:
            raise InputError("{arg:mask=alpha}: the input has no alpha channel (transparency) "
                             "to take the holes from")
        known = (picture.alpha >= 0.5).float()
        if not known.any():
            raise InputError("{arg:mask=alpha}: every pixel of the input is transparent; "
                             "nothing to restore from")
        # The holes get filled: the result is opaque, not the input's alpha.
        return Inputs(image.Picture(picture.pixels, None, picture.bits), {"known": known})

    def problem(self, inputs: Inputs, cfg: Any) -> Problem:
        op = operators.Mask(inputs.data["known"])
        return Problem(op, op(inputs.picture.pixels), inputs.picture.size)

    def metrics(self, result: torch.Tensor, ref: torch.Tensor, inputs: Inputs,
                cfg: Any) -> dict[str, Any]:
        # the naive fill: every hole takes the mean known colour
        pixels, known = inputs.picture.pixels, inputs.data["known"]
        mean = (pixels * known).sum((2, 3), keepdim=True) / known.sum()
        return {"mean_fill_psnr": metrics.psnr(pixels * known + mean * (1 - known), ref)}

    def describe(self, m: dict[str, Any]) -> str:
        return f"holes filled with the mean colour {m['mean_fill_psnr']:.2f} dB"


register(Inpaint())
