"""From files to a restored file, in stages: plan -> load -> build -> fit -> record -> write.

:func:`restore` runs them for one :class:`dip.request.RunRequest`; each stage is a function of
its own, testable alone:

- :func:`plan` resolves the config and every path and checks all that needs no pixels (a
  wrong flag costs no decode); it reads and writes nothing.
- :func:`load` reads the input, the task's own files and the reference, and checks their sizes.
- :func:`build` makes the device's operator, observation, code, network and stop rule.
- :func:`fit_stage` runs :func:`dip.fitting.fit` (snapshots, progress, out of memory).
- :func:`make_record` describes the run as a :class:`dip.record.Record`.
- :func:`write` writes the result, its record and its pictures together, atomically.

Anything the user can fix is a :class:`dip.errors.DipError` raised before any file is
written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import platform
import re
import socket
import stat
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from PIL import Image

from dip import image, interrupts, metadata, metrics
from dip import report as reports
from dip.config import RunConfig, python_number, recorded_options, resolve
from dip.engine import Perf, out_of_memory, resolve_perf, warm_steps
from dip.errors import ConfigError, DipError, InputError, RunError, outside_dip
from dip.estimate import (
    CALIBRATION_STEPS,
    Estimate,
    calibrate,
    process_bytes,
    remember,
    timed_steps,
)
from dip.fitting import (
    FitResult,
    Member,
    Progress,
    Settings,
    autograd_on,
    check_default_device,
    fit_group,
)
from dip.image import shown
from dip.layout import (
    STACK_MOST,
    Layout,
    calibration_key,
    calibration_parts,
    member_side,
    plan_layout,
    seconds,
)
from dip.members import Combined, Part, build_member, combine, stand_in, uncertainty_map
from dip.record import PICTURES, Record, as_written, fingerprint, located, own_record, record_path
from dip.red import from_config as red_from_config
from dip.red import seconds_per_step as red_seconds
from dip.request import FORMATS, RunRequest, request_options, split_arguments
from dip.stopping import build_stop_rule, estimate_sigma, noise_budget, unread_settings
from dip.tasks import Inputs, Problem, Task, get_task, owner_check
from dip.threads import fixed_threads, plan_lanes, resolve_threads
from dip.tiles import MIN_TILE
from dip.version import __version__


@dataclass
class Restoration:
    """The result of :func:`restore`.

    Attributes:
        picture: the restored image (pixels ``(1, C, H, W)`` on the CPU, alpha re-attached).
        record: the JSON record written beside the output (also returned when not written).
        output: where the image was written, as it was given (the record's ``output`` is
            the absolute path), or None.
        fit: the first member's :class:`dip.fitting.FitResult` (history, peak): restart 0's,
            or the first tile's; its image is that member's, not ``picture``.
    """

    picture: image.Picture
    record: dict[str, Any]
    output: Path | None
    fit: FitResult
    #: every member's outcome (restarts x tiles, :class:`dip.layout.Layout`)
    members: list[Any] = field(default_factory=list)

    def __repr__(self) -> str:
        # a notebook shows what it holds, not the record's curves and every member's image
        # (thousands of numbers for one run)
        r = self.record
        return (f"Restoration(task={r.get('task')!r}, output={self.output!r}, "
                f"pixels={tuple(self.picture.pixels.shape)}, stop_reason="
                f"{r.get('stop_reason')!r}, iterations={r.get('iterations')}, "
                f"members={len(self.members)}, metrics={r.get('metrics')})")


# --- plan -------------------------------------------------------------------------------------

@dataclass
class Plan:
    """What a run will do, decided before any pixel is read."""

    request: RunRequest
    task: Task
    cfg: RunConfig
    output: Path
    #: what the run may write beside the result: record, report, gif, steps (a folder)
    files: dict[str, Path]
    #: write a snapshot every this many steps (0: none)
    snapshot_every: int

    @property
    def args(self) -> dict[str, Any]:
        return self.request.task_args

    @functools.cached_property
    def reads(self) -> list[Path]:
        """:func:`files_read`, but the record of the result being replaced, passed as config
        to redo it: the new record takes its place as the new image takes the old one's (read
        once: the checks, the stale pictures and the write ask)."""
        own = record_path(self.output).resolve() if own_record(self.output) else None
        return [path for path in files_read(self.request) if _resolved(path) != own]


def _resolved(path: Path) -> Path:
    """``path.resolve()``; a path that is a loop of symbolic links as it is (Python before
    3.13 raised RuntimeError, a traceback: its reader says what is wrong with it)."""
    try:
        return path.resolve()
    except (RuntimeError, OSError):
        return Path(os.path.abspath(path))


def files_read(request: RunRequest) -> list[Path]:
    """Every file a run of ``request`` reads: the input, the task's files, the reference,
    the config files."""
    extra = [Path(request.reference)] if request.reference is not None else []
    configs = [Path(c) for c in request.config if not isinstance(c, dict)]
    return [Path(request.input), *get_task(request.task).reads(request.task_args), *extra,
            *configs]


def resolve_config(request: RunRequest) -> RunConfig:
    """The config the request runs with (the one its record holds), checked for its task."""
    task = get_task(request.task)
    files = [c for c in request.config if not isinstance(c, dict)]
    base = [c for c in request.config if isinstance(c, dict)]
    explicit = request.explicit()
    by = {opt.config_key: opt.name for opt in request_options()
          if opt.config_key is not None and getattr(request, opt.name) is not None}
    for opt in task.options:
        if opt.config_key is not None and request.task_args.get(opt.name) is not None:
            explicit[opt.config_key] = int(request.task_args[opt.name]) \
                if opt.kind == "int" else request.task_args[opt.name]
            by[opt.config_key] = opt.name
    try:
        cfg = resolve(task.name, files, request.overrides, explicit, base=base)
        task.check_config(cfg)
    except ConfigError as exc:
        raise _named_by_option(exc, by) from None
    owner_check(task, cfg)
    return cfg


def _named_by_option(exc: ConfigError, by: dict[str, str]) -> ConfigError:
    """``exc`` naming the option the user gave (``--tile``), not the config key it sets
    (``tile.size``): explicit options are the config's top layer, so a value out of range
    ("config key 'tile.size' must be ...") of a key one of them sets is that option's."""
    for key, name in by.items():
        said = f"config key '{key}' must "
        if exc.template.startswith(said):
            return type(exc)(f"{{arg:{name}}} must {exc.template.removeprefix(said)}")
    return exc


def default_output(input_path: str | os.PathLike, task: str, fmt: str = "png") -> Path:
    """``{stem}_{task}.{fmt}`` in the current folder."""
    return Path(f"{Path(input_path).stem}_{task}{FORMATS[fmt]}")


