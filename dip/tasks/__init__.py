"""Tasks: one file each, everything dip knows about one kind of damage in one place.

A :class:`Task` knows its name and help text, the options it takes beyond the common ones
(:class:`dip.request.Option`: a mask, a factor, a kernel) and how to read them, how to turn
the input into a :class:`Problem` (the operator ``A``, the observation ``y``, the result's
size, and the loss when it is not the squared error), its naive baseline and metric protocol
for the record, which config keys it owns or refuses, and how ``dip corrupt`` makes its kind
of damage. The ``dip`` command's subcommands, ``dip run``'s job keys, ``dip corrupt``'s options
and the presets' lookup are all generated from :data:`TASKS`; nothing outside this package
branches on a task's name.

Adding a task is one new module here that calls :func:`register`, its operator in
:mod:`dip.operators` if it is new, and its presets in ``configs/``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dip import image, jpeg_noise
from dip.errors import ConfigError, InputError
from dip.request import Option
from dip.stopping import estimate_sigma
from dip.tiles import Tile
from dip.tint import Tint

#: what a problem's fits descend (:attr:`Problem.objective`)
OBJECTIVES = ("mse", "sure", "alternate")


@dataclass
class Problem:
    """What the fit needs to know about a task.

    Attributes:
        operator: ``A``, an ``nn.Module`` (:mod:`dip.operators`).
        observation: ``y`` ``(1, C, h, w)``.
        out_size: ``(H, W)`` of the result.
        loss: ``loss(A(x), y) -> 0-d tensor``; None: the mean squared error (the paper's).
        noise_sigma: the noise level in [0, 1] units when the task knows it (the denoising
            stop's noise floor uses it; None: estimated from ``y``).
        facts: what the task measured while building the problem (an estimated noise level,
            ...), written into the record as they are.
        objective: what the fits descend (:data:`OBJECTIVES`): ``mse`` (``loss``, the paper's),
            ``sure`` (Stein's unbiased risk estimate, :mod:`dip.sure`: white Gaussian noise
            on ``y`` itself, ``A`` the identity; the network's input is then the observation)
            or ``alternate`` (restart 0 the first, restart 1 the second, and so on).
    """

    operator: torch.nn.Module
    observation: torch.Tensor
    out_size: tuple[int, int]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    noise_sigma: float | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    objective: str = "mse"

    @property
    def scale(self) -> int:
        """Result pixels per observation pixel along a side (super-resolution's factor)."""
        return max(1, self.out_size[0] // self.observation.shape[-2])

    def fits_sure(self, restart: int) -> bool:
        """Whether restart ``restart``'s fit descends SURE (:attr:`objective`)."""
        return self.objective == "sure" or (self.objective == "alternate" and restart % 2 == 1)

    def code_channels(self, configured: int, image: int, restart: int = 0) -> int:
        """Restart ``restart``'s network input channels: ``input.channels`` (``configured``),
        or the image's own where the input is the observation itself (SURE)."""
        return image if self.fits_sure(restart) else configured

    def take_noise(self, jpeg_sigma: float | None) -> Problem:
        """The problem with a JPEG's noise level (:func:`jpeg_sigma`), where one was read, as
        its own, and said in its facts (the record's ``jpeg_noise_sigma``)."""
        if jpeg_sigma is not None:
            self.noise_sigma = jpeg_sigma
            self.facts["jpeg_noise_sigma"] = round(jpeg_sigma * 255, 3)
        return self

    def window(self, t: Tile) -> Problem:
        """The problem of one tile ``t`` of the observation (:mod:`dip.tiles`): its part of
        the observation, the operator for its part of the result."""
        out = t.scaled(self.scale)
        return Problem(self.operator.window(out.top, out.left, out.height, out.width),
                       t.crop(self.observation), (out.height, out.width), self.loss,
                       self.noise_sigma, objective=self.objective)


@dataclass
class Inputs:
    """What :meth:`Task.load` read: the picture to restore (the task may change it, e.g. take
    its alpha as the mask) and the task's own data (a known-pixel map, a kernel)."""

    picture: image.Picture
    data: dict[str, Any] = field(default_factory=dict)
    #: what the task did to the result, for the record (super-resolution's
    #: ``back_projection``: the correction as applied, not as asked)
    facts: dict[str, Any] = field(default_factory=dict)
    #: a colour picture of one noise read as its grey (``picture``), and how to put that
    #: back in colour (:mod:`dip.tint`: denoising's); None: the picture as read
    tint: Tint | None = None

    def coloured(self, pixels: torch.Tensor) -> torch.Tensor:
        """A result of ``picture`` as the file is, in colour where :attr:`tint` says how."""
        return pixels if self.tint is None else self.tint.coloured(pixels)

    def as_read(self) -> image.Picture:
        """``picture`` as the file is (in colour where :attr:`tint` read it as grey)."""
        if self.tint is None:
            return self.picture
        return self.picture.with_pixels(self.coloured(self.picture.pixels))


@dataclass(frozen=True)
class Corruption:
    """A kind of damage ``dip corrupt`` makes (for tests and benchmarks).

    Attributes:
        option: its command-line option (its value is the damage's parameter).
        apply: ``apply(picture, value, generator, output_path) -> (picture, extra_files,
            notes)``: the damaged picture, files to write beside it (``{name: (path,
            picture)}``) and facts for the caller (``{"cropped_to": (h, w)}``).
        after: other corruptions it may follow in one call (noise after blur).
        order: where it applies when several are given (lower first).
        note: ``note(facts, value, clean_path) -> str | None``: what the user should know
            about what ``apply`` did, in words (``facts`` as :func:`dip.corrupt` returns
            them); None: nothing to tell.
    """

    option: Option
    apply: Callable[..., tuple[image.Picture, dict, dict]]
    after: tuple[str, ...] = ()
    order: int = 0
    note: Callable[[dict[str, Any], Any, Path], str | None] | None = None

    def describe(self, facts: dict[str, Any], value: Any, clean: Path) -> str | None:
        """The :attr:`note` for one call, or None."""
        return None if self.note is None else self.note(facts, value, clean)


class Task:
    """One kind of restoration. Subclasses set the class attributes and override what
    differs; the defaults describe a task whose observation is the input itself."""

    name: str = ""
    #: the subcommand's help (its first line is the summary)
    help: str = ""
    #: options beyond the common ones (a mask, a factor, ...)
    options: tuple[Option, ...] = ()
    #: config sections the task owns: ``{"noise": NoiseSettings}`` (a dataclass per section;
    #: a record written before a section existed reruns with the section's defaults)
    sections: dict[str, type] = {}
    #: config keys only this task may set to anything but their default: key -> the default
    owns: dict[str, Any] = {}
    #: tables a config layer (a preset, a user's YAML file) may hold beside its keys, for this
    #: task only; :meth:`table_settings` reads each, right after the layer that holds it
    tables: tuple[str, ...] = ()
    #: damage ``dip corrupt`` can make for this task
    corruptions: tuple[Corruption, ...] = ()
    #: the metric that scores a result (its record key, and its name in a report)
    headline: tuple[str, str] = ("psnr", "PSNR")

    # --- plan: checks that read no file -------------------------------------------------------

    def check(self, args: dict[str, Any]) -> None:
        """Raise InputError for a missing or inconsistent task option (nothing is read)."""

    def reads(self, args: dict[str, Any]) -> list[Path]:
        """Files the task reads besides the input (must not be overwritten by the result)."""
        return [Path(args[o.name]) for o in self.options
                if o.kind == "path" and args.get(o.name) is not None
                and not o.is_word(args[o.name])]

    def check_config(self, cfg: Any) -> None:
        """Raise ConfigError for a config value this task cannot run with."""

    def table_settings(self, name: str, table: Any, settings: dict[str, Any]) -> dict[str, Any]:
        """The config keys one layer's table ``name`` (:attr:`tables`) sets, given every
        layer's settings merged (nested, tables apart, not yet checked)."""
        return {}

    def out_size(self, size: tuple[int, int], cfg: Any) -> tuple[int, int]:
        """The result's ``(H, W)`` for an input of ``size``."""
        return size

    # --- load and build -------------------------------------------------------------------------

    def load(self, picture: image.Picture, args: dict[str, Any], cfg: Any,
             max_pixels: int) -> Inputs:
        """Read the task's own inputs (after the picture): sizes checked, nothing written."""
        return Inputs(picture)

    def problem(self, inputs: Inputs, cfg: Any) -> Problem:
        raise NotImplementedError

    def solved(self, problem: Problem, args: dict[str, Any]) -> torch.Tensor | None:
        """The result of ``problem`` when it needs no fit (a tile with nothing to restore),
        else None; ``args`` are the task's options."""
        return None

    def blind(self, problem: Problem) -> bool:
        """Whether a fit of ``problem`` (a tile) would see nothing of the picture, and so
        learn nothing from it (a tile wholly inside an inpainting's hole)."""
        return False

    def out_alpha(self, inputs: Inputs, out_size: tuple[int, int]) -> torch.Tensor | None:
        """The result's alpha channel: the input's, carried through."""
        return inputs.picture.alpha

    def scored_against(self, pixels: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
        """A reference's ``pixels`` (with its ``alpha``) as the result is scored against
        them: as read, the colour under its transparent pixels too (the result keeps the
        input's there)."""
        return pixels

    def consistent(self, result: torch.Tensor, spread: torch.Tensor | None, inputs: Inputs,
                   args: dict[str, Any], cfg: Any, sample: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The combined result made to agree with the input where the input determines it
        exactly (inpainting's known pixels put back, super-resolution's back-projection), and
        the restarts' spread with it. ``result`` ``(1, C, H, W)`` in [0, 1], the image
        returned on its device; by default both come back as they are. ``sample``: an
        estimate of a fit in progress, for the record's PSNR curve (no warnings)."""
        return result, spread

    def finishes(self, cfg: Any) -> bool:
        """Whether :meth:`finish` changes the result under ``cfg`` (then the record's peak,
        the fit's best moment, is not the result's)."""
        return False

    def finish(self, result: torch.Tensor, inputs: Inputs, cfg: Any) -> torch.Tensor:
        """The run's final result, after :meth:`consistent`, from a step that needs no network
        (denoising's collaborative Wiener filter); called only where :meth:`finishes`, and
        snapshots of a fit in progress skip it. ``result`` ``(1, C, H, W)`` in [0, 1] on the
        CPU, as is the image returned."""
        return result

    def finish_seconds(self, observation: torch.Tensor, cfg: Any,
                       noise_sigma: float | None = None) -> float:
        """The seconds :meth:`finish` will take on ``observation`` ``(1, C, H, W)`` (the
        whole input; for the estimate said before a run starts; ``noise_sigma``: the
        problem's, where the task knew it); called only where :meth:`finishes`."""
        return 0.0

    def report_mask(self, inputs: Inputs) -> torch.Tensor | None:
        """The known pixels ``(1, 1, H, W)`` (1 = known) a report shows the input through
        (holes black); None: the input as it is."""
        return None

    # --- the record -----------------------------------------------------------------------------

    def record_args(self, args: dict[str, Any]) -> dict[str, Any]:
        """How the record names the task's options (paths absolute); a finished job is
        recognised by these (``dip run``)."""
        out = {}
        for o in self.options:
            if not o.record:
                continue
            value = args.get(o.name, o.default)
            if o.kind == "path" and value is not None and not o.is_word(value):
                value = str(Path(value).resolve())
            out[o.name] = value
        return out

    def metrics(self, result: torch.Tensor, ref: torch.Tensor, inputs: Inputs,
                cfg: Any) -> dict[str, Any]:
        """The task's baseline against the reference, beside PSNR/SSIM (record ``metrics``)."""
        return {}

    def describe(self, m: dict[str, Any]) -> str:
        """The baseline of :meth:`metrics` in words, for the summary line."""
        return ""

    def row_psnr(self, m: dict[str, Any]) -> float | None:
        """The score a batch summary lists for this task (:attr:`headline`)."""
        return m.get(self.headline[0])


#: name -> task, filled by the task modules as they are imported
TASKS: dict[str, Task] = {}


def jpeg_sigma(picture: image.Picture, cfg: Any) -> float | None:
    """A JPEG's noise as its quantised coefficients read it (:mod:`dip.jpeg_noise`, the share
    it trusts), where that is more than the patches' estimate; None where ``stop.sigma`` is
    given or the file is no JPEG. The compression rounds away the noise's finest detail,
    which is where the patches look: at quality 50-95 they read sigma = 15 as 0.3-1.6, and
    the fits then learnt the noise (+0.3 dB over the input, where the same noise in a PNG
    gained +10: benchmarks/README.md, "Noise in a JPEG"). The denoising and deblurring
    tasks give it to their problem as its noise level (:meth:`Problem.take_noise`), read
    from the picture the problem is made of (a grey photo saved in colour is RGB again
    beside a colour reference, and its patches then read less)."""
    if cfg.stop.sigma:
        return None
    taken = jpeg_noise.trusted(picture.jpeg_noise)
    return taken if taken and taken > estimate_sigma(picture.pixels) else None


def register(task: Task) -> Task:
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is registered twice")
    TASKS[task.name] = task
    return task


def _discover() -> None:
    """Import every module of this package: each registers its task."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        importlib.import_module(f"{__name__}.{info.name}")


def get_task(name: str) -> Task:
    """The registered task ``name``; an unknown name is an InputError listing the known."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):  # a dict or a list given as the task: unhashable
        raise InputError(f"unknown task {name!r}; known tasks: "
                         f"{', '.join(TASKS)}") from None


def owner_check(task: Task, cfg: Any) -> None:
    """Config keys another task owns must keep their default here (a noise floor for a
    task whose observation is not the noisy image itself, ...)."""
    for other in TASKS.values():
        if other is task:
            continue
        for key, default in other.owns.items():
            if key in task.owns:
                continue
            section, _, name = key.partition(".")
            value = getattr(getattr(cfg, section), name) if name else getattr(cfg, section)
            if value != default:
                raise ConfigError(f"config key '{key}' applies to {other.name} only, not "
                                  f"{task.name}; leave it out (or at its default, {default})")


_discover()

__all__ = ["Corruption", "Inputs", "Problem", "TASKS", "Task", "get_task", "register"]
