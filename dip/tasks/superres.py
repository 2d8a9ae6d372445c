"""Super-resolution: the observation is the result shrunk ``factor`` times.

    A = downsampling by the factor with a known kernel,  y = the small input

The kernel (``--kernel``) is how the small picture was made: the paper's Lanczos ("lanczos2",
the default), ``lanczos3`` (Pillow's and ImageMagick's Lanczos, three lobes), Pillow's /
MATLAB's antialiased ``bicubic`` (how most small pictures on the web
and from photo software are made), ``area`` (block means) or ``gaussian:SIGMA`` (blur, then one
pixel per block). A kernel that does not match the input's costs dB that no prior recovers:
benchmarks/README.md, "degradations.py".

The network works at the result's size; the record reports the paper's protocol (PSNR of the
Y channel with ``factor`` pixels cropped at each border) beside bicubic upscaling.

The config key ``factor`` is this task's (every other task keeps it at 4), and so is the table
``per_factor`` a config layer may hold: settings for one factor (the paper's x8 budget and
perturbation), applied right after that layer's own keys.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any

import torch

from dip import image, metrics, operators
from dip.config import RunConfig, check_known, quote
from dip.errors import ConfigError, InputError, outside_dip
from dip.request import Option
from dip.stopping import estimate_sigma
from dip.tasks import Corruption, Inputs, Problem, Task, register

FACTORS = tuple(str(f) for f in operators.Downsample.FACTORS)
#: the operator's kernel when ``--kernel`` is not given: the paper's
KERNEL = "lanczos"


def _downscale(picture: image.Picture, factor: int, generator: torch.Generator,
               output: Any) -> tuple[image.Picture, dict, dict]:
    """Pillow's Lanczos (three lobes), as the paper made its inputs; cropped first to a
    multiple of the factor."""
    h, w = operators.valid_superres_size(*picture.size, factor)
    if h == 0 or w == 0:
        raise InputError(f"the image is too small to downscale {factor} times")
    small = (h // factor, w // factor)
    alpha = picture.alpha
    colour = image.bleed_colour(picture.pixels, alpha)  # no dark edge from hidden black
    result = replace(
        picture, pixels=image.resize(colour[..., :h, :w], small, "lanczos"),
        coding_error=None,
        alpha=None if alpha is None else image.resize(alpha[..., :h, :w], small, "lanczos"))
    return result, {}, ({"cropped_to": (h, w)} if (h, w) != picture.size else {})


def _cropped_note(facts: dict[str, Any], factor: int, clean: Any) -> str | None:
    if "cropped_to" not in facts:
        return None
    h, w = facts["cropped_to"]
    return (f"cropped {clean} to {w}x{h} (a multiple of {factor}) before downscaling; "
            f"compare results with that crop")


def _wiener_scaled(result: torch.Tensor, projected: torch.Tensor, residual: torch.Tensor,
                   error: tuple[float, ...]) -> torch.Tensor:
    """``result`` plus its correction ``projected - result`` scaled per channel by the
    Wiener gain ``1 - e^2 / mean(r^2)`` (at least 0): the residual ``r`` (the input less the
    result shrunk) is the part of the picture the fit missed plus the input's own error
    ``e``, uncorrelated, and that gain is the scalar that makes the corrected part nearest
    the picture on average. Channels of :data:`dip.image.YCBCR` for colour (``error`` one
    a channel: :func:`_input_error` checks it)."""
    colour = result.shape[1] == 3

    def mixed(matrix: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # per pixel, (C, C)
        return torch.einsum("ij,njhw->nihw", matrix.to(t), t) if colour else t

    power = mixed(image.YCBCR, residual).pow(2).mean((0, 2, 3))
    e2 = torch.tensor(error, dtype=torch.float64).pow(2).to(result)
    gain = (1 - e2 / power.clamp_min(1e-20)).clamp(0, 1)
    return result + mixed(image.RGB_OF_YCBCR,
                          mixed(image.YCBCR, projected - result) * gain.view(1, -1, 1, 1))


#: what the noise estimate reads in the residual of a clean small picture's fit (the fit's
#: misfit, not the input's error: up to 2.5 grey levels on the colour crops, 4.2 on grey
#: ones), taken off the reading in quadrature ([0, 1] units; benchmarks/README.md, "A noisy
#: small picture", benchmarks/superres_noise.py)
MISFIT = 2 / 255


def _input_error(residual: torch.Tensor,
                 coding: tuple[float, ...] | None) -> tuple[float, ...] | None:
    """The input's own error per channel (YCbCr for colour), as :func:`_wiener_scaled`
    takes it: its noise, read in the residual the fit left (the patches' estimate,
    :func:`dip.stopping.estimate_sigma`, less :data:`MISFIT`), and a JPEG's ``coding``
    error, independent of it. A JPEG's coding does not read as noise there (0.2-1.1 grey
    levels at quality 75); None where there is neither."""
    if coding is not None and len(coding) != residual.shape[1]:
        raise ValueError(f"an error for each of the {residual.shape[1]} channel(s), got "
                         f"{len(coding)}")
    read = estimate_sigma(residual, clipped=False)
    noise = max(0.0, read ** 2 - MISFIT ** 2) ** 0.5
    if not noise and not (coding and any(coding)):
        return None
    # white noise of sigma per RGB channel has sigma times each YCbCr row's norm in that row
    rows = (image.YCBCR.double().norm(dim=1) if residual.shape[1] == 3
            else torch.ones(residual.shape[1], dtype=torch.float64))
    coded = torch.tensor(coding or [0.0] * len(rows), dtype=torch.float64)
    return tuple((coded ** 2 + (rows * noise) ** 2).sqrt().tolist())


def back_projected(result: torch.Tensor, small: torch.Tensor, factor: int, kernel: str,
                   warn: bool = True, error: tuple[float, ...] | None = None,
                   facts: dict[str, Any] | None = None) -> torch.Tensor:
    """``result`` corrected to the nearest image that shrinks (``factor`` times, with
    ``kernel``) exactly to ``small`` (to within its rounding for a wide blur:
    :func:`dip.operators.back_project`), clamped to [0, 1]: dip's super-resolution result.

    An input with an error of its own, a JPEG's coding (``error``, per channel:
    :attr:`dip.image.Picture.coding_error`) or noise, would have it pinned into the result
    by the whole residual: on the colour images' 128 px crops made small with bicubic, the
    exact correction was 0.37-0.55 dB (Y-PSNR, group means) under the network's image at
    JPEG quality 75, and 0.76 under it with noise of sigma 5 (1.52 at 10). The correction
    is then scaled by the Wiener gain (:func:`_wiener_scaled`) for that error
    (:func:`_input_error`): none of it where the residual is no larger than the error, none
    of the colour a JPEG stores at half resolution (benchmarks/README.md, "degradations.py"
    and "A noisy small picture").

    ``facts``, where given, gets ``back_projection``: what was done (``exact``,
    ``scaled``: less, for the input's own error, or ``none``: the correction would amplify
    it).

    Shape:
        - Input: ``(1, C, H, W)`` and ``(1, C, H / factor, W / factor)``; ``error`` C values
        - Output: ``(1, C, H, W)``
    """
    op = operators.Downsample(factor, kernel).to(result)
    small = small.to(result)
    projected = operators.back_project(op, result, small)
    if projected is result and warn:  # no solve close enough: the network's image as it is
        warnings.warn(f"the result is the network's image, not back-projected: with the "
                      f"kernel {kernel} at x{factor} the correction would amplify the "
                      f"input's own error, its rounding or noise (a blur too wide for the "
                      f"factor, on this picture)",
                      image.DipWarning, stacklevel=outside_dip())
    how = "none" if projected is result else "exact"
    if how == "exact":
        residual = small - op(result)
        error = _input_error(residual, error)
        if error is not None:
            projected, how = _wiener_scaled(result, projected, residual, error), "scaled"
    if facts is not None:
        facts["back_projection"] = how
    return projected.clamp(0, 1)


class SuperRes(Task):
    name = "superres"
    help = "Enlarge INPUT FACTOR times (no ground truth needed)."
    # the paper's SR protocol: Y channel, `factor` pixels cropped at each border
    headline = ("psnr_y", "Y-PSNR")
    options = (
        Option("factor", kind="int", choices=FACTORS, config_key="factor",
               help="The result is FACTOR times larger in each dimension [default: 4, or the "
                    "config's factor]."),
        Option("kernel", metavar="lanczos|lanczos3|bicubic|area|gaussian:SIGMA",
               default=KERNEL, record=True, rerun=True,
               help="How INPUT was made small: lanczos (the paper's, two lobes), lanczos3 "
                    "(Pillow's and ImageMagick's Lanczos), bicubic (Pillow's, MATLAB's "
                    "imresize), area (block means) or gaussian:SIGMA (blur of SIGMA result "
                    "pixels, then one pixel per block)."),
        Option("no_back_projection", kind="flag", default=False, record=True, rerun=True,
               help="Return the network's image as it is. By default it is corrected to the "
                    "nearest image that shrinks (with the kernel) exactly to INPUT; less where "
                    "INPUT has an error of its own: a JPEG's compression and noise are not put "
                    "back."),
    )
    corruptions = (
        Corruption(Option("downscale", kind="int", choices=FACTORS, metavar="2|4|8",
                          help="Shrink 2, 4 or 8 times with Pillow's Lanczos (three lobes, "
                               "as the paper's notebook made its SR inputs; dip superres "
                               "--kernel lanczos3 matches it, its default lanczos has the "
                               "paper's two)."),
                   _downscale, order=20, note=_cropped_note),
    )
    owns = {"factor": RunConfig.factor}
    tables = ("per_factor",)

    def check(self, args: dict[str, Any]) -> None:
        # a wrong spec costs no decode; checked at the largest factor (the widest kernel), so
        # that a spec accepted here is accepted for every factor
        operators.downsample_kernel(args.get("kernel") or KERNEL,
                                    max(operators.Downsample.FACTORS))

    def load(self, picture: image.Picture, args: dict[str, Any], cfg: Any,
             max_pixels: int) -> Inputs:
        # the colour under transparent pixels is fitted and enlarged with its visible
        # neighbours: the visible ones' colour there, or their edges would darken (most
        # editors save it black)
        picture = replace(picture, pixels=image.bleed_colour(picture.pixels, picture.alpha))
        return Inputs(picture, {"kernel": args.get("kernel") or KERNEL})

    def check_config(self, cfg: Any) -> None:
        if cfg.factor not in operators.Downsample.FACTORS:
            raise ConfigError(f"config key 'factor' must be one of {', '.join(FACTORS)}, got "
                              f"{cfg.factor}")

    def table_settings(self, name: str, table: Any, settings: dict[str, Any]) -> dict[str, Any]:
        """``per_factor: {8: {optim.iters: 4000}}``: the settings for the run's factor."""
        if not isinstance(table, dict):
            raise ConfigError("config key 'per_factor' must map factors to settings")
        # every entry checked, not only the run's factor's: a typo for x8 passed x2 runs
        for key, entry in table.items():
            if str(key) not in FACTORS and key not in operators.Downsample.FACTORS:  # 8, "8", 8.0
                raise ConfigError(f"config key 'per_factor' names factor {quote(repr(key))}; "
                                  f"the factors are {', '.join(FACTORS)}")
            if entry is not None and not isinstance(entry, dict):
                raise ConfigError(f"config key 'per_factor' maps factor {key} to "
                                  f"{quote(repr(entry))}; expected a mapping of config keys")
            check_known(entry or {}, self.name, f" in per_factor {key}")
        factor = settings.get("factor", RunConfig.factor)
        # a factor of the wrong type is reported by the config's type check, not here
        extra = (table.get(factor, table.get(str(factor)))
                 if isinstance(factor, (int, str)) else None)
        return extra or {}

    def out_size(self, size: tuple[int, int], cfg: Any) -> tuple[int, int]:
        return size[0] * cfg.factor, size[1] * cfg.factor

    def problem(self, inputs: Inputs, cfg: Any) -> Problem:
        picture = inputs.picture
        return Problem(operators.Downsample(cfg.factor, inputs.data["kernel"]), picture.pixels,
                       self.out_size(picture.size, cfg))

    def consistent(self, result: torch.Tensor, spread: torch.Tensor | None, inputs: Inputs,
                   args: dict[str, Any], cfg: Any, sample: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        # The fit's image misses the small input (operators.back_project); putting back exactly
        # the low frequencies the input determines gained 0.20-0.93 dB on the benchmark's
        # group means (benchmarks/README.md, "degradations.py"); less of it where the input
        # is a JPEG (back_projected). The restarts' spread stays
        # theirs, before the correction.
        if args.get("no_back_projection"):
            inputs.facts["back_projection"] = "off"
            return result, spread
        return back_projected(result, inputs.picture.pixels, cfg.factor,
                              inputs.data["kernel"], warn=not sample,
                              error=inputs.picture.coding_error,
                              facts=None if sample else inputs.facts), spread

    def out_alpha(self, inputs: Inputs, out_size: tuple[int, int]) -> torch.Tensor | None:
        alpha = inputs.picture.alpha
        return None if alpha is None else image.resize(alpha, out_size, "bicubic")

    def scored_against(self, pixels: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
        # the result's colour under transparent pixels is its visible neighbours' (load's
        # bleed_colour): so is the reference's, or a PSNR scored the hidden black there (a
        # soft-edged disc: 7.3 dB, bicubic's 7.4, where the visible pixels scored 33)
        return image.bleed_colour(pixels, alpha)

    def metrics(self, result: torch.Tensor, ref: torch.Tensor, inputs: Inputs,
                cfg: Any) -> dict[str, Any]:
        # The paper's SR protocol: Y channel, `factor` pixels cropped at each border.
        bicubic = image.resize(inputs.picture.pixels, tuple(ref.shape[-2:]), "bicubic")
        return {"psnr_y": metrics.psnr_y(result, ref, cfg.factor),
                "bicubic_psnr": metrics.psnr(bicubic, ref),
                "bicubic_psnr_y": metrics.psnr_y(bicubic, ref, cfg.factor)}

    def describe(self, m: dict[str, Any]) -> str:
        return (f"bicubic {m['bicubic_psnr']:.2f} dB\n  Y-channel PSNR (the paper's protocol) "
                f"{m['psnr_y']:.2f} dB; bicubic {m['bicubic_psnr_y']:.2f} dB")


register(SuperRes())
