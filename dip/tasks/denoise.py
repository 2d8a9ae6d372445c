"""Denoising: the observation is the image itself, plus noise the prior must not fit.

    A = identity,  y = x + n

The noise is Gaussian by default (the paper's), or Poisson -- photon counting, the noise of
low-light photographs, microscopy and astronomy: ``dip denoise --noise poisson``, with the
config section ``noise`` (``noise.peak``: photons at white, 0 = estimated from the image;
``noise.loss``: how the fit compares the result with the counts; ``noise.objective``: Gaussian
noise fitted by the paper's squared error, Stein's unbiased risk estimate (:mod:`dip.sure`) or
the two in turn across restarts; ``noise.wiener``: the fits' result as the pilot of a
collaborative Wiener filter of the noisy image, :mod:`dip.wiener`).

The peak is the one key for the noise's strength; there is no ``noise.gain``. A camera's gain
(grey levels per photon) is the same number spelled the other way round: with ``y = counts /
peak`` in [0, 1], one photon is ``1 / peak``, i.e. a gain of ``255 / peak`` grey levels in an
8-bit image (``65535 / peak`` in a 16-bit one). A second key would only let the two disagree.

The stop rule's noise floor (the discrepancy principle, configs/denoise.yaml) is this task's: it
compares the estimate with the input itself, which only here is the image plus noise. For
Poisson noise its level is the one the counts imply, mean(y) / peak.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from dip import image, jpeg_noise, metrics, operators, wiener
from dip.errors import ConfigError, InputError, outside_dip
from dip.estimate import calibrate, remember
from dip.request import Option
from dip.stopping import ONE_NOISE, blocks, estimate_sigma, measurable
from dip.tasks import OBJECTIVES, Corruption, Inputs, Problem, Task, jpeg_sigma, register
from dip.tint import Tint, tint_of

MODELS = ("gaussian", "poisson")
POISSON_LOSSES = ("nll", "anscombe")
#: the keys that one noise model reads and the other ignores
ONLY = {"gaussian": ("noise.objective", "noise.wiener"), "poisson": ("noise.peak", "noise.loss")}
DESCRIBED = {"gaussian": "Gaussian noise", "poisson": "photon noise"}


@dataclass
class NoiseSettings:
    """The ``noise`` config section (denoising only)."""

    #: gaussian (the paper's squared error) | poisson (photon counts)
    model: str = "gaussian"
    #: poisson: photons at white; 0 = estimated from the image (:func:`estimate_peak`)
    peak: float = 0.0
    #: poisson: nll (the Poisson deviance) | anscombe (squared error after the Anscombe
    #: transform, where the noise is about unit Gaussian)
    loss: str = "nll"
    #: gaussian: what the fit descends: mse (the paper's squared error to the noisy image) |
    #: sure (Stein's unbiased risk estimate, the network's input being the noisy image:
    #: dip.sure; Jo, Chun & Choi 2021) | alternate (the restarts take turns, restart 0 mse)
    objective: str = "mse"
    #: gaussian: filter the noisy image once more with the fits' result as the pilot of a
    #: collaborative Wiener filter (BM3D's second step: dip.wiener; Dabov et al. 2007)
    wiener: bool = False

    def check(self) -> None:
        if self.model not in MODELS:
            raise ConfigError(f"config key 'noise.model' must be one of {', '.join(MODELS)}, "
                              f"got {self.model!r}")
        if not 0 <= self.peak <= operators.MAX_PEAK:  # 1e300: a false "diverged at step 1"
            raise ConfigError(f"config key 'noise.peak' must be from 0 (estimate it) to "
                              f"{operators.MAX_PEAK:.0e}, got {self.peak}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"config key 'noise.objective' must be one of "
                              f"{', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.loss not in POISSON_LOSSES:
            raise ConfigError(f"config key 'noise.loss' must be one of "
                              f"{', '.join(POISSON_LOSSES)}, got {self.loss!r}")


def estimate_peak(y: torch.Tensor) -> float:
    """Photons at white of Poisson-noisy ``y = counts / peak``, without the clean image.

    Over each 2x2 block the finest Haar diagonal coefficient d = (a - b - c + e) / 2 has
    variance mean(x) / peak where the image is locally flat, and the block mean m estimates
    x; so d^2 / m is about peak^-1 times a chi-square with one degree of freedom, whose median
    is 0.4549. Blocks with a clipped (white) or empty pixel are left out; the median ignores
    the few edges that leak into d.

    Shape:
        y: ``(1, C, H, W)`` in [0, 1]. Returns the peak (inf when no block has noise).
    """
    a, b, c, e = blocks(y.detach().to("cpu", torch.float64))  # (MPS has no float64)
    m, d = (a + b + c + e) / 4, (a - b - c + e) / 2
    usable = (torch.stack([a, b, c, e]).amax(0) < 1) & (m > 0)
    if not usable.any():
        return math.inf
    ratio = (d[usable] ** 2 / m[usable]).median().item()
    return 0.4549 / ratio if ratio > 0 else math.inf


def poisson_deviance(peak: float):
    """2 * peak * mean(p - y - y log(p / y)): the Poisson negative log-likelihood of counts
    ``peak * y`` at means ``peak * p``, less its minimum; about 1 per pixel at the truth."""
    def loss(prediction: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = prediction.clamp(min=1e-6)
        return 2 * peak * torch.mean(p - y - torch.xlogy(y, p / y.clamp(min=1e-12)))
    return loss


def anscombe_error(peak: float):
    """Squared error after the Anscombe transform 2 sqrt(counts + 3/8) (Anscombe 1948), where
    Poisson noise is about unit Gaussian."""
    def loss(prediction: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = 2 * torch.sqrt(peak * prediction.clamp(min=0) + 3 / 8)
        return torch.mean((t - 2 * torch.sqrt(peak * y + 3 / 8)) ** 2)
    return loss


LOSSES = {"nll": poisson_deviance, "anscombe": anscombe_error}


def _refuse_a_clean_picture(read: float, pixels: torch.Tensor) -> None:
    """Refuse a picture whose noise reads 0 up to round-off (under :data:`ONE_NOISE`, a
    thousandth of a grey level): clean text, line art and a star field read 0, a smooth
    clean drawing a few millionths of a grey level (it ran, and came back byte for byte);
    the tests' smooth 8-bit colour pictures read their rounding (0.23-0.28), anti-aliased
    text and a screenshot 0.5-2.7 (benchmarks/README.md, "A clean picture that is no
    photo"), and they go on. The run ends with the Wiener filter: the fits would run for
    minutes and the filter then return the input as it is (its gains are all 1 at sigma 0).
    Said at once, as an inpainting mask with nothing to fill is, after the files' checks (a
    result its format cannot hold is said first). Without the filter (the paper's preset) the
    result is the network's, and the run goes on. A picture too small to read
    (:func:`dip.stopping.measurable`: under 16 px a side, a strip) reads 0 or a fraction of
    its noise, whatever it holds, and came back as it was without a word: it is refused too,
    asking for its level."""
    if not measurable(*pixels.shape[-2:]):
        h, w = pixels.shape[-2:]
        raise InputError(f"the input ({w}x{h}) is too small to read its noise level from "
                         f"(too few 8x8 patches: 16x16 pixels have enough); give its level, "
                         f"e.g. {{arg:stop.sigma=25}}")
    if read < ONE_NOISE:
        raise InputError("no noise found in the input: its noise level reads 0 (as clean "
                         "text, line art, a smooth drawing or a picture enlarged by repeating "
                         "its pixels do); nothing to denoise; to denoise it anyway, give its "
                         "level, e.g. {arg:stop.sigma=5}")


def _filter_sigma(observed: torch.Tensor, cfg: Any, read: float | None = None) -> float:
    """The Wiener filter's noise level: ``stop.sigma`` when given, else the input's, as the
    fits' stop has it (``read``: a JPEG's, :func:`dip.tasks.jpeg_sigma`; else estimated)."""
    return cfg.stop.sigma / 255 if cfg.stop.sigma else read or estimate_sigma(observed)


def _filter_key(observed: torch.Tensor, sigma: float) -> str:
    """The filter's entry in the machine's calibration cache (its cost per pixel depends on
    the channels and the profile, not on the image's size)."""
    pr = wiener.profile_for(sigma)
    return f"wiener|{observed.shape[1]} channels|patch {pr.patch} every {pr.step}"


def _add_noise(picture: image.Picture, sigma: float, generator: torch.Generator,
               output: Any) -> tuple[image.Picture, dict, dict]:
    return picture.with_pixels(operators.add_noise(picture.pixels, sigma, generator)), {}, {}


def _add_poisson(picture: image.Picture, peak: float, generator: torch.Generator,
                 output: Any) -> tuple[image.Picture, dict, dict]:
    return picture.with_pixels(operators.add_poisson(picture.pixels, peak, generator)), {}, {}


class Denoise(Task):
    name = "denoise"
    help = "Remove noise from INPUT (Gaussian, or photon noise with --noise poisson)."
    owns = {"stop.noise_floor": 0.0, "stop.budget_sigma": 0.0}
    sections = {"noise": NoiseSettings}
    options = (
        Option("noise", choices=MODELS, config_key="noise.model",
               help="The kind of noise: gaussian (most photos) or poisson (photon counting: "
                    "low light, microscopy, astronomy; the peak is estimated, or give it with "
                    "--set noise.peak=N) [default: the config's: gaussian]."),
    )
    corruptions = (
        Corruption(Option("noise", kind="float", minimum=0, metavar="SIGMA",
                          help="Add Gaussian noise of std SIGMA (0-255 units, e.g. 25)."),
                   _add_noise, after=("blur",), order=10),
        Corruption(Option("poisson", kind="float", minimum=0, above=True, metavar="PEAK",
                          help="Photon noise: Poisson counts with PEAK photons at white "
                               "(e.g. 10), divided by PEAK."),
                   _add_poisson, order=10),
    )

    def load(self, picture: image.Picture, args: dict[str, Any], cfg: Any,
             max_pixels: int) -> Inputs:
        noise = cfg.section("noise")
        # a setting of the other noise model, asked for, would be a silent no-op
        other = next(m for m in MODELS if m != noise.model)
        unused = [key for key in ONLY[other] if key in cfg.given]
        if unused:
            verb = "applies" if len(unused) == 1 else "apply"
            warnings.warn(f"{' and '.join(unused)} {verb} to {DESCRIBED[other]} only "
                          f"(noise.model {other}); denoising {DESCRIBED[noise.model]} "
                          f"ignores {'it' if len(unused) == 1 else 'them'}", image.DipWarning,
                          stacklevel=outside_dip())
        tint = tint_of(picture.pixels) if noise.model == "gaussian" else None
        if tint is None:
            return Inputs(picture)
        # one noise in three channels (a black-and-white photo with a coloured mark, or
        # toned): denoised as the channels' mean, the rest put back (dip.tint)
        coding = picture.coding_error  # (as dip.run.grey_of_rgb's)
        gains = tint.gains.flatten().tolist()
        read = picture.jpeg_noise and jpeg_noise.of_one_noise(picture.jpeg_noise, gains)
        grey = dataclasses.replace(picture, pixels=Tint.grey(picture.pixels),
                                   coding_error=coding and coding[:1], jpeg_noise=read)
        gains = [round(g, 4) for g in gains]
        return Inputs(grey, facts={"one_noise_gains": gains}, tint=tint)

    def problem(self, inputs: Inputs, cfg: Any) -> Problem:
        picture = inputs.picture
        problem = Problem(operators.Identity(), picture.pixels, picture.size)
        noise = cfg.section("noise")
        if noise.model == "gaussian":
            problem.objective = noise.objective
            problem.take_noise(jpeg_sigma(picture, cfg))
            if self.finishes(cfg) and not cfg.stop.sigma and problem.noise_sigma is None:
                # read once, here: the run's stop, SURE and budget take it (run.noise_level)
                problem.noise_sigma = estimate_sigma(picture.pixels)
                _refuse_a_clean_picture(problem.noise_sigma, picture.pixels)
        if noise.model == "poisson":
            peak = noise.peak or estimate_peak(picture.pixels)
            if not math.isfinite(peak):
                raise ConfigError("no photon noise could be measured in the input (is it "
                                  "noisy?); give its peak with {arg:noise.peak=N}")
            problem.loss = LOSSES[noise.loss](peak)
            # the discrepancy principle's level for counts: E[(y - x)^2] = x / peak
            problem.noise_sigma = math.sqrt(max(picture.pixels.mean().item(), 1e-12) / peak)
            problem.facts["noise_peak"] = round(peak, 3)
        return problem

    def finishes(self, cfg: Any) -> bool:
        # Gaussian noise only: its white, even sigma is what the filter's gains assume
        noise = cfg.section("noise")
        return noise.model == "gaussian" and noise.wiener

    def finish(self, result: torch.Tensor, inputs: Inputs, cfg: Any) -> torch.Tensor:
        # The fits' result as the pilot of BM3D's Wiener step (dip.wiener): +0.24 to +0.82 dB
        # on the sigma = 25 and 50 crops' means (benchmarks/README.md, "degradations.py").
        observed = inputs.picture.pixels
        sigma = _filter_sigma(observed, cfg, jpeg_sigma(inputs.picture, cfg))
        # for the record: under a stop that reads no noise level, its noise_sigma is null
        inputs.facts["wiener_sigma"] = round(sigma * 255, 3)
        start = time.perf_counter()
        out = wiener.collaborative_wiener(observed, result, sigma)
        # this run's own rate, for the next estimate (as fits' rates are: dip.estimate)
        remember(_filter_key(observed, sigma), torch.device("cpu"),
                 (time.perf_counter() - start) / (observed.shape[-2] * observed.shape[-1]))
        return out

    def finish_seconds(self, observation: torch.Tensor, cfg: Any,
                       noise_sigma: float | None = None) -> float:
        observed = observation.cpu()
        sigma = _filter_sigma(observed, cfg, noise_sigma)
        rate = calibrate(_filter_key(observed, sigma), torch.device("cpu"),
                         lambda _: wiener.seconds_per_pixel(observed, sigma))
        return rate * observed.shape[-2] * observed.shape[-1]

    def metrics(self, result: torch.Tensor, ref: torch.Tensor, inputs: Inputs,
                cfg: Any) -> dict[str, Any]:
        return {"input_psnr": metrics.psnr(inputs.picture.pixels, ref)}

    def describe(self, m: dict[str, Any]) -> str:
        return f"noisy input {m['input_psnr']:.2f} dB"


register(Denoise())