def output_path(input_path: Path, task: str, output: str | os.PathLike | None,
                fmt: str | None) -> Path:
    """The result's path: ``output``, or the default name in the format ``fmt`` asks for."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if output is None:
        # a TIFF's result is a TIFF: it keeps 16 bits in colour, float and the float's range
        tiff = Path(input_path).suffix.lower() in (".tif", ".tiff")
        return default_output(input_path, task, fmt or ("tif" if tiff else "png"))
    given, output = str(output), Path(output)
    if not output.name or output.name in (".", ".."):
        raise InputError(f"output {shown(given) or repr(given)} names no file; give a file "
                         f"name such as {shown(output / 'result.png')}")
    try:
        output.resolve()
    except RuntimeError:  # Python before 3.13 raises it for a loop of symbolic links
        raise InputError(f"cannot use the path {shown(output)}: a loop of symbolic "
                         f"links") from None
    if fmt is not None and image.output_format(output) != image.output_format(
            Path("x" + FORMATS[fmt])):
        raise InputError(f"{{arg:format={fmt}}} disagrees with the output's extension "
                         f"'{output.suffix}' ({output}); give one of the two")
    return output


def beside(output: Path) -> dict[str, Path]:
    """What a run may write beside its result: the record, the report, the GIF, the snapshot
    folder."""
    return {"record": record_path(output),
            "report": output.with_name(f"{output.stem}_report.png"),
            "gif": output.with_name(f"{output.stem}.gif"),
            "uncertainty": output.with_name(f"{output.stem}_uncertainty.png"),
            "steps": output.with_name(f"{output.stem}_steps")}


def plan(request: RunRequest) -> Plan:
    """Check the request and decide every path; nothing is read (but the config files) or
    written.

    Raises:
        InputError, ConfigError: naming the argument or config key.
    """
    task = get_task(request.task)
    if request.input is None:
        raise InputError("no input image given")
    image.regular_file(request.input, "input")  # before its output's folder is asked about
    for opt in request_options():
        if opt.kind not in ("list", "dict"):
            opt.check(getattr(request, opt.name))
    args = _task_args(task, request)
    request = request.replace(task_args=args)
    cfg = resolve_config(request)
    build_stop_rule(cfg.stop)  # the stop.* settings checked now, before any job runs
    out = output_path(Path(request.input), task.name, request.output, request.format)
    files = beside(out)
    every = cfg.output.save_every or (max(1, cfg.optim.iters // 50) if request.gif else 0)
    the_plan = Plan(request, task, cfg, out, files, every if request.write else 0)
    if request.report and request.write:
        reports.require_matplotlib()
    if request.uncertainty and cfg.optim.restarts < 2:
        raise InputError("{arg:uncertainty} maps where restarts disagree; it needs "
                         "{arg:restarts} of 2 or more")
    if request.gif and files["gif"] == out:
        raise InputError(f"{{arg:gif}} would write {out}, the result's own path; give the "
                         f"result another format")
    if request.write:
        check_outputs(the_plan)
    return the_plan


def _task_args(task: Any, request: RunRequest) -> dict[str, Any]:
    """The task's own options checked, with their defaults (a record's settings for those
    the user does not give)."""
    args = dict(request.task_args)
    unknown = sorted(set(args) - {o.name for o in task.options})
    if unknown:
        raise InputError(f"{task.name} takes no option {unknown[0]!r} (its own: "
                         f"{', '.join(o.name for o in task.options) or 'none'})")
    for opt in task.options:
        if opt.needs is not None and args.get(opt.name) is not None and not args.get(opt.needs):
            raise InputError(f"{{arg:{opt.name}}} applies only with {{arg:{opt.needs}}}; "
                             f"without it the setting would be ignored")
    # a record passed as config reruns with its settings: those the user does not give
    rerun = [o.name for o in task.options if o.rerun and args.get(o.name) is None]
    if rerun and request.config:
        args.update(recorded_options(request.config, task.name, rerun))
    for opt in task.options:
        args[opt.name] = opt.check(args.get(opt.name, opt.default))
    task.check(args)
    return args


def written_files(p: Plan) -> list[Path]:
    """The files a run writes: result, record, and the pictures asked for."""
    return [p.output, p.files["record"]] + [p.files[k] for k in PICTURES
                                            if getattr(p.request, k)]


def _unread_record(output: Path, index: int) -> str:
    """Why a result beside its record file is not known as dip's: the record cannot be read
    (a batch's job said only "already exists" of a result whose record a full disk or a
    kill had cut short)."""
    path = record_path(output)
    if index or not path.is_file():
        return ""
    try:  # a record, or another program's JSON sidecar: nothing to add
        json.loads(path.read_text(encoding="utf-8"))
        return ""
    except (OSError, ValueError):
        return f" (its record {shown(path.name)} cannot be read as one: cut short?)"


def check_written(outputs: list[Path], reads: list[Path], overwrite: bool) -> None:
    """Before any work: every file to be written has a folder that exists or can be created
    and written, is none of the files read, and is not already there unless ``overwrite``.
    Nothing is created here.

    Raises:
        InputError: with the path and what to do.
    """
    path, probed = None, set()
    try:
        read = {given.resolve() for given in reads if given.exists()}
        for i, path in enumerate(outputs):
            # by name, and by file: Photo.png is photo.png where names ignore case (macOS,
            # Windows), and a hard link is the input's bytes under another name
            if path.resolve() in read or path.exists() and any(
                    os.path.samefile(path, given) for given in read):
                raise InputError(f"output {shown(path)} is one of the run's input files; "
                                 f"choose another output name")
            if path.is_dir() and i == 0:
                raise InputError(f"output {shown(path)} is a folder; give a file name such as "
                                 f"{shown(path / 'result.png')}")
            if path.is_dir():  # where the record, report, GIF ... goes, named after the result
                raise InputError(f"a folder {shown(path)} is where this run writes a file "
                                 f"named after its result; move it or choose another output")
            # each file is written anew and renamed into its place: a pipe, or a device node
            # named out.png, was replaced by a regular file
            if path.exists() and not path.is_file():
                raise InputError(f"{shown(path)} is not a regular file (a pipe or a device?); "
                                 f"choose another output")
            if path.exists() or path.is_symlink():  # a link to nothing too
                if not overwrite:
                    raise InputError(f"{shown(path)} already exists"
                                     f"{_unread_record(path, i)}; use {{arg:overwrite}} to "
                                     f"replace it")
                _check_replaceable(path)
            if path.parent not in probed:  # (the record, report ... share its folder)
                writable_folder(path.parent, f"output {shown(path)}", create=False)
                probed.add(path.parent)
    except OSError as exc:  # a name too long for the file system, a loop of links, ...
        raise InputError(f"cannot use the path {shown(exc.filename or '')}: "
                         f"{exc.strerror or exc}") from None
    except RuntimeError:  # Python before 3.13: a loop of symbolic links in resolve()
        where = shown(path) if path is not None else "of a file the run reads"
        raise InputError(f"cannot use the path {where}: a loop of symbolic links") from None


def _check_replaceable(path: Path) -> None:
    """``path`` is not another user's file in a sticky folder (``/tmp``) of another user's,
    which only its owner (or root) may remove or rename over: the run found out after its fit.

    Raises:
        InputError: naming the file.
    """
    euid = os.geteuid() if hasattr(os, "geteuid") else 0
    folder, st = path.parent.stat(), path.lstat()
    if euid != 0 and folder.st_mode & stat.S_ISVTX and euid not in (st.st_uid, folder.st_uid):
        raise InputError(f"cannot replace {shown(path)}: it is another user's, in a folder "
                         f"where only a file's owner may remove it (sticky, as /tmp); choose "
                         f"another output")


def check_name_length(output: Path, written: list[Path], what: str = "output",
                      option: str = "") -> None:
    """The result's name leaves room for the names dip gives the files beside it (its record
    ``NAME.json`` and the temporary ``.NAME.json.XXXXXXXX.part``), within what the folder's
    file system allows (255 bytes on most). ``what`` the name is (a batch's summary too),
    and the ``option`` that gives it, for the message.

    Raises:
        InputError: with the longest name that fits.
    """
    own = name_length(output.name)
    extra = max(name_length(f.name) for f in written) + image.TEMPORARY_EXTRA - own
    limit = name_limit(output.parent)
    if own + extra > limit:
        unit = "characters" if WINDOWS else "bytes"
        raise InputError(f"{what} name {shown(output.name)} is too long ({own} {unit}): the "
                         f"file system allows {limit} in a name and dip's files beside it add "
                         f"{extra}; use at most {limit - extra} {unit}"
                         + (f" for {option}" if option else ""))


#: Windows counts a name's length in UTF-16 units (255 on NTFS, FAT's long names, ReFS), not
#: in the bytes of its UTF-8, which is what Python's file names are encoded in there: a name
#: of 100 Chinese characters (300 bytes of UTF-8) is allowed
WINDOWS = os.name == "nt"


def name_length(name: str, windows: bool | None = None) -> int:
    """A file name's length as its file system counts it (:data:`WINDOWS`): UTF-16 units on
    Windows, the bytes of its encoding elsewhere."""
    if WINDOWS if windows is None else windows:
        return len(name.encode("utf-16-le", "surrogatepass")) // 2
    return len(os.fsencode(name))


def name_limit(folder: Path) -> int:
    """The longest file name, in bytes (UTF-16 units on Windows), the file system of
    ``folder`` (or of the folder it will be made in) allows: 255 on most, and where it cannot
    be asked."""
    try:
        missing = missing_folders(folder)
        return os.pathconf(missing[-1].parent if missing else folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError, RuntimeError):  # no pathconf, or no answer
        return 255


def write_files(pictures: list[tuple[Path, image.Picture]]) -> None:
    """Write pictures together, atomically (folders created first); a failure is one clear
    error."""
    for path, picture in pictures:
        image.check_side(path, picture.size)
        writable_folder(path.parent, f"output {shown(path)}")
    try:
        image.write_all_atomic([(path, image.image_writer(pic, path)) for path, pic in pictures])
    except (OSError, ValueError) as exc:  # Pillow's encoders raise either
        raise _not_written(exc, pictures[0][0]) from None


def _not_written(exc: OSError | ValueError, first: Path) -> RunError:
    """A failed write as one line: the file that failed (:func:`dip.image.write_all_atomic`
    names it; an encoder's ValueError does not: ``first``) and why."""
    return RunError(f"cannot write {getattr(exc, 'filename', None) or first}: "
                    f"{getattr(exc, 'strerror', None) or exc}")


def check_outputs(p: Plan) -> None:
    """The result's format can hold it, :func:`check_written` for the run's files, and its
    snapshot folder."""
    image.output_format(p.output)
    check_name_length(p.output, written_files(p))
    check_written(written_files(p), p.reads, p.request.overwrite)
    steps = p.files["steps"]
    if p.snapshot_every:
        if steps.exists() and not steps.is_dir():
            raise InputError(f"{steps} is a file where the snapshot folder goes; move it or "
                             f"give another output name")
        if steps.is_dir() and any(steps.iterdir()) and not p.request.overwrite:
            raise InputError(f"snapshot folder {steps} is not empty; use {{arg:overwrite}} "
                             f"to replace its files")
        if steps.is_dir():  # found now, not at the first snapshot
            can_write_in(steps, "snapshot folder")
        # --overwrite clears and rewrites the folder's step_*.png: never a file the run reads
        folder = steps.resolve() if steps.is_dir() else None
        inside = [path for path in p.reads
                  if folder is not None and path.exists() and path.resolve().parent == folder]
        if inside:
            raise InputError(f"{shown(inside[0])} is in the snapshot folder {shown(steps)}, "
                             f"whose files a run with snapshots replaces; move it or give "
                             f"another output name")


def can_write_in(folder: Path, what: str) -> None:
    """Create and remove a file in ``folder`` (:func:`_refused_file`)."""
    if (exc := _refused_file(folder)) is not None:
        raise InputError(f"cannot write into the {what} {shown(folder)}: "
                         f"{exc.strerror or exc}")


def _refused_file(folder: Path) -> OSError | None:
    """Why a file cannot be made in ``folder``, or None: one is made and removed at once.
    ``os.access`` reads the permission bits, which root
    passes where the file system still refuses: NFS with root squashed, a share whose server
    refuses, a folder made immutable, /sys; a run found out after its fit, its work lost."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".dip-probe-"):
            return None
    except OSError as exc:
        return exc


def writable_folder(folder: Path, what: str, create: bool = True) -> None:
    """Check that ``folder`` exists or can be created, and can be written; create it only
    when ``create``.

    Raises:
        InputError: naming ``what`` the folder is for.
    """
    try:  # before mkdir, whose "File exists" would not say which
        missing = missing_folders(folder)
        existing = missing[-1].parent if missing else folder
        if existing.is_symlink() and not existing.exists():  # mkdir would meet it: "File
            raise InputError(f"cannot create the folder for {what}: {shown(existing)} is "
                             f"a symbolic link to nothing")  # exists", after the fit
        is_folder = existing.is_dir()
    except OSError as exc:  # a name too long, a loop of links
        raise InputError(f"cannot use the folder for {what}: {exc.strerror or exc}") from None
    if not is_folder:
        raise InputError(f"cannot create the folder for {what}: {shown(existing)} is a file")
    if create:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the folder for {what}: "
                             f"{exc.strerror or exc}") from None
        existing = folder
    if not os.access(existing, os.W_OK | os.X_OK) or _refused_file(existing) is not None:
        raise InputError(f"cannot write to the folder {shown(existing)} ({what})")


# --- load -------------------------------------------------------------------------------------

@dataclass
class Loaded:
    """The run's pixels, read and checked."""

    inputs: Inputs
    reference: torch.Tensor | None
    out_size: tuple[int, int]
    #: :func:`fingerprints` of the files read, taken as they were read (for the record)
    fingerprints: dict[str, str] = field(default_factory=dict)
    #: the input file is RGB with three equal channels (a grey photo saved or scanned as
    #: colour): fitted as grey, written back as RGB (:func:`grey_of_rgb`)
    rgb_of_grey: bool = False


def load(p: Plan) -> Loaded:
    """Read the input, the task's own files and the reference; check their sizes."""
    r = p.request
    # Before reading: a file replaced from here on differs from its recorded fingerprint,
    # so ``dip run`` redoes the job instead of keeping a result of the old file. One that
    # cannot be read is left to the readers below to name (a record without it is redone).
    try:
        prints = fingerprints(p)
    except OSError:
        prints = {}
    read = image.load_image(r.input, max_pixels=r.max_pixels)
    picture, rgb_of_grey = grey_of_rgb(read)
    if picture.size == (1, 1):  # BatchNorm of one pixel: every step undone, a random colour
        raise InputError(f"input {shown(r.input)} is a single pixel; there is nothing to "
                         f"restore it from")
    inputs = p.task.load(picture, p.args, p.cfg, r.max_pixels)
    if r.write:  # (the format is checked by plan() when written)
        warn_of_what_the_format_drops(p.output, inputs.as_read())
    out_size = p.task.out_size(inputs.picture.size, p.cfg)
    out_pixels = out_size[0] * out_size[1]
    if out_pixels > r.max_pixels:
        raise image.too_large(f"the result would be {out_size[1]}x{out_size[0]}", out_pixels,
                              r.max_pixels)
    if r.write:
        image.check_side(p.output, out_size)
    ref = None
    if r.reference is not None:
        ref, inputs, rgb_of_grey = _reference(r, picture, read, inputs, out_size, rgb_of_grey)
    return Loaded(inputs, ref, out_size, prints, rgb_of_grey)


def warn_of_what_the_format_drops(output: Path, picture: image.Picture) -> None:
    """A warning for each thing of the input the result's format cannot hold: transparency,
    a colour profile other than sRGB's, a PNG's gamma or primaries other than sRGB's, more
    than 8 bits a sample (16 in PNG)."""
    fmt = image.output_format(output)
    if (picture.alpha is not None and fmt not in image.ALPHA_FORMATS
            and (picture.alpha < 1).any()):
        warnings.warn(f"{shown(output)}: {fmt} holds no transparency, so the input's is "
                      f"dropped (write .png, .tif or .webp to keep it)", image.DipWarning,
                      stacklevel=outside_dip())
    if (icc := image.matching_icc(picture)) and not image.written_icc(picture, fmt) \
            and not image.is_srgb(icc):
        holds = "no colour profile" if fmt == "BMP" else "grey as RGB, which a grey profile " \
            "does not describe"
        warnings.warn(f"{shown(output)}: {fmt} holds {holds}, so the input's is dropped and "
                      f"its colours may look different (write .png or .tif to keep it)",
                      image.DipWarning, stacklevel=outside_dip())
    if fmt != "PNG" and (said := image.shown_otherwise(picture)):
        verb = "are" if " and " in said else "is"
        warnings.warn(f"{shown(output)}: {fmt} holds no PNG colour chunks, so the input's "
                      f"{said} {verb} dropped and the picture may look different (write .png "
                      f"to keep {'them' if verb == 'are' else 'it'})", image.DipWarning,
                      stacklevel=outside_dip())
    _warn_of_metadata_dropped(output, fmt, picture)
    if (kept := image.written_bits(picture.bits, fmt)) < picture.bits:
        depth, keeps = (("float", ".tif") if picture.bits == 32 else
                        (f"{picture.bits}-bit", ".png or .tif"))
        warnings.warn(f"{shown(output)}: {fmt} holds {kept} bits a sample, so the input's "
                      f"{depth} samples are rounded to {kept} bits (write {keeps} to keep "
                      f"them)", image.DipWarning, stacklevel=outside_dip())


def _warn_of_metadata_dropped(output: Path, fmt: str, picture: image.Picture) -> None:
    """A warning where the result's format drops the input's EXIF or XMP: BMP holds none, a
    TIFF result the camera and description but not the EXIF's directories (it was silent)."""
    if fmt == "BMP" and (picture.exif or picture.xmp):
        held = " and ".join(n for n, b in (("EXIF", picture.exif), ("XMP", picture.xmp)) if b)
        one = " and " not in held
        warnings.warn(f"{shown(output)}: BMP holds no metadata, so the input's {held} (camera, "
                      f"date taken, captions) {'is' if one else 'are'} dropped (write .png, "
                      f".jpg or .webp to keep {'it' if one else 'them'})", image.DipWarning,
                      stacklevel=outside_dip())
    if fmt == "TIFF" and (lost := metadata.directories(picture.exif)):
        warnings.warn(f"{shown(output)}: a TIFF result keeps the input's camera and description "
                      f"but not its EXIF directories, so its {' and '.join(lost)} are dropped "
                      f"(write .png, .jpg or .webp to keep them)", image.DipWarning,
                      stacklevel=outside_dip())


def _reference(r: RunRequest, picture: image.Picture, read: image.Picture, inputs: Inputs,
               out_size: tuple[int, int],
               rgb_of_grey: bool) -> tuple[torch.Tensor, Inputs, bool]:
    """The reference read in the input's units and checked against the result's size and
    channels: a grey picture in RGB (three equal channels) as grey beside a grey input; an
    input read as grey from RGB made RGB again beside a colour reference."""
    read_ref = image.load_image(r.reference, what="reference",
                                max_pixels=max(out_size[0] * out_size[1], r.max_pixels))
    ref = get_task(r.task).scored_against(image.in_units_of(read_ref, picture), read_ref.alpha)
    if tuple(ref.shape[-2:]) != out_size:
        raise InputError(f"reference {r.reference} is {ref.shape[-1]}x{ref.shape[-2]} but "
                         f"the result will be {out_size[1]}x{out_size[0]}")
    if rgb_of_grey:  # a grey reference, or one as RGB too; against a colour one, RGB
        grey = ref if ref.shape[1] == 1 else _grey(ref)
        rgb_of_grey = grey is not None
        if grey is None:
            rgb = as_rgb(inputs.picture)
            if inputs.picture.coding_error is not None:  # the file's pixels, its error
                rgb = dataclasses.replace(rgb, coding_error=read.coding_error)
            rgb = dataclasses.replace(rgb, jpeg_noise=inputs.picture.jpeg_noise)
            inputs = dataclasses.replace(inputs, picture=rgb)
        else:
            ref = grey
    elif inputs.picture.pixels.shape[1] == 1 and ref.shape[1] == 3 and inputs.tint is None:
        ref = grey if (grey := _grey(ref)) is not None else ref  # saved as RGB
    # (a colour picture of one noise, read as its grey, is scored in colour: dip.tint)
    channels = inputs.picture.pixels.shape[1] if inputs.tint is None else 3
    if ref.shape[1] != channels:
        raise InputError(f"reference {r.reference} has {ref.shape[1]} channel(s), the "
                         f"input {channels}; both must be grey or both colour")
    return ref, inputs, rgb_of_grey


def _grey(pixels: torch.Tensor) -> torch.Tensor | None:
    """``(1, 3, H, W)`` whose three channels are equal as ``(1, 1, H, W)``, else None."""
    if pixels.shape[1] != 3 or not (torch.equal(pixels[:, 0], pixels[:, 1])
                                    and torch.equal(pixels[:, 1], pixels[:, 2])):
        return None
    return pixels[:, :1].clone()


def grey_of_rgb(picture: image.Picture) -> tuple[image.Picture, bool]:
    """A picture whose three channels are equal (a black-and-white photo saved or scanned as
    RGB, or its JPEG) as grey, and whether it was: fitted in colour it came out 6.6 dB worse
    (σ = 25, 48 px) -- the noise estimate read 0 from its patches, and SURE and the colour
    Wiener filter take the three copies of one noise for three independent ones."""
    grey = _grey(picture.pixels)
    if grey is None:
        return picture, False
    coding = picture.coding_error  # a JPEG's: its luma's is the grey picture's
    return dataclasses.replace(picture, pixels=grey,
                               coding_error=coding and coding[:1]), True


def as_rgb(picture: image.Picture) -> image.Picture:
    """A grey picture as RGB of three equal channels (the file it came from)."""
    return picture.with_pixels(picture.pixels.expand(-1, 3, -1, -1).contiguous())


# --- build ------------------------------------------------------------------------------------

def check_device_name(name: str) -> None:
    """A device's name is one :func:`resolve_device` knows (whether this machine has it is
    resolve_device's to say)."""
    if name != "auto" and not re.fullmatch(r"cpu|mps|cuda(:(0|[1-9][0-9]{0,3}))?", name):
        raise InputError(f"unknown device {name[:40]!r}: use auto, cpu, cuda, cuda:N or mps")


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> a device that exists here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    check_device_name(name)
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name} requested but CUDA is not available here; "
                             f"use {{arg:device=cpu}}")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name} does not exist: {torch.cuda.device_count()} CUDA "
                             f"device(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("device mps requested but Metal is not available here; "
                         "use {arg:device=cpu}")
    return device


