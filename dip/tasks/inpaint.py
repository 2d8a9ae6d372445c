"""Inpainting: the observation is the image with its holes zeroed.

    A = multiply by the known-pixel map,  y = the input's known pixels

The holes come from a mask image (white = fill, the convention of paint programs; or the
paper's white = keep), from the input's own transparency (``mask: alpha``), or from a colour
the damage was painted over in (``--mask-color '#ff00ff'``: scratches, text, blemishes marked
in any paint program, JPEG-compressed or not).
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from dip import image, metrics, operators
from dip.errors import InputError, outside_dip
from dip.request import Option
from dip.tasks import Corruption, Inputs, Problem, Task, register

#: ``mask=FROM_ALPHA``: the holes are the input's transparent pixels
FROM_ALPHA = "alpha"
#: how far (0-255 units, YCbCr with luma at half weight) a pixel may be from the painted
#: colour: measured on 128 px photo crops painted with 2-6 px strokes and saved as JPEG at
#: quality 85 (4:2:0 chroma), 80 with the 1-pixel growth below catches 93-99 % of the painted
#: pixels; 60 misses most of a 2-pixel line, whose colour the subsampling halves
TOLERANCE = 80
#: the holes grow by this many pixels: JPEG's ringing around a stroke is not the photo either
GROWTH = 1


def parse_colour(text: str) -> tuple[int, int, int]:
    """``#ff00ff`` | ``ff00ff`` | ``255,0,255`` | a colour name Pillow knows (``magenta``)."""
    from PIL import ImageColor

    text = text.strip()
    parts = text.split(",")
    try:
        if len(parts) == 3:
            rgb = tuple(int(p) for p in parts)
            if all(0 <= v <= 255 for v in rgb):
                return rgb
            raise ValueError
        if len(text) == 6 and all(c in "0123456789abcdefABCDEF" for c in text):
            text = "#" + text
        return ImageColor.getrgb(text)[:3]
    except ValueError:
        raise InputError(f"cannot read the colour {text[:40]!r}; write it as #ff00ff, "
                         f"255,0,255 or a name such as magenta") from None


def _ycbcr(rgb: torch.Tensor) -> torch.Tensor:
    """``(..., 3)`` RGB in 0-255 -> Y, Cb, Cr (ITU-R BT.601, JPEG's: :data:`image.YCBCR`)."""
    return rgb @ image.YCBCR.to(rgb.dtype).T + torch.tensor([0.0, 128.0, 128.0],
                                                             dtype=rgb.dtype)


def painted_holes(pixels: torch.Tensor, colour: tuple[int, int, int],
                  tolerance: float) -> torch.Tensor:
    """The pixels painted in ``colour`` (within ``tolerance``), grown by :data:`GROWTH`.

    The distance is taken in YCbCr with the luma at half weight: JPEG keeps luma at full
    resolution but halves the chroma's, so a thin stroke keeps its chroma only in part.

    Shape:
        pixels: ``(1, C, H, W)`` in [0, 1]; returns ``(1, 1, H, W)`` bool, True = hole.
    """
    key = _ycbcr(torch.tensor(colour, dtype=torch.float32))
    values = pixels[0].permute(1, 2, 0).float() * 255
    # a grey pixel is the colour (v, v, v): no chroma, so a grey image never holds green paint
    # (matched by brightness alone, any mid-grey was green); and its luma is all there is to
    # tell paint from photo, so it counts in full (at half weight, white paint took every
    # grey level from 95 up)
    diff = _ycbcr(values.expand(*values.shape[:-1], 3)) - key
    luma = 1.0 if pixels.shape[1] == 1 else 0.5
    dist = torch.sqrt((diff[..., 0] * luma) ** 2 + diff[..., 1] ** 2 + diff[..., 2] ** 2)
    holes = (dist <= float(tolerance)).float()[None, None]  # (an int past 2**63: no overflow)
    size = 2 * GROWTH + 1
    return torch.nn.functional.max_pool2d(holes, size, stride=1, padding=GROWTH) > 0


