"""One description of a run: :class:`RunRequest` holds every option once.

Each field carries an :class:`Option` that says how a user gives it: the ``dip`` command builds
its click options from them, ``dip run`` its job keys and their types, and :func:`dip.restore`
its keyword arguments. A task's own inputs (a mask, a factor, a blur kernel) are
:class:`Option`\\ s of its :class:`dip.tasks.Task` and travel in ``RunRequest.task_args``.
Adding a run option is one field here.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dip.config import MAX_ITERS, MAX_RESTARTS, PRESETS, python_number
from dip.errors import InputError
from dip.image import DEFAULT_MAX_PIXELS
from dip.stopping import STOP_RULES

#: ``format`` names -> file extensions
FORMATS = {"png": ".png", "jpg": ".jpg", "tif": ".tif", "bmp": ".bmp", "webp": ".webp"}


@dataclass(frozen=True)
class Option:
    """How one option of a run is given.

    Attributes:
        name: the Python argument and ``dip run`` job key (``max_pixels``).
        help: one or two sentences for ``--help``.
        kind: ``path`` | ``str`` | ``int`` | ``float`` | ``flag`` | ``list`` (a repeatable
            option: a tuple in Python, a list or one value in a batch file) | ``size`` (a
            word or a whole number: ``auto``, ``off`` or ``256``).
        flag: the command line's spelling (default ``--`` + name with dashes).
        short: a one-letter alias (``-o``).
        choices: the allowed values (strings, as typed).
        minimum: the smallest allowed number.
        maximum: the largest allowed number (None: no bound).
        above: ``minimum`` itself is not allowed (a Poisson peak must be > 0).
        default: the value when not given (None: "from the config").
        metavar: what ``--help`` shows for the value.
        config_key: the config key an explicit value sets (``optim.iters``): explicit flags
            are the top layer of the config.
        key: the batch job key when it differs from ``name`` (``set`` for ``overrides``).
        cli, batch: whether the command line / a batch job offers it.
        words: a regular expression: the values of a ``path`` option it matches whole are
            words, not paths (``alpha``; a kernel spec such as ``gaussian:1.6``).
        companion: a ``path`` that may name a folder holding one file per input, named like
            the input, when a batch job has several inputs (a mask, a reference).
        record: whether the record names it (as given, or a path made absolute).
        rerun: a setting (not a description of the damage, as a mask is): a record passed as
            ``config`` gives its value when the user does not.
        needs: another option of the task without which this one does nothing: given
            explicitly without it, the run is refused (a setting silently ignored misleads).
    """

    name: str
    help: str
    kind: str = "str"
    flag: str | None = None
    short: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    above: bool = False
    default: Any = None
    metavar: str | None = None
    config_key: str | None = None
    key: str | None = None
    cli: bool = True
    batch: bool = True
    words: str | None = None
    companion: bool = False
    record: bool = False
    rerun: bool = False
    needs: str | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def is_word(self, value: object) -> bool:
        """A value of this (path) option that is a word, not a file."""
        return (self.words is not None and isinstance(value, str)
                and re.fullmatch(self.words, value) is not None)

    @property
    def job_key(self) -> str:
        return self.key or self.name

    def job_types(self) -> tuple[type, ...]:
        """What a batch file may hold for it."""
        return {"path": (str,), "str": (str,), "int": (int,), "float": (int, float),
                "flag": (bool,), "list": (str, list), "size": (str, int)}[self.kind]

    def check(self, value: Any) -> Any:
        """``value`` as given from Python or a batch file, checked against the kind, the
        choices and the bounds; raises InputError naming the argument."""
        types, what = _PYTHON_TYPES.get(self.kind, (object, ""))
        if value is None:
            if self.default is None:  # None: "from the config" (or not given)
                return None
            # a switch or a number with a default of its own: write=None wrote nothing
            # without a word, max_pixels=None failed as a TypeError deep in the image reader
            name = self.name if self.kind == "flag" else f"{{arg:{self.name}}}"
            raise InputError(f"{name} must be {what}, got None")
        value = python_number(value)  # numpy's numbers as Python's
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            # a switch by its name: {arg:...} spells it switched on (overwrite=True)
            name = self.name if self.kind == "flag" else f"{{arg:{self.name}}}"
            # a word or a number is shown; an array's or an image's contents are not
            shown = f" {str(value)[:60]!r}" if isinstance(value, (str, int, float)) else ""
            raise InputError(f"{name} must be {what}, got {type(value).__name__}{shown}")
        if self.kind == "float" and not math.isfinite(value):
            raise InputError(f"{{arg:{self.name}}} must be a finite number, got {value}")
        if self.choices is not None and str(value) not in self.choices:
            raise InputError(f"{{arg:{self.name}}} must be one of {', '.join(self.choices)}, "
                             f"got {value!r}")
        if self.minimum is not None and isinstance(value, (int, float)) and (
                value <= self.minimum if self.above else value < self.minimum):
            raise InputError(f"{{arg:{self.name}}} must be {'>' if self.above else '>='} "
                             f"{self.minimum}, got {value}")
        if self.maximum is not None and isinstance(value, (int, float)) and value > self.maximum:
            raise InputError(f"{{arg:{self.name}}} must be {self.maximum} or less, got {value}")
        return value


#: what a Python caller may pass for an option of each kind, and how a message says it
_PYTHON_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "path": ((str, os.PathLike), "a path (str or pathlib.Path)"),
    "str": ((str,), "a string"),
    "int": ((int,), "a whole number"),
    "float": ((int, float), "a number"),
    "flag": ((bool,), "True or False"),
    "size": ((str, int), "a word or a whole number"),
}


def option(**spec: Any) -> Any:
    """A RunRequest field with its :class:`Option` (the field's name fills ``name``)."""
    default = spec.pop("field_default", spec.get("default"))
    factory = spec.pop("factory", None)
    meta = {"option": spec}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _file_path(name: str, value: Any) -> Path:
    """A request's image file path, as a Path: a str or a path-like, not a folder's name
    (``Path()`` drops a trailing slash: ``-o out.png/`` wrote ``out.png``)."""
    if not isinstance(value, (str, os.PathLike)):  # an array, say
        raise InputError(f"{name} must be a path to an image file, got {type(value).__name__}")
    if isinstance(value, str) and value.endswith(("/", os.sep)):
        raise InputError(f"{name} {value!r} ends with a separator, as a folder's name does; "
                         f"give a file name such as {str(Path(value) / 'result.png')!r}")
    return Path(value)


@dataclass(frozen=True)
class RunRequest:
    """Everything a run is asked to do (:func:`dip.restore` takes one).

    ``task_args`` holds the task's own options (see ``Task.options``); every other field is
    common to all tasks. Paths may be relative (to the current folder).
    """

    task: str = option(help="denoise | inpaint | superres | ...", cli=False)
    input: Path | None = option(help="The damaged image.", kind="path", cli=False)
    output: Path | None = option(
        short="-o", kind="path", metavar="PATH",
        help="Result path; its extension picks the format [default: {stem}_{task}.png in the "
             "current folder (.tif for a TIFF input); in a batch, results/ beside the batch "
             "file]. What is written beside it is named after it: out.png -> out.png.json (the "
             "record), out_report.png, out.gif, out_steps/, out_uncertainty.png.")
    format: str | None = option(
        choices=tuple(FORMATS),
        help="The result's format when no output path is given [default: png; tif for a TIFF "
             "input]. 16 bits per channel are kept in PNG and TIFF, float in TIFF; JPEG is "
             "written at quality 95, WebP lossless.")
    config: tuple[str | os.PathLike | dict, ...] = option(
        kind="list", factory=tuple, metavar="FILE.yaml",
        help="YAML file of config keys over the task's preset (repeatable: applied in order; "
             "a result's .json record reruns its settings).")
    overrides: tuple[str, ...] = option(
        kind="list", factory=tuple, flag="--set", key="set", metavar="KEY.PATH=VALUE",
        help="Override one config key, e.g. --set optim.lr=0.005 (repeatable).")
    iters: int | None = option(kind="int", minimum=1, maximum=MAX_ITERS, config_key="optim.iters",
                               help="Upper bound on optimisation steps [default: the preset's "
                                    "budget; fast denoising's grows up to 2x for an image "
                                    "less noisy than sigma 25 (stop.budget_sigma)].")
    stop: str | None = option(
        choices=tuple(STOP_RULES), config_key="stop.rule",
        help="auto: stop when the outputs' running variance stops falling (no clean image "
             "needed; when denoising, not before the result is as close to the input as the "
             "noise); fixed: run all --iters steps; auto_if_noisy: auto where the input's "
             "noise reads stop.noisy_sigma (3 grey levels) or more (or stop.sigma says it "
             "is), else fixed [default: the "
             "preset's: auto, but fixed for fast inpainting and auto_if_noisy for fast "
             "deblurring].")
    preset: str | None = option(
        choices=PRESETS, config_key="preset",
        help="paper: the paper's network, learning rate and step budget (deblurring: "
             "DeepRED's), with dip's automatic stop; fast: dip's cheaper settings for CPUs "
             "(measured in benchmarks/README.md); auto: fast on a CPU, paper on a GPU "
             "[default: auto].")
    seed: int | None = option(
        kind="int", config_key="seed",
        help="Random seed, 0 to 2**63-1 [default: 0]. The same seed gives the same image on "
             "the same device and CPU threads (a fit alone follows the machine's load unless "
             "perf.threads or OMP_NUM_THREADS fixes them; its record names the threads).")
    device: str | None = option(config_key="device",
                                help="auto | cpu | cuda | cuda:N | mps [default: auto].")
    restarts: int | None = option(
        kind="int", minimum=1, maximum=MAX_RESTARTS, metavar="K", config_key="optim.restarts",
        help="Fit K differently seeded networks and return their average (steadier, and "
             "with --uncertainty a map of where they disagree; fast denoising's fits take "
             "turns between the paper's loss and SURE, and their average is the pilot of a "
             "Wiener filter) [default: the preset's].")
    uncertainty: bool = option(
        kind="flag", default=False,
        help="Also write RESULT_uncertainty.png: the restarts' per-pixel standard "
             "deviation, x4 (white: 64 grey levels or more); needs 2 restarts or more "
             "(--restarts; fast denoising's default is 2).")
    tile: str | int | None = option(
        kind="size", metavar="auto|off|N", config_key="tile.size",
        help="Restore in overlapping tiles of N pixels (32 or more), blended without seams, "
             "so memory stays bounded at any size; auto: tile when the whole image would not "
             "fit in memory, or is larger than the preset's step budget suits (tile.whole_max: the "
             "fast preset's denoising tiles images over 192 px) [default: auto].")
    max_memory: float | None = option(
        kind="float", minimum=0, metavar="GB", config_key="perf.max_memory",
        help="Memory the run may use: --tile auto tiles the image (in smaller tiles if it "
             "must) to stay under it [default, or 0: the device's free memory less 20 %; "
             "on a CPU, within a container's or cluster job's memory limit and ulimit -v].")
    reference: Path | None = option(kind="path", companion=True, record=True,
                                    help="Clean image: report PSNR and SSIM (never used to "
                                         "fit).")
    save_every: int | None = option(kind="int", minimum=1, metavar="N",
                                    config_key="output.save_every",
                                    help="Keep a snapshot every N steps in "
                                         "RESULT_steps/ (RESULT: the result's name "
                                         "without its extension), written there with "
                                         "the result.")
    report: bool = option(kind="flag", default=False,
                          help="Also write RESULT_report.png: input, result (and "
                               "reference) with a magnified detail, and the loss, stop-rule "
                               "and PSNR curves (needs matplotlib: the [plot] extra).")
    gif: bool = option(kind="flag", default=False,
                       help="Also write RESULT.gif, the fit as an animation of the "
                            "snapshots in RESULT_steps/ (every --save-every steps, else "
                            "every optim.iters/50 steps: about 50 frames over a whole "
                            "run, up to 100 where denoising grows the budget).")
    max_pixels: int = option(kind="int", minimum=1, default=DEFAULT_MAX_PIXELS,
                             help="Refuse larger inputs, or results (an enlarged one).")
    overwrite: bool = option(kind="flag", default=False, batch=False,
                             help="Replace an existing result.")
    write: bool = option(kind="flag", default=True, cli=False, batch=False,
                         help="False: run without writing anything (the result is returned).")
    task_args: dict[str, Any] = option(kind="dict", factory=dict, cli=False, batch=False,
                                       help="The task's own options (Task.options).")

    def __post_init__(self) -> None:
        """The paths as Paths and ``config`` / ``overrides`` as tuples, each checked for its
        type (a clear InputError, not a TypeError from deep inside)."""
        for name in ("input", "output", "reference"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _file_path(name, value))
        for name in ("config", "overrides"):
            value = getattr(self, name)
            if value is None:
                value = ()
            elif isinstance(value, (str, os.PathLike, dict)):
                value = (value,)
            elif not isinstance(value, (list, tuple)):
                raise InputError(f"{name} takes a list, got {type(value).__name__}")
            object.__setattr__(self, name, tuple(value))
        if not all(isinstance(c, (str, os.PathLike, dict)) for c in self.config):
            raise InputError("config takes YAML files' paths and mappings of settings, e.g. "
                             "['mine.yaml', {'optim': {'lr': 0.01}}]")
        if not all(isinstance(o, str) for o in self.overrides):  # a dict, a pair
            raise InputError("overrides takes 'key=value' strings, e.g. ['optim.lr=0.01']; "
                             "give a mapping of settings as config={...}")
        if not isinstance(self.task_args, dict):
            raise InputError(f"task_args takes a mapping, got {type(self.task_args).__name__}")
        for f in dataclasses.fields(self):  # numpy's numbers (np.int64(500)) as Python's
            object.__setattr__(self, f.name, python_number(getattr(self, f.name)))

    def replace(self, **changes: Any) -> RunRequest:
        return dataclasses.replace(self, **changes)

    def explicit(self) -> dict[str, Any]:
        """The config keys set by explicit options (the top layer of the config)."""
        keys = {opt.config_key: getattr(self, opt.name) for opt in request_options()
                if opt.config_key is not None}
        return {key: value for key, value in keys.items() if value is not None}


def request_options() -> list[Option]:
    """The :class:`Option` of every RunRequest field, in field order."""
    return [Option(name=f.name, **f.metadata["option"]) for f in dataclasses.fields(RunRequest)]


def split_arguments(task_options: list[Option], values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments as :func:`dip.restore` takes them -> RunRequest fields, with the
    task's own options gathered into ``task_args``. Unknown names are an InputError."""
    fields = {f.name for f in dataclasses.fields(RunRequest)} - {"task_args"}
    mine = {opt.name for opt in task_options}
    request: dict[str, Any] = {"task_args": {}}
    for name, value in values.items():
        if value is None and name not in fields:
            continue  # e.g. mask=None for a task without a mask
        if name in fields:
            request[name] = value
        elif name in mine:
            request["task_args"][name] = value
        else:
            known = sorted(fields | mine)
            raise InputError(f"unknown argument {name!r}; known: {', '.join(known)}")
    return request