@dataclass
class Setup:
    """Everything the fit runs with, on its device: the whole problem, the run's layout
    (restarts x tiles, :mod:`dip.layout`) and how each member is built."""

    device: torch.device
    perf: Perf
    problem: Problem
    layout: Layout
    member: Callable[[int], Member]
    channels: int
    #: the step settings every member fits with (the budget grown for less noise: build)
    settings: Settings
    estimate: Estimate | None = None
    #: the noise level the members take (SURE, the stop's floor and budget; [0, 1] units):
    #: :func:`noise_level`, None where nothing takes one
    noise_sigma: float | None = None


def build(p: Plan, loaded: Loaded) -> Setup:
    """The operator and observation on the run's device, the layout, and a builder for each
    member (seeded from the run's seed and the member's part, :mod:`dip.members`).

    Raises:
        RunError: out of memory already here (a network far too wide for the machine: the
            layout builds one to measure it).
    """
    try:
        return _build(p, loaded)
    except (torch.cuda.OutOfMemoryError, RuntimeError, MemoryError) as exc:
        if not out_of_memory(exc):
            raise
        raise RunError(f"out of memory on {resolve_device(p.cfg.device)} building the "
                       f"network: its widths (net.channels_down, net.channels_up, "
                       f"input.channels) are too large for this machine") from None


def _build(p: Plan, loaded: Loaded) -> Setup:
    cfg = p.cfg
    dev = resolve_device(cfg.device)
    problem = p.task.problem(loaded.inputs, cfg)
    perf = resolve_perf(cfg.perf, dev, constant_lr=cfg.optim.schedule == "constant",
                        one_pass=problem.objective == "mse")
    problem.operator = problem.operator.to(dev)
    problem.observation = problem.observation.to(dev)
    channels = loaded.inputs.picture.pixels.shape[1]
    layout = plan_layout(cfg, problem, channels, dev, lambda part: p.task.solved(part, p.args),
                         stack=perf.stack, blind=p.task.blind)
    ref = loaded.reference.to(dev) if loaded.reference is not None else None
    sigma = noise_level(cfg, problem)
    _warn_of_unread_stop_settings(p, sigma is not None)
    tint = loaded.inputs.tint  # (dip.tint: the result is the grey fit's, in colour)
    tint = tint and dataclasses.replace(tint, rest=tint.rest.to(dev), gains=tint.gains.to(dev))

    def returned(estimate: torch.Tensor) -> torch.Tensor:  # the result made of it, as _combined
        result = p.task.consistent(estimate.detach(), None, loaded.inputs, p.args, cfg,
                                   sample=True)[0]
        return result if tint is None else tint.coloured(result)

    # for the peak of one fit of the whole image (the only one the record keeps)
    whole = returned if len(layout.parts) == 1 and layout.tiles is None else None
    if ref is not None and tint is not None and whole is None:  # a part's: its grey's
        ref = tint.grey(ref)

    def member(i: int) -> Member:
        return build_member(cfg, problem, layout.parts[i], channels, ref, sigma, whole)

    # the budget grows for a less noisy image than stop.budget_sigma (0: optim.iters as is)
    iters = (cfg.optim.iters if sigma is None or cfg.stop.rule != "auto"
             else noise_budget(cfg.optim.iters, sigma, cfg.stop.budget_sigma / 255))
    settings = dataclasses.replace(_settings(cfg), iters=iters)
    return Setup(dev, perf, problem, layout, member, channels, settings, noise_sigma=sigma)


