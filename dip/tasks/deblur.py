"""Deblurring with a known kernel: the observation is the image convolved with the kernel.

    A = convolution with the kernel (reflected borders, :class:`dip.operators.Blur`),
    y = the blurred (and usually slightly noisy) input

The kernel is a spec -- ``gaussian:SIGMA[,SIZE]``, ``box:SIZE``, ``motion:LENGTH,ANGLE``
(degrees, counter-clockwise from the x axis) -- or an image (PNG, ...) or NumPy ``.npy`` file
of non-negative weights, normalised to sum 1. ``dip corrupt --blur SPEC [--noise S]`` makes test
inputs with the same operator.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dip import image, metrics, operators
from dip.errors import InputError
from dip.request import Option
from dip.tasks import Corruption, Inputs, Problem, Task, jpeg_sigma, register

#: the parametric kernels, ``NAME:NUMBERS``
SPEC = r"(?i:gaussian|box|motion):.*"  # (GAUSSIAN:1 too, as superres takes LANCZOS)
#: the largest kernel side accepted (a typo such as box:900 must not run for hours); the
#: parametric kernels check it before they are built
MAX_KERNEL = operators.MAX_KERNEL


#: spec name -> (how to make it, the counts of numbers it takes, which must be whole, usage)
KERNELS = {
    "gaussian": (operators.gaussian_kernel, (1, 2), (1,), "gaussian:SIGMA or gaussian:SIGMA,SIZE"),
    "box": (operators.box_kernel, (1,), (0,), "box:SIZE"),
    "motion": (operators.motion_kernel, (2,), (), "motion:LENGTH,ANGLE"),
}


def parse_spec(spec: str) -> torch.Tensor:
    """``gaussian:1.6`` | ``gaussian:1.6,25`` | ``box:9`` | ``motion:15,30`` -> the kernel."""
    name, _, numbers = spec.partition(":")
    make, counts, whole, usage = KERNELS[name.lower()]
    try:
        values = [float(v) for v in numbers.split(",") if v.strip()]
    except ValueError:
        values = []
    if len(values) not in counts or any(i < len(values) and not values[i].is_integer()
                                        for i in whole):
        raise InputError(f"cannot read the kernel spec {spec[:40]!r}; write {usage} (whole "
                         f"numbers for sizes)")
    kernel = make(*[int(v) if i in whole else v for i, v in enumerate(values)])
    if max(kernel.shape) > MAX_KERNEL:
        raise InputError(f"kernel {spec[:40]!r} is {kernel.shape[1]}x{kernel.shape[0]}, larger "
                         f"than {MAX_KERNEL} pixels")
    if name == "gaussian" and kernel.shape[0] % 2 == 0:  # centred on index n // 2, as every
        # kernel is, it moved the picture half a pixel up and left (a blur made with a
        # centred one was deblurred at 18.01 dB with 12 where 13 gave 27.07)
        raise InputError(f"a Gaussian blur's size must be odd, to have a centre pixel; got "
                         f"{kernel.shape[0]} (use {kernel.shape[0] + 1})")
    return kernel


def _npy(path: Path) -> np.ndarray:
    """A ``.npy`` file's array; anything else is an InputError that says what the file is not
    (numpy's own message for a file that is not one advises loading it as a pickle)."""
    try:
        with path.open("rb") as f:
            if f.read(len(np.lib.format.MAGIC_PREFIX)) != np.lib.format.MAGIC_PREFIX:
                raise InputError(f"cannot read kernel {path}: not a .npy file (numpy's "
                                 f"format); give a 2-D array saved by numpy.save, or an image")
            f.seek(0)
            return np.load(f, allow_pickle=False)
    except ValueError as exc:
        why = "it holds Python objects, not numbers" if "pickle" in str(exc) else str(exc)
        raise InputError(f"cannot read kernel {path}: {why}") from None
    except OSError as exc:
        raise InputError(f"cannot read kernel {path}: {exc.strerror or exc}") from None


def read_kernel(path: Path) -> torch.Tensor:
    """A kernel file: ``.npy`` (a 2-D array) or an image (grey levels are the weights, as
    the image looks over black where it has transparency)."""
    if not os.path.lexists(path):  # 'foo' or 'gaussian1.6': a spec mistyped, or a file?
        raise InputError(f"kernel not found: {image.shown(path)} (a kernel is a file, .npy "
                         f"or an image, or a spec: gaussian:SIGMA, box:SIZE or "
                         f"motion:LENGTH,ANGLE)")
    if path.suffix.lower() == ".npy":
        array = _npy(image.regular_file(path, "kernel", "a .npy file"))
        if array.ndim != 2 or not array.size or not np.issubdtype(
                array.dtype, np.number) or np.iscomplexobj(
                array):  # (a complex one lost its imaginary part with a NumPy warning)
            raise InputError(f"kernel {path} must hold a 2-D array of numbers, got "
                             f"{array.dtype} of shape {array.shape}")
        if np.isfinite(array).all() and np.abs(array).max(initial=0) > np.finfo(np.float32).max:
            raise InputError(f"kernel {path} has weights past float32's range (3.4e38); "
                             f"scale it down (only the weights' proportions matter)")
        kernel = torch.from_numpy(array.astype(np.float32))
    else:
        try:
            picture = image.load_image(path, max_pixels=MAX_KERNEL ** 2, what="kernel")
        except image.TooLarge:  # its advice (--max-pixels) is not a kernel's
            raise InputError(f"kernel {path} is larger than {MAX_KERNEL}x{MAX_KERNEL} "
                             f"pixels") from None
        kernel = picture.values()[0].mean(0)  # the weights as the file holds them
        if picture.alpha is not None:  # seen over black, as a mask is: a brush's soft dab on
            # a clear layer, white where it is clear, was read as a flat box
            kernel = kernel * picture.alpha[0, 0].double()
    if max(kernel.shape) > MAX_KERNEL:
        raise InputError(f"kernel {path} is larger than {MAX_KERNEL} pixels")
    return kernel


def load_kernel(value: str | Path) -> torch.Tensor:
    """A spec or a file -> the kernel (checked by :class:`dip.operators.Blur`)."""
    if isinstance(value, str) and re.fullmatch(SPEC, value):
        return parse_spec(value)
    if isinstance(value, str) and value.lower() in KERNELS and not Path(value).exists():
        raise InputError(f"kernel not found: {value} (a {value.lower()} blur is written "
                         f"{KERNELS[value.lower()][3]})")
    return read_kernel(Path(value))


def _within(kernel: torch.Tensor, picture: image.Picture) -> torch.Tensor:
    """``kernel`` without its rows and columns of zeros in pairs about its centre (the same
    blur: a spec draws a motion blur's line, a short or level one, in a square), if the
    picture is as large as that (a blur wider than the picture leaves nothing of it to
    recover)."""
    while kernel.shape[-2] > 2 and not (kernel[..., 0, :].any() or kernel[..., -1, :].any()):
        kernel = kernel[..., 1:-1, :]
    while kernel.shape[-1] > 2 and not (kernel[..., 0].any() or kernel[..., -1].any()):
        kernel = kernel[..., 1:-1]
    (kh, kw), (h, w) = kernel.shape[-2:], picture.size
    if kh > h or kw > w:
        raise InputError(f"the kernel ({kw}x{kh}) is larger than the image ({w}x{h}); give "
                         f"a kernel of the blur's own size")
    return kernel


def _blur(picture: image.Picture, spec: str, generator: torch.Generator,
          output: Any) -> tuple[image.Picture, dict, dict]:
    blurred = operators.Blur(_within(load_kernel(spec), picture))(picture.pixels).clamp(0, 1)
    return picture.with_pixels(blurred), {}, {}


class Deblur(Task):
    name = "deblur"
    help = "Sharpen INPUT, blurred by a known KERNEL (--kernel)."
    options = (
        Option("kernel", kind="path", words=SPEC, record=True,
               metavar="FILE|gaussian:SIGMA|box:SIZE|motion:LENGTH,ANGLE",
               help="The blur (required): a spec (gaussian:1.6, or gaussian:SIGMA,SIZE with "
                    "SIZE odd; box:9; motion:15,30 -- a line 15 pixels long, anti-aliased, at "
                    "30 degrees counter-clockwise) or a "
                    "kernel image / .npy file (normalised to sum 1)."),
    )
    corruptions = (
        Corruption(Option("blur", metavar="SPEC",
                          help="Blur with a kernel spec (gaussian:1.6, box:9, motion:15,30) or "
                               "file, as `dip deblur --kernel` undoes; --noise may follow."),
                   _blur, order=5),
    )

    def check(self, args: dict[str, Any]) -> None:
        kernel = args.get("kernel")
        if kernel is None:
            raise InputError("deblur needs {arg:kernel} (a spec such as gaussian:1.6, or a "
                             "kernel file)")
        if isinstance(kernel, str) and re.fullmatch(SPEC, kernel):
            operators.Blur(parse_spec(kernel))  # a wrong spec costs no decode

    def load(self, picture: image.Picture, args: dict[str, Any], cfg: Any,
             max_pixels: int) -> Inputs:
        return Inputs(picture, {"kernel": _within(load_kernel(args["kernel"]), picture)})

    def problem(self, inputs: Inputs, cfg: Any) -> Problem:
        picture = inputs.picture
        # a noisy JPEG read as clean ran the whole budget (auto_if_noisy) and learnt the noise
        return Problem(operators.Blur(inputs.data["kernel"]), picture.pixels,
                       picture.size).take_noise(jpeg_sigma(picture, cfg))

    def metrics(self, result: torch.Tensor, ref: torch.Tensor, inputs: Inputs,
                cfg: Any) -> dict[str, Any]:
        return {"input_psnr": metrics.psnr(inputs.picture.pixels, ref)}

    def describe(self, m: dict[str, Any]) -> str:
        return f"blurred input {m['input_psnr']:.2f} dB"


register(Deblur())