def _drop_pixels(picture: image.Picture, fraction: float, generator: torch.Generator,
                 output: Path) -> tuple[image.Picture, dict, dict]:
    """Remove a fraction of the pixels; the mask (white = missing) is written beside."""
    pixels, known = operators.drop_pixels(picture.pixels, fraction, generator)
    mask_path = output.with_name(f"{output.stem}_mask.png")
    return picture.with_pixels(pixels), {"mask": (mask_path, image.Picture(1 - known))}, {}


def _warn_clear_holes(picture: image.Picture, known: torch.Tensor) -> None:
    """The result keeps the input's alpha: holes that are transparent in it stay unseen."""
    if picture.alpha is None:
        return
    clear = float(((picture.alpha < 0.5) & (known < 0.5)).sum() / (known < 0.5).sum())
    if clear > 0.5:
        warnings.warn(image.DipWarning(
            f"{clear:.0%} of the holes are transparent in the input, and the result keeps its "
            f"alpha: they will be filled but not seen ({{arg:mask=alpha}} fills the "
            f"transparent pixels and makes the result opaque)"), stacklevel=outside_dip())


class Inpaint(Task):
    name = "inpaint"
    help = "Fill the holes of INPUT marked by --mask (or painted in --mask-color)."
    options = (
        Option("mask", kind="path", words=FROM_ALPHA, companion=True, record=True,
               metavar="FILE|alpha",
               help="Image of the same size: white (50 % grey or lighter) = pixels to fill, "
                    "black = keep (the convention of OpenCV, scikit-image and paint programs). "
                    "'alpha': fill the input's transparent pixels (alpha under 50 %; the "
                    "others are kept, and the result is opaque; a file named alpha: ./alpha)."),
        Option("mask_keeps", kind="flag", default=False, record=True,
               help="Read the mask the other way round: white = known pixels (the convention "
                    "of the Deep Image Prior paper's code)."),
        Option("mask_color", metavar="COLOUR", record=True,
               help="Instead of --mask: fill every pixel painted in COLOUR ('#ff00ff', "
                    "255,0,255 or a name), e.g. scratches or text marked in a paint program; "
                    "JPEG-compressed paint is found too."),
        Option("mask_tolerance", kind="int", minimum=0, default=TOLERANCE, record=True,
               rerun=True, needs="mask_color",
               help="How far, in 0-255 units, a pixel's colour may be from --mask-color (the "
                    "holes also grow by a pixel for JPEG's ringing)."),
        Option("redraw_known", kind="flag", default=False, record=True, rerun=True,
               help="Return the network's image everywhere, the known pixels too (a noisy "
                    "photo with holes comes back smoothed). By default only the holes are "
                    "filled and every known pixel is kept exactly as given."),
    )
    corruptions = (
        Corruption(Option("drop_pixels", kind="float", metavar="P",
                          help="Remove a fraction P of the pixels (0 <= P < 1); also writes "
                               "OUTPUT_mask.png (white = missing, ready for `dip inpaint "
                               "--mask`)."),
                   _drop_pixels, order=20),
    )

    def check(self, args: dict[str, Any]) -> None:
        given = [name for name in ("mask", "mask_color") if args.get(name) is not None]
        if len(given) != 1:
            raise InputError("inpaint needs exactly one of {arg:mask} (an image of the holes, "
                             "or alpha) and {arg:mask_color} (the colour they are painted in)")
        if args.get("mask_color") is not None:
            parse_colour(args["mask_color"])  # a wrong colour costs no decode
        if args.get("mask_keeps") and args.get("mask") in (None, FROM_ALPHA):
            raise InputError("{arg:mask_keeps} reads a mask file the other way round; it has "
                             "no meaning with {arg:mask_color} or {arg:mask=alpha}")

    def load(self, picture: image.Picture, args: dict[str, Any], cfg: Any,
             max_pixels: int) -> Inputs:
        if args.get("mask_color") is not None:
            return self._painted(picture, args)
        mask = args["mask"]
        if mask != FROM_ALPHA:
            known = image.load_mask(mask, picture.size, keeps=args.get("mask_keeps", False),
                                    max_pixels=max_pixels)
            _warn_clear_holes(picture, known)
            return Inputs(picture, {"known": known})
        if picture.alpha is None:
            raise InputError("{arg:mask=alpha}: the input has no alpha channel (transparency) "
                             "to take the holes from")
        known = (picture.alpha >= 0.5).float()
        if not known.any():
            raise InputError("{arg:mask=alpha}: every pixel of the input is transparent; "
                             "nothing to restore from")
        if known.all():  # as an all-black mask file: a fit that changes nothing
            raise InputError("{arg:mask=alpha}: no pixel of the input is transparent; "
                             "nothing to fill")
        holes = 1 - float(known.mean())
        if holes > image.MOSTLY_HOLES:
            warnings.warn(image.DipWarning(f"{holes:.0%} of the input is transparent and "
                                           f"will be filled ({{arg:mask=alpha}})"),
                          stacklevel=outside_dip())
        # The holes get filled: the result is opaque, not the input's alpha.
        return Inputs(replace(picture, alpha=None), {"known": known})

    def _painted(self, picture: image.Picture, args: dict[str, Any]) -> Inputs:
        colour = parse_colour(args["mask_color"])
        holes = painted_holes(picture.pixels, colour, args["mask_tolerance"])
        if not holes.any():
            grey = picture.pixels.shape[1] == 1 and len(set(colour)) > 1
            hint = ("the input is grey: paint the holes in a grey shade, or give "
                    "{arg:mask}" if grey else "raise {arg:mask_tolerance}?")
            raise InputError(f"no pixel of the input is painted in {args['mask_color']} "
                             f"(within {args['mask_tolerance']}); nothing to fill ({hint})")
        if holes.all():
            raise InputError(f"every pixel of the input is near {args['mask_color']}; "
                             f"nothing to restore from (lower {{arg:mask_tolerance}})")
        share = float(holes.float().mean())
        if share > 0.5:  # paint is strokes and blemishes, not most of a photo
            warnings.warn(f"{share:.0%} of the input is within {args['mask_tolerance']} of "
                          f"{args['mask_color']} and will be filled; if the photo itself has "
                          f"that colour, lower the mask tolerance", image.DipWarning,
                          stacklevel=outside_dip())
        return Inputs(picture, {"known": (~holes).float()})

    def problem(self, inputs: Inputs, cfg: Any) -> Problem:
        op = operators.Mask(inputs.data["known"])
        return Problem(op, op(inputs.picture.pixels), inputs.picture.size)

    def solved(self, problem: Problem, args: dict[str, Any]) -> torch.Tensor | None:
        # a tile without a hole is its own result: every pixel of it is known, and a fit can
        # at best give it back (the loss is 0 only there), so none is run -- unless the known
        # pixels are to be redrawn too (the tiles with no hole were the input's, beside
        # redrawn ones)
        known = problem.operator.known
        if args.get("redraw_known") or not bool(known.bool().all()):
            return None
        return problem.observation

    def blind(self, problem: Problem) -> bool:
        return not bool(problem.operator.known.bool().any())  # a tile inside a hole

    def consistent(self, result: torch.Tensor, spread: torch.Tensor | None, inputs: Inputs,
                   args: dict[str, Any], cfg: Any, sample: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # What every inpainting tool does (biharmonic, Navier-Stokes, a paint program's fill):
        # the pixels the user gave come back as given. The paper returns the network's output
        # everywhere, and the fast preset fits the known pixels only to 38-40 dB: keeping them
        # gained 0.70-1.31 dB on the colour and grey crops' means (benchmarks/README.md,
        # "degradations.py"). The restarts' spread there is 0.
        if args.get("redraw_known"):
            return result, spread
        known = inputs.data["known"].to(result)
        pixels = inputs.picture.pixels.to(result)
        return (result * (1 - known) + pixels * known,
                None if spread is None else spread * (1 - known))

    def report_mask(self, inputs: Inputs) -> torch.Tensor | None:
        return inputs.data["known"]

    def metrics(self, result: torch.Tensor, ref: torch.Tensor, inputs: Inputs,
                cfg: Any) -> dict[str, Any]:
        # the naive fill: every hole takes the mean known colour
        pixels, known = inputs.picture.pixels, inputs.data["known"]
        mean = (pixels * known).sum((2, 3), keepdim=True) / known.sum()
        return {"mean_fill_psnr": metrics.psnr(pixels * known + mean * (1 - known), ref)}

    def describe(self, m: dict[str, Any]) -> str:
        return f"holes filled with the mean colour {m['mean_fill_psnr']:.2f} dB"


register(Inpaint())