def _warn_of_unread_stop_settings(p: Plan, uses_noise_level: bool) -> None:
    """A warning for the ``stop.*`` settings the user gave that this run never reads: the
    rule's others (``stop.patience`` under ``fixed``) and ``stop.sigma`` where nothing takes a
    noise level (super-resolution under ``auto``, which neither floors nor grows its budget
    by it), and ``stop.budget_sigma`` set before a budget of the user's
    (:attr:`RunConfig.overruled`). A config shared by a batch's tasks sets them for all; the
    run goes on."""
    cfg = p.cfg
    unread = [k for k in unread_settings(cfg.stop.rule, cfg.given) if k not in cfg.overruled]
    if unread:
        one = len(unread) == 1
        warnings.warn(f"{' and '.join(unread)} {'is' if one else 'are'} ignored: stop.rule "
                      f"{cfg.stop.rule} does not read {'it' if one else 'them'}",
                      image.DipWarning, stacklevel=outside_dip())
    for key, later in cfg.overruled.items():
        warnings.warn(f"{key} is ignored: the step budget set after it ({later}) is the "
                      f"budget as it is; give {key} with that budget to grow it",
                      image.DipWarning, stacklevel=outside_dip())
    # denoising's Wiener filter (Task.finish) takes it too, whatever the fit does
    if ("stop.sigma" in cfg.given and cfg.stop.sigma and not uses_noise_level
            and not p.task.finishes(cfg)):
        warnings.warn(f"stop.sigma is ignored: nothing in this {p.task.name} run reads a "
                      f"noise level (it is read by SURE, by stop.rule auto_if_noisy and by "
                      f"stop.rule auto with stop.noise_floor or stop.budget_sigma)",
                      image.DipWarning, stacklevel=outside_dip())


def noise_level(cfg: RunConfig, problem: Problem) -> float | None:
    """The noise level the denoising stop uses, for its floor and its budget, SURE for its
    risk (:mod:`dip.sure`) and ``auto_if_noisy`` to decide whether to stop automatically:
    ``stop.sigma``, the task's, or estimated -- once for the whole image, so that its tiles
    agree and no member estimates it again. None where nothing uses it."""
    stop = cfg.stop
    sure = any(problem.fits_sure(r) for r in range(cfg.optim.restarts))  # not alternate's 1
    uses = (sure or stop.rule == "auto_if_noisy"
            or stop.rule == "auto" and (stop.noise_floor > 0 or stop.budget_sigma > 0))
    if not uses:
        return None
    if stop.sigma:
        return stop.sigma / 255
    if problem.noise_sigma is not None:
        return problem.noise_sigma
    return estimate_sigma(problem.observation)


def estimate(p: Plan, setup: Setup) -> Estimate:
    """The run's time (a few calibration steps of members shaped like its own, cached per
    machine: :func:`dip.estimate.calibrate`) and peak memory, before its first step."""
    layout = setup.layout
    # a last step without a network (denoising's Wiener filter: minutes for a 12 MP photo)
    finish = (p.task.finish_seconds(setup.problem.observation, p.cfg,
                                    setup.problem.noise_sigma)
              if p.task.finishes(p.cfg) else 0.0)
    if not layout.fitted():
        return Estimate(finish, layout.peak_bytes, str(setup.device))
    side = member_side(setup.problem, layout)
    trial = calibration_parts(layout)

    def fit_steps(on_step: Callable[[], None], n: int) -> None:
        # without the reference's PSNR: the rate is cached for runs with none
        fit_group([dataclasses.replace(setup.member(i), metric=None) for i in trial],
                  dataclasses.replace(setup.settings, iters=n), perf=setup.perf,
                  threads=layout.threads, callback=lambda i, s: on_step())

    run_steps = _with_denoiser(timed_steps(fit_steps, len(trial), warm_steps(setup.perf)),
                               p.cfg, setup, side, len(trial))
    with _memory_advice(p, setup):
        key = calibration_key(p.cfg, setup.problem, layout, setup.channels, side)
        rate = calibrate(key, setup.device, run_steps)
    return Estimate(seconds(layout, rate, setup.settings.iters) + finish, layout.peak_bytes,
                    str(setup.device))


def _with_denoiser(run_steps: Callable[[int], float], cfg: RunConfig, setup: Setup,
                   side: tuple[int, int], at_once: int) -> Callable[[int], float]:
    """A calibration's ``run_steps`` plus DeepRED's denoiser's share of a step (dip.red): it
    runs every ``red.every`` steps, which a few calibration steps never reach. Members side by
    side run theirs at the same time, on their own cores."""
    red = red_from_config(cfg.red)
    if red is None:
        return run_steps
    return lambda n: (run_steps(n)
                      + red_seconds(red, setup.channels, side, setup.device) / at_once)


def _settings(cfg: RunConfig) -> Settings:
    o = cfg.optim
    return Settings(o.iters, o.lr, o.average, cfg.input.perturb_std, o.guard,
                    cfg.output.metrics_every, o.schedule, o.lr_end)


# --- fit --------------------------------------------------------------------------------------

@dataclass
class Fitted:
    """What the members made: the result (and the restarts' spread), each member's outcome
    (a FitResult, the error that ended it, or the image of a part that needed no fit), and
    the first fitted member's result (its curves go into the record)."""

    image: torch.Tensor
    spread: torch.Tensor | None
    outcomes: list[FitResult | RunError | torch.Tensor]
    first: FitResult
    #: Ctrl-C stopped a fit or the task's last step (:meth:`Task.finish`), which was skipped
    interrupted: bool = False


def fit_stage(p: Plan, loaded: Loaded, setup: Setup,
              progress: Callable[[Progress], None] | None = None,
              keep_on_interrupt: bool = False) -> Fitted:
    """Fit the run's members together (:func:`dip.fitting.fit_group`) and combine them; write
    a snapshot of the combined estimate every ``plan.snapshot_every`` steps, into
    :func:`staged_snapshots` (they replace the snapshot folder's once the result is written).

    Raises:
        RunError: every restart of a tile (or of the image) failed: divergence the guard could
            not undo; out of memory (with advice); a snapshot that cannot be written.
    """
    layout = setup.layout
    fitted = layout.fitted()
    live = _Live(p, loaded, setup, progress, keep_on_interrupt)
    _reset_cuda_peak(setup.device)
    with _memory_advice(p, setup):
        outcomes = fit_group([lambda i=i: setup.member(i) for i in fitted], setup.settings,
                             perf=setup.perf, threads=layout.threads, callback=live.on_step,
                             keep_on_interrupt=keep_on_interrupt, at_once=layout.at_once,
                             adapt_threads=fixed_threads(p.cfg.perf.threads) is None)
    live.remember_rate()
    return _combined(live, dict(zip(fitted, outcomes)))


def _reset_cuda_peak(device: torch.device) -> None:
    """The record's ``cuda_peak_gb`` is the fit's own peak, not an earlier run's in the
    process."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def staged_snapshots(p: Plan) -> Path:
    """The hidden folder a run's snapshots are written into while it fits: they replace the
    snapshot folder's only once the result is written (:func:`write`), so that a run that
    fails, or is killed, leaves the earlier result's snapshots as they were, and no folder
    that would block its rerun. Named after the result's whole name, which the run holds
    (:func:`claimed`): ``x.png`` and ``x.jpg`` share ``x_steps/`` but not this."""
    return staged_folder(p.output)


def staged_folder(output: Path) -> Path:
    """:func:`staged_snapshots`' folder for the result ``output``."""
    return output.with_name(f".{output.name}.steps.dip-new")


def _snapshot_files(folder: Path, read: list[Path] = ()) -> list[Path]:
    """The snapshots in ``folder``, and those a kill left half-written, but the run's
    inputs."""
    reads = {path.resolve() for path in read}
    return [path for path in [*folder.glob("step_*.png"), *folder.glob(".step_*.part")]
            if path.resolve() not in reads] if folder.is_dir() else []


def _clear_staged(p: Plan) -> None:
    """The staged snapshots of a run that did not write its result (a kill), or of this one
    when it ends without its result; and their folder. What cannot be removed stays (the
    next run that holds the result tries again)."""
    staged = staged_snapshots(p)
    if p.request.write and staged.is_dir():  # (a run that writes nothing holds no claim)
        for old in _snapshot_files(staged, p.reads):  # (an input copied in there stays)
            with contextlib.suppress(OSError):
                old.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            staged.rmdir()


def _install_snapshots(p: Plan) -> None:
    """The staged snapshots replace the snapshot folder's (the result is written); a run
    that took none (it stopped before its first) leaves no folder. Where they cannot be
    moved (a folder on another file system) a warning says so, and they go with the staged
    folder (:func:`claimed_files`)."""
    steps, staged = p.files["steps"], staged_snapshots(p)
    new = sorted(staged.glob("step_*.png"))
    try:
        for old in _snapshot_files(steps, p.reads):
            old.unlink(missing_ok=True)
        if new:
            steps.mkdir(exist_ok=True)
        for path in new:
            os.replace(path, steps / path.name)
    except OSError as exc:
        warnings.warn(f"the result is written, but its snapshots could not be moved into "
                      f"{shown(steps)} ({exc.strerror or exc}) and are not kept",
                      image.DipWarning, stacklevel=outside_dip())
        return
    with contextlib.suppress(OSError):
        staged.rmdir()
        if not new:
            steps.rmdir()  # emptied of the replaced result's


def _combined(live: _Live, results: dict, stopped: bool = False) -> Fitted:
    """The members' outcomes (fitted part -> outcome) combined into the run's result.

    Raises:
        RunError: every member failed (the first one's error).
    """
    if live.failed is not None:  # not one member's failure: the run's (a full disk)
        raise RunError(live.failed)
    every = live.outcomes(results)
    first = next((o for o in results.values() if isinstance(o, FitResult)), None)
    if first is None:
        raise next(o for o in results.values() if isinstance(o, RunError))
    stopped = stopped or any(isinstance(o, FitResult) and o.stop_reason == "interrupted"
                             for o in results.values())
    try:  # after Ctrl-C, the estimate so far without the last step (minutes on a large photo)
        combined = live.combined(every, final=not stopped)
    except KeyboardInterrupt:  # Ctrl-C in the last step: the fits' result is kept, not lost
        if not live.keep_on_interrupt:
            raise
        with interrupts.deferred():
            combined, stopped = live.combined(every), True
    if combined.failed and not stopped:  # the others' average is the result: said, not
        part, error = combined.failed[0]  # only in the record (Ctrl-C: its own message)
        warnings.warn(f"{len(combined.failed)} of {len(live.fitted)} fits failed and are left "
                      f"out of the result (restart {part.restart}"
                      f"{'' if part.tile is None else ' of a tile'}: "
                      f"{error})", image.DipWarning, stacklevel=outside_dip())
    return Fitted(combined.image, combined.spread, every, first, interrupted=stopped)


@contextmanager
def _memory_advice(p: Plan, setup: Setup) -> Iterator[None]:
    """Out of memory (in the fit, or already in its calibration) as one RunError that says
    what to try."""
    try:
        yield
    except (torch.cuda.OutOfMemoryError, RuntimeError, MemoryError) as exc:
        if not out_of_memory(exc):
            raise
        advice = ["a smaller image"]
        # tiles smaller than the result, or than the tiles it had (a --tile 256 for a 128 px
        # result changed nothing)
        side = setup.layout.side or max(setup.problem.out_size)
        smaller = next((t for t in (256, 128, 64, MIN_TILE) if t < side), None)
        if smaller is not None:
            advice.append(f"{{arg:tile={smaller}}}")
        if setup.device.type != "cpu":
            advice.append("{arg:device=cpu}")
        if p.cfg.preset != "fast":
            advice.append("the narrower network of {arg:preset=fast}")
        h, w = setup.problem.out_size
        raise RunError(f"out of memory on {setup.device} for a {w}x{h} result; try "
                       f"{' or '.join(advice)}") from None


class _Live:
    """The fit as it goes: each member's latest estimate, progress for the caller (one bar
    over every member's steps), snapshots of the combined estimate."""

    def __init__(self, p: Plan, loaded: Loaded, setup: Setup,
                 progress: Callable[[Progress], None] | None,
                 keep_on_interrupt: bool = False) -> None:
        self.p, self.loaded, self.setup, self.progress = p, loaded, setup, progress
        self.keep_on_interrupt = keep_on_interrupt
        self.fitted = setup.layout.fitted()
        self.latest: dict[int, torch.Tensor] = {}
        self.done = 0
        self.total = len(self.fitted) * setup.settings.iters
        # the real rate, timed as a calibration is: from the end of the first steps of the
        # members that run side by side (warm-up) to the end of the last
        self.warm = len(calibration_parts(setup.layout)) * warm_steps(setup.perf)
        self.warm_at = self.last_at = 0.0
        #: a file the run must write failed (a snapshot): the whole run fails, not a member
        self.failed: str | None = None

    def remember_rate(self) -> None:
        """Cache the run's own seconds per member-step for the next estimate of fits like
        these (:func:`dip.estimate.remember`); a run too short to time leaves it."""
        steps = self.done - self.warm
        if steps < CALIBRATION_STEPS:
            return
        setup = self.setup
        key = calibration_key(self.p.cfg, setup.problem, setup.layout, setup.channels,
                              member_side(setup.problem, setup.layout))
        remember(key, setup.device, (self.last_at - self.warm_at) / steps)

    def outcomes(self, results: dict[int, FitResult | RunError | None]) -> list:
        """Every part's outcome: its fit's, its solved image, or (never started) a stand-in."""
        layout = self.setup.layout
        return [layout.solved[i] if i in layout.solved
                else results[i] if results.get(i) is not None
                else self.latest.get(i, stand_in(self.setup.problem, part))
                for i, part in enumerate(layout.parts)]

    def combined(self, every: list, final: bool = False) -> Combined:
        """Every part's outcome (:meth:`outcomes`) combined, then made to agree with the input
        where it determines the result (:meth:`Task.consistent`: inpainting's known pixels,
        super-resolution's back-projection), and for the ``final`` result the task's last
        step (:meth:`Task.finish`: denoising's Wiener filter)."""
        setup, loaded = self.setup, self.loaded
        combined = combine(setup.layout.parts, every, (1, setup.channels, *loaded.out_size),
                           setup.problem.scale)
        result, spread = self.p.task.consistent(combined.image, combined.spread, loaded.inputs,
                                                self.p.args, self.p.cfg)
        if final and self.p.task.finishes(self.p.cfg):
            result = self.p.task.finish(result, loaded.inputs, self.p.cfg)
        return dataclasses.replace(combined, image=result, spread=spread)

    def on_step(self, index: int, s: Progress) -> None:
        if self.failed is not None:  # every member ends at its next step
            raise RunError(self.failed)
        self.latest[self.fitted[index]] = s.estimate
        self.done += 1
        self.last_at = time.perf_counter()
        if self.done == self.warm:
            self.warm_at = self.last_at
        step = self.done // len(self.fitted)
        every = self.p.snapshot_every
        if every and self.done % len(self.fitted) == 0 and step % every == 0:
            self._snapshot(step)
        if self.progress is not None:
            if len(self.fitted) == 1:
                self.progress(s)
            else:
                self.progress(Progress(self.done, self.total, s.loss, s.estimate, s.psnr,
                                       s.output))

    def _snapshot(self, step: int) -> None:
        loaded = self.loaded
        current = loaded.inputs.coloured(self.combined(self.outcomes({})).image)
        source = loaded.inputs.picture
        snap = image.Picture(current, self.p.task.out_alpha(loaded.inputs, loaded.out_size),
                             source.bits, source.value_range)
        steps = staged_snapshots(self.p)
        try:
            image.save_image(snap, steps / f"step_{step:06d}.png", mark="snapshot")
        except OSError as exc:
            self.failed = f"cannot write a snapshot into {steps}: {exc.strerror or exc}"
            raise RunError(self.failed) from None


# --- record -----------------------------------------------------------------------------------

def fingerprints(p: Plan) -> dict[str, str]:
    """The content of every file the run read, by what it was (input, reference, the task's
    own files): ``dip run`` redoes a job whose files changed under the same names."""
    named = {"input": Path(p.request.input)}
    if p.request.reference is not None:
        named["reference"] = Path(p.request.reference)
    for opt in p.task.options:
        value = p.args.get(opt.name)
        if opt.kind == "path" and value is not None and not opt.is_word(value):
            named[opt.name] = Path(value)
    return {name: fingerprint(path) for name, path in named.items() if path.is_file()}


def _rounded(values: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


def make_record(p: Plan, loaded: Loaded, setup: Setup, fitted: Fitted | FitResult,
                restored: image.Picture, seconds: float) -> Record:
    """The record of a run. Its steps, stop and curves are the first member's (the only one
    without restarts or tiles); ``members`` lists every member's when there are several."""
    if isinstance(fitted, FitResult):  # one fit, as the record has always described
        fitted = Fitted(fitted.image, None, [fitted], fitted)
    r, picture, result = p.request, loaded.inputs.picture, fitted.first
    # the stop's noise level, or the one SURE fitted with under a stop that takes none (fixed)
    level = result.noise_level if result.noise_level is not None else setup.noise_sigma
    record = Record(
        task=p.task.name, input=str(Path(r.input).resolve()),
        output=str(p.output.resolve()) if r.write else None,
        reference=str(Path(r.reference).resolve()) if r.reference is not None else None,
        iterations=result.iterations, returned_iteration=result.returned_iteration,
        stop_reason="interrupted" if fitted.interrupted else _stop_reason(fitted.outcomes),
        noise_sigma=None if level is None else round(level * 255, 3),
        seconds=round(seconds, 3), device=str(setup.device), preset=p.cfg.preset,
        perf=setup.perf.describe(), seed=p.cfg.seed,
        size={"input": list(picture.size), "output": list(loaded.out_size)},
        versions={"dip": __version__, "torch": torch.__version__,
                  "python": platform.python_version()},
        config=_config_to_rerun(p, setup, fitted),
        guard_restores=result.history.get("restores", []),
        history={k: [round(v, 6) if isinstance(v, float) else v for v in values]
                 for k, values in result.history.items() if k != "restores"},
        task_args=p.task.record_args(p.args),
        extra={**_extra(setup, fitted), **loaded.inputs.facts},
        fingerprints=dict(loaded.fingerprints))
    if loaded.reference is not None:
        ref = loaded.reference
        # a tile's peak is not the image's, nor one restart's the average's, nor the fit's
        # the result's when the task filtered it after the fit (Task.finish)
        one_fit = (setup.layout.tiles is None and p.cfg.optim.restarts == 1
                   and not p.task.finishes(p.cfg))
        record.metrics = _rounded({
            "psnr": metrics.psnr(restored.pixels, ref),
            "ssim": metrics.ssim(restored.pixels, ref),
            "peak_psnr": result.peak_psnr if one_fit else None,
            "peak_iteration": result.peak_iteration if one_fit else None,
            **_task_metrics(p, loaded, restored.pixels, ref)})
    if r.write:
        record.files = {k: str(p.files[k].resolve()) for k in PICTURES
                        if getattr(r, k)}
    return record


def _task_metrics(p: Plan, loaded: Loaded, result: torch.Tensor,
                  ref: torch.Tensor) -> dict[str, Any]:
    """The task's own figures (:meth:`Task.metrics`), measured as the files are: a grey
    picture read from RGB (three equal channels) in RGB, whose Y channel is not the grey
    (BT.601's 16 + 219/255 v: super-resolution's Y-PSNR was 1.32 dB under what an SR
    evaluation script gives for the same RGB files)."""
    inputs = loaded.inputs
    if loaded.rgb_of_grey:
        result, ref = (t.expand(-1, 3, -1, -1) for t in (result, ref))
        inputs = dataclasses.replace(inputs, picture=as_rgb(inputs.picture))
    if inputs.tint is not None:  # a colour picture read as its grey (dip.tint): in colour
        inputs = dataclasses.replace(inputs, picture=inputs.as_read(), tint=None)
    return p.task.metrics(result, ref, inputs, p.cfg)


def _stop_reason(outcomes: list) -> str:
    """One member's stop, or the members': interrupted if any was, else the most common."""
    reasons = [o.stop_reason for o in outcomes if isinstance(o, FitResult)]
    if "interrupted" in reasons:
        return "interrupted"
    return max(reasons, key=reasons.count)


def _config_to_rerun(p: Plan, setup: Setup, fitted: Fitted) -> dict[str, Any]:
    """The run's config, with ``perf.threads: auto`` made the threads its fits ran on where
    they ran one at a time on a count that never changed (a packed job's one fit: one
    thread, as a group's members): a thread count changes a fit's
    rounding (the README's small sample super-resolved on 1 and on 2 threads: 42.8 dB
    apart), and ``auto`` follows the machine's load, so a record that said ``auto`` reran on
    a freer machine as another image. A group's members run on one thread each whatever
    the count (:mod:`dip.threads`), and a fit whose threads followed the load cannot be
    replayed by one count (its record lists the changes): those keep ``auto``."""
    config = p.cfg.to_dict()
    layout = setup.layout
    results = [o for o in fitted.outcomes if isinstance(o, FitResult)]
    counts = {r.threads for r in results}  # 0 off the CPU
    if (p.cfg.perf.threads == "auto" and len(counts) == 1 and min(counts) > 0
            and min(layout.at_once, len(layout.fitted())) <= 1
            and not any(r.thread_changes for r in results)):
        config["perf"]["threads"] = str(min(counts))
    return config


def _extra(setup: Setup, fitted: Fitted) -> dict[str, Any]:
    """The task's facts, the estimate, and with several members their parts and stops."""
    extra = dict(setup.problem.facts)
    extra["budget"] = setup.settings.iters  # optim.iters, or grown (stop.budget_sigma)
    if setup.estimate is not None:
        extra["estimate"] = setup.estimate.to_dict()
    if setup.device.type == "cuda":  # the fit's peak, beside the estimate's
        extra["cuda_peak_gb"] = round(torch.cuda.max_memory_reserved(setup.device) / 2 ** 30, 2)
    layout = setup.layout
    if setup.device.type == "cpu":
        lanes = plan_lanes(min(layout.at_once, max(1, len(layout.fitted()))), layout.threads)
        # the threads the fits started on: a packed job's one fit ran on one, as members of
        # a group do, where alone it would have had the layout's
        extra["threads"] = {"fits_at_once": lanes.workers,
                            "per_fit": fitted.first.threads or lanes.intra}
        if fitted.first.thread_changes:  # other processes took cores: (step, threads)
            extra["threads"]["changes"] = [list(c) for c in fitted.first.thread_changes]
    if layout.tiles is not None:
        extra["tiles"] = layout.describe()
    if len(layout.parts) > 1:
        extra["members"] = [_member_row(part, o, i in layout.solved, setup.problem.scale)
                            for i, (part, o) in enumerate(zip(layout.parts, fitted.outcomes))]
    return extra


def _member_row(part: Part, outcome: Any, solved: bool, scale: int) -> dict[str, Any]:
    row = part.describe(scale)
    if isinstance(outcome, FitResult):
        row.update(iterations=outcome.iterations, returned_iteration=outcome.returned_iteration,
                   stop_reason=outcome.stop_reason,
                   guard_restores=len(outcome.history.get("restores", [])))
    elif isinstance(outcome, RunError):
        row["error"] = str(outcome)
    else:
        row["stop_reason"] = "no fit needed" if solved else "not started"
    return row


# --- write ------------------------------------------------------------------------------------

def _pictures(p: Plan, loaded: Loaded, restored: image.Picture, record: Record,
              spread: torch.Tensor | None) -> list[tuple[Path, Callable]]:
    """The report, GIF and uncertainty map asked for, drawn (not written).

    Raises:
        RunError: one could not be drawn.
    """
    pictures: list[tuple[Path, Callable]] = []
    try:  # drawn before anything is written: all the files, or none
        if p.request.report:
            key, label = p.task.headline
            score = (record.metrics or {}).get(key)
            with reports.quiet_matplotlib():
                data = reports.render_report(
                    loaded.inputs.as_read(), restored, record.to_dict(), loaded.reference,
                    p.task.report_mask(loaded.inputs), None if score is None else (label, score))
            pictures.append((p.files["report"], lambda f, d=data: f.write(d)))
        if p.request.gif:
            data = reports.render_gif(sorted(staged_snapshots(p).glob("step_*.png")), restored)
            pictures.append((p.files["gif"], lambda f, d=data: f.write(d)))
        if p.request.uncertainty and spread is not None:
            # marked as dip's own, so that a batch never takes it for a photo
            grey = (uncertainty_map(spread)[0, 0] * 255).round().to(torch.uint8).numpy()
            pictures.append((p.files["uncertainty"],
                             image.marked_png(Image.fromarray(grey, "L"), "uncertainty")))
    except Exception as exc:  # matplotlib's and Pillow's failures are many kinds
        raise RunError(f"could not draw the pictures of {p.output}: "
                       f"{type(exc).__name__}: {exc}") from None
    return pictures


def write(p: Plan, loaded: Loaded, restored: image.Picture, record: Record,
          spread: torch.Tensor | None = None) -> None:
    """Draw the pictures asked for, then write them with the result and its record, all or
    none (:func:`dip.image.write_all_atomic`): the record is renamed into place first, the
    pictures next, the image last. A kill between two renames leaves a record without its
    image, which a rerun redoes, and pictures its record names, which the rerun replaces as
    dip's own (:func:`dip.batch._replacing`); pictures before their record were a stranger's
    files that refused every rerun of the job.

    Raises:
        RunError: a picture could not be drawn, or a file not written.
    """
    pictures = _pictures(p, loaded, restored, record, spread)
    try:  # the folder was made or checked before the fit; since, it may have gone
        writable_folder(p.output.parent, f"output {shown(p.output)}")
    except InputError as exc:  # a run that fails, not a mistake before anything ran
        raise RunError(exc.template) from None
    stale = _stale_pictures(p)
    prints: dict[Path, str] = {}

    def record_text(f: BinaryIO) -> None:  # written last: the files it names are on disk
        kinds = {p.output: "output", **{p.files[kind]: kind for kind in PICTURES}}
        record.fingerprints.update({kinds[path]: value for path, value in prints.items()
                                    if path in kinds})  # as written: dip's own, unchanged
        f.write(record.to_json().encode())

    files = [(p.output, image.image_writer(restored, p.output)), *pictures,
             (p.files["record"], record_text)]  # (renamed in reverse order)

    aside, moved = set_aside(p), []

    def replace_old() -> None:
        # once every new file is written (a full disk keeps the old result whole), and away
        # before the new record is renamed into place: a kill between the two renames leaves
        # a record without an image (redone), never a new record beside the old image
        if p.request.overwrite:
            if aside is None:
                p.output.unlink(missing_ok=True)
            else:  # set aside, not deleted: put back if the new record cannot take its place
                with contextlib.suppress(FileNotFoundError):
                    os.replace(p.output, aside)
                    moved.append(aside)
            return
        theirs = next((path for path, _ in files if path.exists() or path.is_symlink()), None)
        if theirs is not None:  # the result, its record ... of someone's, made while dip ran
            raise RunError(f"{shown(theirs)} appeared while dip was running; it is kept and "
                           f"this result is not written (use {{arg:overwrite}} to replace it)")

    try:
        image.write_all_atomic(files, before_rename=replace_old, keep=p.reads, prints=prints)
    except (OSError, ValueError) as exc:  # Pillow's encoders raise either
        if moved:  # back in its place if no new file took its own: the record is first
            _put_back(aside, p.output, getattr(exc, "filename", None) == str(p.files["record"]))
        raise _not_written(exc, p.output) from None  # (or the report, the GIF ...)
    if moved:
        _put_back(aside, p.output, False)
    _clear_stale(p, stale)
    if p.snapshot_every:
        _install_snapshots(p)


def _clear_stale(p: Plan, stale: list[Path]) -> None:
    """The replaced result's pictures (:func:`_stale_pictures`), which would now describe
    another run, and their snapshot folder if it is left empty."""
    for path in stale:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
    if any(path.parent == p.files["steps"] for path in stale):
        with contextlib.suppress(OSError):
            p.files["steps"].rmdir()


def set_aside(p: Plan) -> Path | None:
    """Where :func:`write` keeps the result it replaces while the new one's files are renamed
    into place (hidden, beside it); None where that name is one of the run's inputs."""
    aside = p.output.with_name(f".{p.output.name}.dip-old")
    return None if aside.resolve() in {path.resolve() for path in p.reads} else aside


def _put_back(aside: Path | None, output: Path, nothing_renamed: bool) -> None:
    """The replaced result, set aside by :func:`write` (or by a run killed since): back in its
    place where no new file took its own (the new record's rename failed first: the earlier
    result stays whole), else gone."""
    if aside is None:
        return
    with contextlib.suppress(OSError):
        if nothing_renamed:
            os.replace(aside, output)
        else:
            aside.unlink(missing_ok=True)


def _stale_pictures(p: Plan) -> list[Path]:
    """The report, GIF and uncertainty map of the result this run replaces (its record names
    them) that this run does not write again; and its snapshots when this run takes none
    (a run with snapshots replaces them itself: :func:`_install_snapshots`)."""
    old = own_record(p.output) if p.request.overwrite and p.output.exists() else None
    if old is None:
        return []
    # the replaced result's snapshots, where it took any and no result of the same stem did
    # (q.png's redo without snapshots deleted q.jpg's, which share q_steps/, and a user's own
    # step_*.png there); a snapshot given as this run's input stays
    snapshots = [] if p.snapshot_every or not _took_snapshots(old) else sorted(
        path for path in _snapshot_files(p.files["steps"], p.reads) if path.suffix == ".png")
    reads = {str(path.resolve()) for path in p.reads}  # (the old map as this run's mask)
    where = {kind: str(p.files[kind].resolve()) for kind in PICTURES
             if not getattr(p.request, kind)}
    stale = [kind for kind, here in where.items()
             if str(located(old, kind, p.output)) == here and here not in reads
             and as_written(old, kind, p.files[kind])]  # (a user's edit of it stays)
    if stale or snapshots:  # (the folder is read once, and only where a picture would go)
        kept = _namesakes_pictures(p.output)
        stale = [kind for kind in stale if where[kind] not in kept]
        snapshots = [] if str(p.files["steps"].resolve()) in kept else snapshots
    return [p.files[kind] for kind in stale] + snapshots


def _took_snapshots(rec: dict) -> bool:
    """Whether the run a record describes wrote snapshots (``output.save_every``, or a GIF's)."""
    output = (rec.get("config") or {}).get("output") or {}
    return bool(output.get("save_every") or rec.get("gif"))


def _namesakes_pictures(output: Path) -> set[str]:
    """The pictures the results of the same stem beside ``output`` name as their own, and
    the snapshot folder where one took snapshots (``q.jpg`` beside ``q.png``: their pictures
    share names): ``-o q.jpg --report --overwrite`` took ``q_report.png`` over from
    ``q.png``, and a later ``-o q.png --overwrite`` deleted it as ``q.png``'s stale report."""
    try:  # their records: q.jpg.json, named by record_path
        namesakes = [f.with_suffix("") for f in output.parent.iterdir() if f.suffix == ".json"]
    except OSError:
        return set()
    named: set[str] = set()
    for other in namesakes:
        rec = own_record(other) if other.stem == output.stem and other != output else None
        if rec is not None:
            named |= {str(path) for kind in PICTURES
                      if (path := located(rec, kind, other)) is not None}
            if _took_snapshots(rec):  # their snapshot folder, shared too
                named.add(str(beside(other)["steps"].resolve()))
    return named


# --- one writer per output ----------------------------------------------------------------------

def claim_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.dip-claim")


@contextmanager
def claimed(output: Path) -> Iterator[None]:
    """Hold ``output`` for this run: a second dip writing the same file (another terminal, a
    second ``dip run`` of the same batch) fails at once with one line instead of silently
    replacing the first one's result. A claim whose process is gone (``kill -9``) is taken
    over.

    Raises:
        InputError: another live dip process holds it.
    """
    path = claim_path(output)
    # (with the process's start on Linux: a pid used again since is told apart exactly)
    me = f"{os.getpid()} {socket.gethostname()} {_process_started(os.getpid()) or ''}".rstrip()
    made = []
    with contextlib.suppress(OSError, RuntimeError):  # writable_folder says what is wrong
        made = missing_folders(path.parent)
    for attempt in range(3):
        writable_folder(path.parent, f"output {shown(output)}")
        try:
            held = _take_claim(path, output, me)
            break
        except FileNotFoundError as exc:  # a run that failed removed the folder it had made,
            if attempt == 2:  # as this one made it too (see the end): make it again
                raise RunError(f"cannot write {shown(output)}: {exc.strerror}") from None
    try:
        yield
    finally:
        _HELD.discard(held)
        with contextlib.suppress(OSError):
            if path.read_text() == me:  # never another run's claim
                path.unlink()
        for folder in made:  # a run that failed leaves no empty folders behind it
            with contextlib.suppress(OSError):  # not empty: the result, another run's files
                folder.rmdir()


def drop_dead_claims(p: Plan) -> None:
    """The claims on ``p``'s files whose process is gone, removed: a run killed after its
    result was in place but before it let them go left them, and a rerun that finds the
    result done (:func:`dip.batch.is_done`) takes none that would replace them. (A run lets
    its result's claim go last: a result without one has none left.)"""
    for claim in map(claim_path, written_files(p)):
        with contextlib.suppress(OSError), _folder_lock(claim.parent):
            judged = claim.read_text()
            # (read again: where the folder cannot be locked, a run may have taken it over)
            if _claim_holder(claim) is None and claim.read_text() == judged:
                claim.unlink()


def _take_claim(path: Path, output: Path, me: str) -> Path:
    """Write the claim ``path`` for ``output`` (its folder exists), or say who holds it; the
    claim, as :data:`_HELD` knows it, is returned.

    Raises:
        InputError: another live dip process holds it.
        FileNotFoundError: the folder went before the claim was made.
    """
    # One process at a time makes or takes over a claim in this folder: two that both found
    # a killed run's claim stale would otherwise both take it, the second deleting the
    # claim the first had just made; and a claim is never read half-written.
    with _folder_lock(path.parent):
        if path.exists():
            holder = _claim_holder(path)
            if holder is not None:
                raise InputError(f"another dip run ({holder}) is writing {shown(output)}; "
                                 f"wait for it or choose another output"
                                 f"{_gone(holder, path) or f' (its claim: {shown(path.name)})'}")
            path.unlink(missing_ok=True)  # its process is gone
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            with os.fdopen(fd, "w") as f:
                f.write(me)
            held = path.resolve()  # (one key however the output is spelled)
            _HELD.add(held)  # before the folder's lock goes: a thread of this process
            return held  # that takes it next sees the claim as this process's
        except FileExistsError:  # made just now where the folder cannot be locked
            raise InputError(f"another dip run ({_claim_holder(path) or 'starting'}) is "
                             f"writing {shown(output)}; wait for it or choose another "
                             f"output") from None
        except FileNotFoundError:
            raise
        except OSError as exc:  # a full disk; a folder os.access called writable (root, /sys)
            path.unlink(missing_ok=True)  # (ours, or none: O_EXCL made it or failed)
            raise RunError(f"cannot write {shown(output)}: {exc.strerror or exc}") from None


def missing_folders(folder: Path) -> list[Path]:
    """The folders that creating ``folder`` makes, deepest first: up to the first that is
    there, or is a symbolic link (to nothing, perhaps).

    Raises:
        OSError, RuntimeError: a name too long, a loop of links (RuntimeError before 3.13).
    """
    missing = []
    while not (folder.exists() or folder.is_symlink()) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


@contextmanager
def claimed_files(p: Plan) -> Iterator[None]:
    """:func:`claimed` for every file the run writes (none when it writes nothing): its
    report is another run's result name as often as its result is."""
    with contextlib.ExitStack() as claims:
        for path in written_files(p) if p.request.write else []:
            claims.enter_context(claimed(path))
        _clear_staged(p)  # a killed run's, now that the result is this run's
        if p.request.write:  # (and the result it had set aside)
            _put_back(set_aside(p), p.output, False)
        try:
            yield
        finally:  # a run that ends without its result leaves no snapshots (before its
            _clear_staged(p)  # claims go, which remove the folders it made)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``folder`` while the block runs. The kernel lets it go when
    its process ends, so it is never stale, unlike a lock file. Without it where the file
    system or platform has none (Windows, some network file systems)."""
    fd = None
    with contextlib.suppress(ImportError, OSError):
        import fcntl

        fd = os.open(folder, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


#: a live run refreshes the time of its claims this often (seconds), and a claim not
#: refreshed for CLAIM_STALE is a dead run's, whatever its host: one on another machine
#: (a cluster's node restarted, a container replaced, which gets a new host name) can be
#: told no other way
CLAIM_REFRESH, CLAIM_STALE = 60.0, 900.0


class _HeldClaims:
    """The claims this process holds, refreshed every :data:`CLAIM_REFRESH` seconds by one
    daemon thread (started again in a forked child, which has no threads)."""

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):  # a forked child holds none of them
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self.paths: set[Path] = set()
        self.lock = threading.Lock()
        self.owner: int | None = None  # the pid whose thread refreshes them

    def add(self, path: Path) -> None:
        with self.lock:
            self.paths.add(path)
            if self.owner != os.getpid():
                self.owner = os.getpid()
                threading.Thread(target=self._refresh, daemon=True, name="dip-claims").start()

    def discard(self, path: Path) -> None:
        with self.lock:
            self.paths.discard(path)

    def __contains__(self, path: Path) -> bool:
        with self.lock:
            return path in self.paths

    def _refresh(self) -> None:
        while True:
            time.sleep(CLAIM_REFRESH)
            with self.lock:  # (one let go is discarded before it is removed: never touched
                for path in self.paths:  # once it may be another run's)
                    with contextlib.suppress(OSError):
                        os.utime(path)


_HELD = _HeldClaims()


def _claim_holder(path: Path) -> str | None:
    """``pid N on HOST`` of a live claim, None for a stale one. On this machine its process
    decides: gone, or this process's pid but not a claim it holds (a pid used again: a
    container's dip is often pid 1). From another machine (or on Windows, where asking
    whether a process lives would end it: os.kill), its age: not refreshed for
    :data:`CLAIM_STALE` seconds."""
    try:
        pid_text, host, *started = path.read_text().split(" ")
        pid = int(pid_text)
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if _asks_processes(host):
        if pid == os.getpid():
            return f"pid {pid} on {host}" if path.resolve() in _HELD else None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        now = _process_started(pid)  # (None where /proc hides it: judged alive, as before)
        if started and now is not None and started[0] != str(now):
            return None  # its pid used again: that process started at another time
    elif age > CLAIM_STALE:
        return None
    return f"pid {pid} on {host}"


def _process_started(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot, where Linux's /proc says
    (no clock is read: a file server's times and a clock set back do not enter): written in
    a claim, a killed run's claim whose pid another program took since (a container's pids
    are few) is told from its live holder's. None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rpartition(")")[2].split()[19])  # field 22: starttime
    except (OSError, ValueError, IndexError):
        return None


def _asks_processes(host: str) -> bool:
    """Whether a claim made on ``host`` is judged by its process: on this machine, but not on
    Windows, where asking whether a process lives (os.kill) would end it."""
    return host == socket.gethostname() and os.name != "nt"


def _gone(holder: str, path: Path) -> str:
    """What a refusal adds about a claim judged by its age (:func:`_asks_processes`), which
    is taken over only once it is old (the others as soon as their process is gone)."""
    if _asks_processes(holder.rpartition(" on ")[2]):
        return ""
    return (f" (a run on another machine that is gone leaves its claim {shown(path.name)}, "
            f"taken over once {CLAIM_STALE // 60:.0f} minutes old)")


# --- all stages -------------------------------------------------------------------------------

@autograd_on()
def restore(request: RunRequest | str | None = None,
            input: str | os.PathLike | None = None, /, *,
            progress: Callable[[Progress], None] | None = None,
            keep_on_interrupt: bool = False,
            on_start: Callable[[Start], None] | None = None,
            **arguments: Any) -> Restoration:
    """Restore one image file with Deep Image Prior.

    ``restore(RunRequest(...))``, or ``restore(task, input, **arguments)`` (task and input by
    position or by name) with the request's fields and the task's own options as keyword
    arguments, e.g.
    ``restore("inpaint", "photo.png", mask="holes.png", iters=500)`` (see
    :class:`dip.request.RunRequest` and ``dip.tasks.TASKS[task].options``).

    Args:
        progress: called after every step with a :class:`dip.fitting.Progress` (with several
            members -- restarts, tiles -- ``step`` and ``total`` count every member's steps),
            one call at a time; where members step side by side on the CPU, from dip's
            worker threads (a GUI hands it on to its own thread).
        keep_on_interrupt: on Ctrl-C, stop the fit and write (and return) the estimate so
            far, marked ``interrupted``; otherwise KeyboardInterrupt propagates and nothing is
            written.
        on_start: called once before the first step with what the run will do and cost.

    Raises:
        InputError, ConfigError: before anything runs or is written.
        RunError: the fit failed; nothing is written (an earlier result's files stay).
    """
    if not isinstance(request, RunRequest):
        request = _request_of(request, input, arguments)
    elif input is not None or arguments:  # they were dropped without a word
        given = sorted(arguments) if input is None else ["input", *sorted(arguments)]
        raise TypeError(f"restore(RunRequest) takes no other arguments (got "
                        f"{', '.join(given)}); set them in the request: request.replace(...)")
    started = time.perf_counter()
    keep_on_interrupt = _check_hooks(keep_on_interrupt, progress=progress, on_start=on_start)
    check_default_device()
    the_plan = plan(request)  # (the options' types checked first: uncertainty="no" is not True)
    pictures = [k for k in PICTURES if getattr(request, k)]
    if pictures and not request.write:  # (a dry run's forecast plans them unwritten: allowed)
        raise InputError(f"{{arg:{pictures[0]}}} is a file beside the result, and with "
                         f"write=False nothing is written")
    loaded = load(the_plan)
    setup = build(the_plan, loaded)
    setup.estimate = estimate(the_plan, setup)
    if on_start is not None:
        on_start(Start(setup.estimate, setup.layout))
    # every check has passed: from here on the run writes (its folder, snapshots, the result)
    with claimed_files(the_plan):
        return _run(the_plan, loaded, setup, started, progress, keep_on_interrupt)


def _request_of(task: str | None, input: str | os.PathLike | None,
                arguments: dict[str, Any]) -> RunRequest:
    """``restore(task, input, **arguments)``'s request; ``task=`` and ``input=`` may be given by
    name, but not also by position (the name's was taken without a word)."""
    for name, value in (("task", task), ("input", input)):
        if name in arguments and value is not None:
            raise TypeError(f"restore() got {name} twice: {value!r} and {name}="
                            f"{arguments[name]!r}")
    task = arguments.pop("task", task)
    if task is None:
        raise TypeError("restore() needs a task (e.g. restore('denoise', 'photo.png')) or a "
                        "RunRequest")
    the_task = get_task(task)
    return RunRequest(task=the_task.name, **split_arguments(
        list(the_task.options), {"input": input, **arguments}))


def _check_hooks(keep_on_interrupt: Any, **hooks: Any) -> bool:
    """:func:`restore`'s own arguments, before anything runs: ``keep_on_interrupt="no"`` was
    taken as true, and ``progress=5`` failed as 'not callable' after the set-up. Returns
    ``keep_on_interrupt`` as Python's bool (numpy's is taken)."""
    keep_on_interrupt = python_number(keep_on_interrupt)
    if not isinstance(keep_on_interrupt, bool):
        raise InputError(f"keep_on_interrupt must be True or False, got "
                         f"{type(keep_on_interrupt).__name__} {keep_on_interrupt!r}")
    for name, hook in hooks.items():
        if hook is not None and not callable(hook):
            raise InputError(f"{name} must be a function (or None), got {type(hook).__name__}")
    return keep_on_interrupt


@autograd_on()
def restore_pack(requests: list[RunRequest], *,
                 progress: Callable[[Progress], None] | None = None,
                 keep_on_interrupt: bool = False) -> list[Restoration | DipError]:
    """Restore several images in one group of fits (``dip run --pack``): every request's
    members (restarts x tiles) step side by side, each job keeping its own seed, stop rules,
    record and files. The requests must fit with the same settings (:func:`pack_key`).

    Returns:
        per request, its :class:`Restoration` or the error that ended it: a mistake or a
        failed fit ends its own job only.
    """
    started = time.perf_counter()
    keep_on_interrupt = _check_hooks(keep_on_interrupt, progress=progress)
    check_default_device()
    jobs: list[tuple[int, Plan, Loaded, Setup]] = []
    outcomes: list[Restoration | DipError | None] = [None] * len(requests)
    for i, request in enumerate(requests):
        try:
            the_plan = plan(request)
            loaded = load(the_plan)
            setup = build(the_plan, loaded)
            setup.estimate = estimate(the_plan, setup)
            jobs.append((i, the_plan, loaded, setup))
        except DipError as exc:
            outcomes[i] = exc
    with contextlib.ExitStack() as claims:
        held = []
        for job in jobs:
            try:
                claims.enter_context(claimed_files(job[1]))
                held.append(job)
            except DipError as exc:
                outcomes[job[0]] = exc
        # the same step settings in one group: a budget grown for a less noisy image
        # (stop.budget_sigma) fits beside the jobs with that budget only
        budgets: dict[Settings, list] = {}
        for job in held:
            budgets.setdefault(job[3].settings, []).append(job)
        for same in budgets.values():
            for group in by_memory(same):
                for i, result in _fit_pack(group, started, progress, keep_on_interrupt):
                    outcomes[i] = result
    return outcomes


def by_memory(jobs: list[tuple[int, Plan, Loaded, Setup]],
              base: int | None = None) -> list[list[tuple]]:
    """Consecutive jobs whose estimated peaks fit the memory budget together (each job's peak
    counts the process itself, ``base`` bytes, the resident memory now: the jobs share it
    once; a job whose members would take their steps in a stack with the others' counts
    its peak in a stack, :attr:`Layout.packed_bytes`); a job over the budget alone runs
    alone, laid out (tiled) for the budget by itself."""
    base = process_bytes() if base is None else base
    groups: list[list[tuple]] = []
    used = 0
    for job in jobs:
        layout = job[3].layout
        need = max(0, (layout.packed_bytes or layout.peak_bytes) - base)
        if groups and (layout.budget is None or base + used + need <= layout.budget):
            groups[-1].append(job)
            used += need
        else:
            groups.append([job])
            used = need
    return groups


def _fit_pack(jobs: list[tuple[int, Plan, Loaded, Setup]], started: float,
              progress: Callable[[Progress], None] | None,
              keep_on_interrupt: bool) -> Iterator[tuple[int, Restoration | DipError]]:
    """One fit_group over the jobs' members; then each job's record and files."""
    if not jobs:
        return
    lives = [_Live(p, loaded, setup, None, keep_on_interrupt) for _, p, loaded, setup in jobs]
    owners = [(j, k) for j, live in enumerate(lives) for k in range(len(live.fitted))]
    total = sum(live.total for live in lives)
    done = [0]

    def on_step(index: int, s: Progress) -> None:
        j, k = owners[index]
        lives[j].on_step(k, s)
        done[0] += 1
        if progress is not None:
            progress(Progress(done[0], total, s.loss, s.estimate, s.psnr, s.output))

    first, perf = jobs[0][1], jobs[0][3].perf
    members = [lambda j=j, k=k: jobs[j][3].member(lives[j].fitted[k]) for j, k in owners]
    at_once = sum(setup.layout.at_once for *_, setup in jobs)
    _reset_cuda_peak(jobs[0][3].device)
    with _memory_advice(first, jobs[0][3]):
        results = fit_group(members, jobs[0][3].settings, perf=perf,
                            threads=resolve_threads(first.cfg.perf.threads,
                                                    1 if perf.stack else len(members)),
                            callback=on_step, keep_on_interrupt=keep_on_interrupt,
                            at_once=min(at_once, STACK_MOST) if perf.stack else at_once)
    cut = False  # Ctrl-C in one job's last step: the others skip theirs too
    for j, (i, p, loaded, setup) in enumerate(jobs):
        mine = {lives[j].fitted[k]: results[n] for n, (jj, k) in enumerate(owners) if jj == j}
        try:
            restored = _finish(p, loaded, setup, lives[j], mine, started, cut)
        except DipError as exc:
            yield i, exc
            continue
        cut = cut or restored.record["stop_reason"] == "interrupted"
        yield i, restored


def _finish(p: Plan, loaded: Loaded, setup: Setup, live: _Live, results: dict,
            started: float, stopped: bool = False) -> Restoration:
    """One packed job's members combined, recorded and written (as :func:`_run` does);
    ``stopped``: an earlier job of the pack was interrupted."""
    fitted = _combined(live, results, stopped)
    with interrupts.deferred():
        return _written(p, loaded, setup, fitted, started)


def pack_key(request: RunRequest) -> tuple | None:
    """Requests with the same key can be packed into one group (:func:`restore_pack`): the
    same step settings, device and threads. None: the request cannot be planned (it runs alone
    and fails there with its own message)."""
    try:
        cfg = resolve_config(request)
        cpu = resolve_device(cfg.device).type == "cpu"
    except DipError:
        return None
    fixed = fixed_threads(cfg.perf.threads)
    if cpu and fixed is not None and fixed > 1 and cfg.optim.restarts == 1:
        return None  # its fit on the threads asked for, not one in a pack (the image differs)
    return _settings(cfg), cfg.device, repr(cfg.perf)


def forecast(request: RunRequest) -> Start:
    """What a run of ``request`` would do and cost, without running it: it is planned, its
    files read and its fits laid out and calibrated, and nothing is written (but the
    calibration cache)."""
    return forecast_plan(plan(request.replace(write=False)))


def forecast_plan(the_plan: Plan) -> Start:
    """:func:`forecast` of a plan made already: ``dip run --dry-run`` plans a job as its run
    would (the files it writes checked), then reads and lays it out."""
    loaded = load(the_plan)
    setup = build(the_plan, loaded)
    return Start(estimate(the_plan, setup), setup.layout)


@dataclass(frozen=True)
class Start:
    """What :func:`restore` tells ``on_start`` before the first step."""

    estimate: Estimate
    layout: Layout

    def describe(self) -> str:
        members = len(self.layout.fitted())
        what = self.layout.why + (f", {members} fits" if members > 1 else "")
        return f"{self.estimate.describe()} ({what})"


def _run(the_plan: Plan, loaded: Loaded, setup: Setup, started: float,
         progress: Callable[[Progress], None] | None, keep_on_interrupt: bool) -> Restoration:
    """fit -> record -> write, holding the output."""
    fitted = fit_stage(the_plan, loaded, setup, progress, keep_on_interrupt)
    # The result is complete (or the estimate an interruption keeps): a signal now takes
    # effect once it is written, not half-way through drawing or writing it.
    done = None
    try:
        with interrupts.deferred():
            done = _written(the_plan, loaded, setup, fitted, started)
    except KeyboardInterrupt as stop:  # after the write: the caller may say it was made
        stop.written = done.output if done is not None else None
        raise
    return done


def _written(p: Plan, loaded: Loaded, setup: Setup, fitted: Fitted,
             started: float) -> Restoration:
    """record -> write: the result's picture, its record, the files asked for."""
    alpha = p.task.out_alpha(loaded.inputs, loaded.out_size)
    # the input's depth, a float TIFF's own range and the colour profile go back with it (the
    # fit works in [0, 1])
    source = loaded.inputs.picture
    pixels = loaded.inputs.coloured(fitted.image.float().cpu())  # (dip.tint)
    restored = dataclasses.replace(source.with_pixels(pixels), alpha=alpha)
    record = make_record(p, loaded, setup, fitted, restored, time.perf_counter() - started)
    if loaded.rgb_of_grey:  # the result as the file was: RGB (measured and drawn grey)
        restored = as_rgb(restored)
    if p.request.write:
        write(p, loaded, restored, record, fitted.spread)
    return Restoration(restored, record.to_dict(), p.output if p.request.write else None,
                       fitted.first, fitted.outcomes)
