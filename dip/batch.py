"""Many restorations from one YAML file (``dip run batch.yaml``): resumable, one failing job
never stops the others, spread over processes, devices and cluster array tasks.

The batch file::

    defaults:                  # every job inherits these; the CLI's long option names
      iters: 3000
      seed: 0
    jobs:
      - task: denoise
        input: photos/*.jpg        # a file, a folder or a glob
        output: results/denoised/  # a folder: {stem}_{task}.png inside it
      - task: inpaint
        input: scans/page1.png
        mask: scans/page1_mask.png
        output: results/inpainted/
        set: {optim.lr: 0.005}     # dotted config keys, exactly as --set
      - task: superres
        input: small/
        factor: 4

Relative paths resolve against the batch file's folder. A job's output defaults to
``results/`` beside the batch file. With several inputs, ``mask`` and ``reference`` may name a
folder holding a file of the same name for each input.

:func:`load_batch` expands and checks the whole file before anything runs (a mistake is a
:class:`BatchError` naming the job, its line and the key); :func:`run_jobs` runs a list of
:class:`Job` s and returns one row per job for :func:`write_summary`.
"""

from __future__ import annotations

import builtins
import contextlib
import csv
import difflib
import errno
import fnmatch
import functools
import glob
import hashlib
import io
import json
import multiprocessing
import os
import posixpath
import re
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from dip import image, interrupts, record, streams
from dip import report as reports
from dip.config import (
    TYPE_NAMES,
    NoAliasLoader,
    given_twice,
    load_yaml,
    record_config,
    recorded_options,
    resolve,
    yaml_misread,
    yaml_number,
    yaml_word,
)
from dip.errors import (
    ConfigError,
    DipError,
    InputError,
    Spelled,
    held_until_start,
    python_spelling,
    warn_again,
)
from dip.layout import STACK_MOST
from dip.request import FORMATS, Option, RunRequest, request_options
from dip.run import (
    Plan,
    Restoration,
    Start,
    check_device_name,
    check_name_length,
    claim_path,
    drop_dead_claims,
    files_read,
    fingerprints,
    forecast_plan,
    missing_folders,
    output_path,
    pack_key,
    plan,
    resolve_device,
    restore,
    restore_pack,
    staged_folder,
    staged_snapshots,
    writable_folder,
)
from dip.run import beside as files_beside
from dip.tasks import TASKS, Task, get_task
from dip.threads import usable_cores

_LINE = "__line__"
NOT_STARTED = "not started: the batch was interrupted"
#: the status of a job the batch did not start (interrupted first): the next run does it
PENDING = "pending"
_GLOB_CHARS = set("*?[")
SEED_BITS = 63


def job_key_spelling(name: str, value: str | None) -> str:
    """How a batch file names a library argument: by its job key (``'mask'``,
    ``'device: cpu'``); a config key as ``set: {key: ...}``."""
    if "." in name:
        return f"'set: {{{name}: {value if value is not None else '...'}}}'"
    opt = next((o for o in request_options() if o.name == name), None)
    key = opt.job_key if opt is not None else name
    return f"'{key}'" if value is None else f"'{key}: {value}'"


def common_keys() -> dict[str, Option]:
    """The job keys every task takes (the RunRequest's options a batch offers), by key."""
    return {o.job_key: o for o in request_options() if o.batch}


def job_keys(task: Task) -> dict[str, Option]:
    """Every key a job of ``task`` may hold."""
    return {**common_keys(), **{o.job_key: o for o in task.options}}


class BatchError(ConfigError):
    """The batch file itself is wrong: nothing runs (exit code 2)."""


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch; ``rows`` says what happened to each job that started."""

    def __init__(self, rows: list[Row]) -> None:
        super().__init__()
        self.rows = rows


class WorkersNotStarted(DipError):
    """The worker processes could not be started (too few file descriptors or processes
    allowed): ``rows`` has every job's row, each that did not run failed with ``not_run``."""

    def __init__(self, message: str, rows: list[Row], not_run: str) -> None:
        super().__init__(message)
        self.rows, self.not_run = rows, not_run


@dataclass(frozen=True)
class Job:
    """One image to restore: a :class:`RunRequest` with every path resolved and the job's own
    seed (:func:`job_seed`), and ``source``, where it came from (``jobs[2], line 14``)."""

    request: RunRequest
    source: str
    #: the input came from a folder or a glob (not named on its own)
    expanded: bool = False
    #: the job keeps snapshots (``--save-every``, ``output.save_every`` or a GIF's)
    snapshots: bool = False
    #: the output's path relative to the batch file's folder (whole outside it): the same
    #: on every machine a shard runs on (:func:`list_fingerprint`)
    key: str = ""

    @property
    def task(self) -> str:
        return self.request.task

    @property
    def input(self) -> Path:
        return Path(self.request.input)

    @property
    def output(self) -> Path:
        return Path(self.request.output)

    @property
    def seed(self) -> int:
        return self.request.seed


def job_seed(seed: int, key: str) -> int:
    """A job's seed from the batch's ``seed`` and the input's path relative to the batch file:
    a result does not depend on the order of the jobs or on how they are sharded. A name that
    is not UTF-8 (``x\\xff.png``, read as ``x\\udcff.png``) is its bytes, as the file system has
    it; a UTF-8 name's bytes are its UTF-8, as they always were."""
    text = f"{seed}\0{key}".encode("utf-8", "surrogateescape")
    digest = hashlib.blake2b(text, digest_size=8).digest()
    return int.from_bytes(digest, "little") >> (64 - SEED_BITS)


# --- reading the batch file ---------------------------------------------------------------------

class _LineLoader(NoAliasLoader):
    """Safe YAML without aliases that remembers the line of every mapping (for messages)."""


def _mapping_with_line(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    mapping = loader.construct_mapping(node, deep=True)
    mapping[_LINE] = node.start_mark.line + 1
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_with_line)


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k != _LINE}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def read_batch_file(path: Path) -> dict:
    """The batch file as a mapping whose mappings carry their line number."""
    try:
        data = load_yaml(path, "batch file", _LineLoader)
    except DipError as exc:
        raise BatchError(str(exc)) from None
    if not isinstance(data, dict):
        raise BatchError(f"{path}: a batch file is a mapping with 'jobs:' (and optionally "
                         f"'defaults:')")
    return data


def _owner(key: str) -> str | None:
    """The task whose own option ``key`` is, if any."""
    return next((t.name for t in TASKS.values() if key in {o.job_key for o in t.options}),
                None)


def _check_entry(entry: Any, where: str, allowed: dict[str, Option], task: str | None = None,
                 defaults: bool = False) -> dict:
    if not isinstance(entry, dict):
        raise BatchError(f"{where}: expected a mapping of options, got {entry!r}")
    entry = dict(entry)
    for key, value in list(entry.items()):
        if key in (_LINE, "task"):
            if key == "task" and not isinstance(value, str):
                raise BatchError(f"{where}: 'task' expects a string, got {value!r}")
            continue
        if key not in allowed:
            if defaults and _owner(key) is not None:
                continue  # a default for the jobs whose task takes it
            raise _unknown_key(key, where, allowed, task, defaults)
        opt = allowed[key]
        types = (dict, list) if opt.job_key == "set" else opt.job_types()
        if float in types:  # 1e3 is a string in YAML 1.1: a number, as for config keys
            value = entry[key] = yaml_number(value)
        if opt.kind == "size":  # tile: off, which YAML 1.1 reads as false
            value = entry[key] = yaml_word(value)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            kinds = " or ".join(TYPE_NAMES[t] for t in types)
            raise BatchError(f"{where}: '{key}' expects {kinds}, "
                             + (yaml_misread(value, key) if str in types
                                else "but YAML read the value as nothing (leave the key out "
                                     "for its default)" if value is None
                                else f"got {str(value)[:60]!r}"))
        _check_paths(key, value, opt, where)
    return entry


def _unknown_key(key: Any, where: str, allowed: dict[str, Option], task: str | None,
                 defaults: bool) -> BatchError:
    """A key :func:`_check_entry` does not take, said with the keys it does: under
    ``defaults:`` the tasks' own too (``factor: 4`` there is a default for the jobs whose
    task takes it; they were left out of the list)."""
    owner = _owner(key)
    if owner is not None and task is not None:
        return BatchError(f"{where}: '{key}' only applies to {owner}, not {task}")
    if defaults and key == "input":
        return BatchError(f"{where}: 'input' is each job's own, not a default; give it in "
                          f"the jobs")
    names = list(allowed)
    if defaults:
        names += dict.fromkeys(o.job_key for t in TASKS.values() for o in t.options
                               if o.job_key not in allowed)
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return BatchError(f"{where}: unknown key '{str(key)[:40]}'{hint} (allowed: "
                      f"{', '.join(names)})")


def _check_paths(key: str, value: Any, opt: Option, where: str) -> None:
    """A path key's value, or each file of a ``config`` list, is a non-empty string: an empty
    one was the batch file's folder (``input: ''`` ran every picture beside it, ``mask: ''``
    made the input its own mask), and a list's item of another kind (a stray ``-``) failed
    with a traceback."""
    if opt.kind not in ("path", "list") or opt.job_key in ("set", "output"):  # (an empty
        return  # output has a message of its own: _request's)
    items = value if isinstance(value, list) else [value]
    for i, item in enumerate(items, 1):
        at = f"'{key}' item {i}" if isinstance(value, list) else f"'{key}'"
        if not isinstance(item, str):
            got = ("a mapping (settings go under 'set')" if isinstance(item, dict)
                   else "nothing" if item is None else repr(_strip_lines(item))[:60])
            raise BatchError(f"{where}: {at} expects a file name, got {got}")
        if not item.strip():
            raise BatchError(f"{where}: {at} is empty; give a path")


def _overrides(value: dict | list | None, where: str) -> list[str]:
    """``set:`` as ``key=value`` strings for :func:`dip.config.parse_override` (JSON is YAML,
    so every value reads back as it was written)."""
    if value is None:
        return []
    if isinstance(value, list):
        if not all(isinstance(v, str) and "=" in v for v in value):
            raise BatchError(f"{where}: 'set' as a list holds 'key.path=value' strings")
        return list(value)
    twice = given_twice(_strip_lines(value))
    if twice is not None:
        raise BatchError(f"{where}: 'set' gives '{twice}' twice (once dotted, once in its "
                         f"section); keep one")
    # a value JSON has no word for (a date YAML read from 2026-12-06, !!binary) is given as
    # its text, and the config's check names the key and what it expects
    return [f"{k}={json.dumps(_strip_lines(v), ensure_ascii=False, default=str)}"
            for k, v in value.items() if k != _LINE]


def _expand_inputs(pattern: str, base: Path, where: str) -> tuple[list[Path], bool]:
    """The files an ``input`` names, sorted; and whether it named several (folder, glob). A
    path that exists as written is that file or folder (``scan[1].png`` is not a pattern for
    ``scan1.png``); a glob's pattern is its own part only, never the batch file's folder's
    name (``Album [2020]/``)."""
    path = base / pattern
    suffixes = image.readable_suffixes()
    try:
        if path.is_dir():
            found = sorted(path.iterdir())
        elif path.exists():
            return [path], False
        elif _GLOB_CHARS & set(pattern):
            escaped = os.path.join(glob.escape(str(base)), pattern)  # (pattern if absolute)
            found = [Path(p) for p in sorted(glob.glob(escaped, recursive=True))]
        else:
            raise BatchError(f"{where}: input not found: {image.shown(path)}")
    except OSError as exc:
        raise BatchError(f"{where}: cannot list input {image.shown(path)}: "
                         f"{exc.strerror or exc}") from None
    # Images only (not records, ...), and not dip's own files: every run expands the same list.
    # Nor a folder's hidden files, as a glob leaves them out: the ._IMG_0001.JPG that macOS
    # writes beside each photo on a memory card, a USB stick or a network share failed a job
    # each (not an image).
    files = [p for p in found if p.is_file() and p.suffix.lower() in suffixes
             and not _dips_own(p) and not (path.is_dir() and p.name.startswith("."))]
    if not files:
        raise BatchError(f"{where}: input '{image.shown(pattern)}' matches no image in "
                         f"{image.shown(base)}")
    return files, True


def _dips_own(path: Path) -> bool:
    """A file dip wrote, never a photo: a result (its record names it), a report, contact
    sheet, uncertainty map, snapshot or GIF (marked when written), or a GIF or snapshot
    from before they were marked (:func:`_beside_a_result`)."""
    return (record.is_dip_output(path) or image.dip_marker(path) is not None
            or _beside_a_result(path))


_SNAPSHOT = re.compile(r"step_[0-9]+\.png")


def _beside_a_result(path: Path) -> bool:
    """An unmarked GIF or snapshot that a result of dip's has beside it: ``X.gif`` where the
    record of ``X.png`` (any format) says it made a GIF; ``X_steps/step_N.png`` where
    ``X.png`` and its record are."""
    if path.suffix.lower() == ".gif":
        folder, stem, kind = path.parent, path.stem, "gif"
    elif _SNAPSHOT.fullmatch(path.name) and path.parent.name.endswith("_steps"):
        folder, stem, kind = path.parent.parent, path.parent.name[:-len("_steps")], "steps"
    else:
        return False
    for found in folder.glob(f"{glob.escape(stem)}.*.json"):
        result = found.with_suffix("")
        if files_beside(result)[kind] != (path if kind == "gif" else path.parent):
            continue  # X.v2.png's record, beside a user's X.gif
        rec = record.own_record(result)
        if rec is not None and (kind == "steps" or rec.get(kind)):
            return True
    return False


def _companion(value: str, opt: Option, base: Path, input_path: Path, many: bool,
               where: str) -> Path | str:
    """A job's path option: a file; with several inputs, for a companion (a mask, a
    reference), a folder of same-named files; or one of the option's words (``alpha``)."""
    if opt.is_word(value):
        return value
    path = base / value
    if opt.companion and path.is_dir():
        path = path / input_path.name
    elif opt.companion and many:
        raise BatchError(f"{where}: with several inputs, '{opt.job_key}' must be a folder "
                         f"holding a file named like each input ({path} is not a folder)")
    if not path.is_file():
        raise BatchError(f"{where}: {opt.job_key} not found: {path}")
    return path


#: extensions that name a photo file, not a folder, in an output (the ones dip writes, and
#: other photo formats); not every extension Pillow reads (.bw, .im, .ps)
_PHOTO_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".heic",
                   ".heif", ".avif"}


def _folder_for_many(value: Any, base: Path, pattern: str, where: str) -> None:
    """With a folder or a glob as input, ``output`` is a folder; one named like an image file
    (``best.jpg``) is refused, not made a folder of that name. A glob that matches one file
    today is no different: the batch file means the same whatever the folder holds. A
    trailing ``/``, or a folder of that name already there, says it is meant as a folder."""
    if not isinstance(value, str) or value.endswith(("/", os.sep)) or (base / value).is_dir():
        return
    suffix = Path(value).suffix.lower()
    if suffix not in _PHOTO_SUFFIXES:  # (results.v2, scans.bw: folders, as they were)
        return
    try:  # the format key that writes this kind of file
        kind = image.output_format(Path("x" + suffix))
        fmt = next(k for k, ext in FORMATS.items() if image.output_format("x" + ext) == kind)
        hint = f", and 'format: {fmt}' for the results' format"
    except DipError:  # (.gif, .heic: dip writes none)
        hint = ""
    kind = "a folder" if (base / pattern).is_dir() else "a glob"
    raise BatchError(f"{where}: input '{image.shown(pattern)}' is {kind}, of several images, "
                     f"so 'output' is a folder, not the file '{image.shown(value)}'; give a "
                     f"folder (ending in /){hint}")


def _output(value: str | None, base: Path, name: Path, many: bool) -> Path:
    """A job's result: ``output`` as a file, or ``name`` (the default name) in that folder
    or in ``results/`` beside the batch file."""
    if value is None:
        return base / "results" / name
    path = base / value
    if value.endswith(("/", os.sep)) or path.is_dir() or many or not path.suffix:
        return path / name
    return path


#: the RunRequest fields a job derives instead of copying its key: the task and input, the
#: output (a folder or the default name), the config files (relative to the batch file), the
#: overrides (``set``, the defaults' then the job's) and the seed (:func:`job_seed`)
DERIVED = ("task", "input", "output", "config", "overrides", "seed")


def _request(spec: dict[str, Any], task: Task, input_path: Path, many: bool, base: Path,
             overrides: list[str], where: str, seed: int) -> RunRequest:
    """One input's RunRequest from an entry's merged options: every key the job holds goes to
    its field (paths against the batch file's folder), but the :data:`DERIVED` ones; its
    ``seed`` is the job's own (a record's, :func:`_recorded_seed`, or one derived from the
    entry's :func:`_base_seed` and the input's path, :func:`job_seed`)."""

    def value(opt: Option) -> Any:
        given = spec[opt.job_key]
        if opt.kind == "path":
            return _companion(given, opt, base, input_path, many, where)
        return given

    fields = {o.name: value(o) for o in common_keys().values()
              if o.job_key in spec and o.name not in DERIVED}
    task_args = {o.name: value(o) for o in task.options if o.job_key in spec}
    try:  # the format's one check: output_path's
        name = output_path(input_path, task.name, None, spec.get("format"))
    except DipError as exc:
        raise BatchError(f"{where}: {exc.render(job_key_spelling)}") from None
    if isinstance(spec.get("output"), str) and not spec["output"].strip():
        raise BatchError(f"{where}: 'output' is empty; give a file or a folder (without the "
                         f"key: results/ beside the batch file)")
    return RunRequest(
        **fields, task=task.name, input=input_path,
        output=_output(spec.get("output"), base, name, many), config=_configs(spec, base),
        overrides=tuple(overrides), seed=seed, task_args=task_args)


def _configs(spec: dict[str, Any], base: Path) -> tuple[Path, ...]:
    config = spec.get("config", ())
    return tuple(base / c for c in ([config] if isinstance(config, str) else config))


def _base_seed(spec: dict[str, Any], task: Task, base: Path, overrides: list[str],
               where: str) -> int:
    """The seed an entry's jobs' seeds are derived from: its ``seed`` key, else the ``seed``
    its config files or ``set:`` give (``set: {seed: 7}`` sets it as ``--set seed=7`` does
    for one command; it was ignored without a word, and never checked), else 0."""
    if "seed" in spec:  # (its type is checked with the other keys': the range here)
        if not 0 <= spec["seed"] < 2 ** 63:  # (it was hashed into a job's seed as it was)
            raise BatchError(f"{where}: 'seed' must be in 0 .. 2**63-1, got "
                             f"{spec['seed']}")
        return spec["seed"]
    try:
        return resolve(task.name, _configs(spec, base), overrides).seed
    except DipError as exc:
        raise BatchError(f"{where}: {exc.render(job_key_spelling)}") from None


def _recorded_seed(spec: dict[str, Any], task: Task, base: Path, where: str) -> int | None:
    """The seed of an entry that names none and whose config is a result's record: the
    record's own, so that ``config: RESULT.json`` remakes that result as ``--config
    RESULT.json`` does (a derived seed made another image); None otherwise. Read once for
    the entry's inputs."""
    if "seed" in spec:
        return None
    try:
        recorded = recorded_options(_configs(spec, base), task.name, ["seed"]).get("seed")
    except DipError as exc:
        raise BatchError(f"{where}: {exc.render(job_key_spelling)}") from None
    return recorded if isinstance(recorded, int) else None


def _check_request(request: RunRequest, where: str) -> bool:
    """An entry's settings, checked once (the same for each of its files but the seed);
    whether its jobs keep snapshots."""
    try:
        output_path(request.input, request.task, request.output, request.format)
        image.output_format(request.output)  # (a planning that writes nothing does not ask)
        cfg = plan(request.replace(write=False)).cfg
        if request.device is not None:
            resolve_device(request.device)
        else:  # one its config file or set: gives, by its name (each job failed on 'gpu');
            check_device_name(cfg.device)  # --devices may still replace it (assign_device)
        if request.report:
            reports.require_matplotlib()
    except DipError as exc:
        raise BatchError(f"{where}: {exc.render(job_key_spelling)}") from None
    return bool(cfg.output.save_every or request.gif)


def _entry_jobs(path: Path, index: int, entry: Any, defaults: dict,
                base: Path) -> list[tuple[Job, str]]:
    """The jobs of ``jobs[index]``: one per input file it names."""
    line = entry.get(_LINE) if isinstance(entry, dict) else None
    where = f"{path}: jobs[{index}]" + (f" (line {line})" if line else "")
    try:
        return _expanded(path, entry, defaults, base, where)
    except OSError as exc:  # a path the file system refuses: a name too long, a loop of links
        raise BatchError(f"{where}: cannot use the path {image.shown(exc.filename or '')}: "
                         f"{exc.strerror or exc}") from None


def _home(spec: dict[str, Any], keys: dict[str, Option]) -> dict[str, Any]:
    """``~`` and ``~user`` at the start of a job's path are the home folder, as a shell reads
    them on the command line (nothing expands a YAML file's): ``output: ~/results/`` made a
    folder named ``~`` beside the batch file, and ``input: ~/photos/`` was not found."""
    paths = {"input", "output", "config"} | {k for k, o in keys.items() if o.kind == "path"}

    def home(value: Any, key: str) -> Any:
        if not isinstance(value, str) or not value.startswith("~"):
            return value
        cut = min((i for i in (value.find("/"), value.find(os.sep)) if i >= 0),
                  default=len(value))
        folder, rest = os.path.expanduser(value[:cut]), value[cut:]
        if key == "input" and _GLOB_CHARS & set(rest):  # a glob's own part only, as the
            folder = glob.escape(folder)  # batch file's folder ('/home/a[1]')
        return folder + rest

    return {k: ([home(c, k) for c in v] if isinstance(v, list) else home(v, k)) if k in paths
            else v for k, v in spec.items()}


def _expanded(path: Path, entry: Any, defaults: dict, base: Path,
              where: str) -> list[tuple[Job, str]]:
    if not isinstance(entry, dict):
        raise BatchError(f"{where}: expected a mapping of options, got {entry!r}")
    spec = {**defaults, **entry}
    if "task" not in spec:
        raise BatchError(f"{where}: missing 'task'")
    if spec["task"] not in TASKS:
        raise BatchError(f"{where}: unknown task '{str(spec['task'])[:40]}' (known: "
                         f"{', '.join(TASKS)})")
    task = get_task(spec["task"])
    allowed = job_keys(task)
    # the defaults' keys of this task's own options are checked here, where the task is known
    own = {k: v for k, v in defaults.items() if _owner(k) == task.name and k not in entry}
    spec = {**defaults, **_check_entry(own, f"{path}: defaults", allowed, task.name),
            **_check_entry(entry, where, allowed, task.name)}
    if "input" not in spec:
        raise BatchError(f"{where}: missing 'input'")
    spec = _home({k: v for k, v in spec.items() if k in allowed or k == "task"}, allowed)
    # a default that does nothing without another option (mask_tolerance: mask_color) goes to
    # the jobs that have that option only; a job that gives it itself is checked as given
    needs = {o.job_key: o.needs for o in task.options if o.needs}
    spec = {k: v for k, v in spec.items()
            if k in entry or k not in needs or spec.get(needs[k]) is not None}
    overrides = (_overrides(defaults.get("set"), f"{path}: defaults")
                 + _overrides(entry.get("set"), where))
    if spec.get("max_pixels", 1) < 1:
        raise BatchError(f"{where}: 'max_pixels' must be >= 1, got {spec['max_pixels']}")
    files, many = _expand_inputs(spec["input"], base, where)
    if many:
        _folder_for_many(spec.get("output"), base, spec["input"], where)
    jobs, snapshots = [], False
    seed = _base_seed(spec, task, base, overrides, where)
    # a record's seed as it is, where nothing after it (a later config file, set:) gives
    # another, as --config RESULT.json runs with it unless a later --config or --set says so
    verbatim = _recorded_seed(spec, task, base, where) == seed
    for i, input_path in enumerate(files):
        key = _relative(input_path, base)
        request = _request(spec, task, input_path, many, base, overrides, where,
                           seed if verbatim else job_seed(seed, key))
        if i == 0:
            snapshots = _check_request(request, where)
        else:
            try:
                image.output_format(request.output)
            except DipError as exc:
                raise BatchError(f"{where}: {exc.render(job_key_spelling)}") from None
        jobs.append((Job(request, where.removeprefix(f"{path}: "), many, snapshots,
                         _relative(Path(request.output), base)), where))
    return jobs


def load_batch(path: str | os.PathLike) -> list[Job]:
    """Read, expand and check a batch file; every job's config is resolved once, so a wrong
    key or value stops the batch before anything runs.

    Raises:
        BatchError: naming the job, its line and the key.
    """
    path = Path(path)
    data = read_batch_file(path)
    if not isinstance(data, dict):
        raise BatchError(f"{path}: expected a mapping with 'jobs:'")
    for key in data:
        if key not in ("defaults", "jobs", _LINE):
            raise BatchError(f"{path}: unknown key '{str(key)[:40]}' (allowed: defaults, jobs)")
    base = path.resolve().parent
    defaults = _check_entry(data.get("defaults") or {}, f"{path}: defaults",
                            {k: v for k, v in common_keys().items() if k != "input"},
                            defaults=True)
    if not data.get("jobs") or not isinstance(data["jobs"], list):
        raise BatchError(f"{path}: no jobs (expected 'jobs:' with a list of jobs)")
    jobs: list[tuple[Job, str]] = []
    for index, entry in enumerate(data["jobs"]):
        jobs += _entry_jobs(path, index, entry, defaults, base)
    return _own_files_and_owners(jobs)


def path_key(path: Path) -> str:
    """One spelling per file: the resolved path, case-folded where its folder's file system
    folds case (``out/r.png`` and ``sub/../OUT/r.png`` are then the same file)."""
    resolved = Path(os.path.abspath(path)).resolve()
    return str(resolved).casefold() if _folds_case(resolved.parent) else str(resolved)


def _folds_case(folder: Path) -> bool:
    """Whether ``folder``'s file system treats names differently cased as one (macOS,
    Windows): the folder under its swapped-case name is the same folder."""
    try:
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.name:  # the root (with_name would raise: /zz/results/ made anew)
            return False
        swapped = folder.with_name(folder.name.swapcase())
        if swapped == folder:
            return False
        return swapped.exists() and os.path.samefile(folder, swapped)
    except OSError:  # a name too long to ask about: the job's own checks refuse it
        return False


def job_reads(job: Job) -> list[Path]:
    """Every file a job reads (:func:`dip.run.files_read`)."""
    return files_read(job.request)


def job_writes(job: Job, asked: bool = False) -> list[Path]:
    """Every path a job may write: result, record, report, GIF, uncertainty map, snapshot
    folder, claim; with ``asked``, only those it will write: the pictures its request asks
    for (the snapshot folder when the job keeps snapshots)."""
    files = files_beside(job.output)
    if asked:
        wanted = {"record", *(k for k in record.PICTURES
                              if getattr(job.request, k))}
        files = {k: v for k, v in files.items()
                 if k in wanted or (k == "steps" and job.snapshots)}
    return [job.output, *files.values(), claim_path(job.output)]


def _written_twice(where: str, source: Path, path: Path, first_where: str,
                   first: Path) -> BatchError:
    """Two jobs that would write one file. Two inputs of one entry can only share a stem
    (``IMG_1.png`` and ``IMG_1.jpg`` in one folder): 'give the jobs different outputs' was
    advice for two entries."""
    if first_where != where:
        return BatchError(f"{where}: {source.name} would write {path}, which {first_where} "
                          f"({first.name}) also writes; give the jobs different outputs")
    said = f"{where}: {image.shown(first)} and {image.shown(source)} would both write {path} " \
           f"(a result is named after its input's stem); give each "
    if first.parent != source.parent:  # a glob over several folders
        return BatchError(said + "folder a job and an output of its own")
    globs = [image.shown(os.path.join(glob.escape(str(p.parent)), "*" + p.suffix))
             for p in (first, source)]
    return BatchError(said + f"extension a job and an output of its own, e.g. input: "
                             f"{globs[0]} and input: {globs[1]}")


def _own_files_and_owners(jobs: list[tuple[Job, str]]) -> list[Job]:
    """Check the jobs against each other before anything runs: no two write the same file
    (however it is spelled), none writes a file any job reads (an input, mask, reference:
    --overwrite would delete it), and an explicit input is not another job's result (run those
    as two batches). A folder or glob that is both input and output is fine: this batch's own
    files are not its inputs, so every run, and every shard, expands the same list."""
    own = {path_key(p) for job, _ in jobs for p in job_writes(job)}
    results = {path_key(job.output): job.input.name for job, _ in jobs}
    inputs = []
    for job, where in jobs:
        if job.expanded and {path_key(job.input), path_key(job.input.parent)} & own:
            _refuse_users_picture(job, where, results)  # else the batch's own: left out
        else:
            inputs.append((job, where))
    jobs = inputs
    # two jobs writing one file: any file either writes (a result, or one job's uncertainty
    # map another's result), whichever job comes first
    writers: dict[str, tuple[str, Path]] = {}
    for job, where in jobs:
        for path in job_writes(job, asked=True):
            key = path_key(path)
            if key in writers:
                raise _written_twice(where, job.input, path, *writers[key])
            writers[key] = (where, job.input)
    _none_in_snapshot_folders(jobs)
    writes = [{key for path in job_writes(job) for key in _file_keys(path)} for job, _ in jobs]
    owners = {key: f"{where} ({job.input.name})"
              for (job, where), own in zip(jobs, writes) for key in own}
    kept: list[Job] = []
    for (job, where), own in zip(jobs, writes):
        for path in job_reads(job):
            keys = _file_keys(path)
            if keys & own:
                raise BatchError(f"{where}: {job.input.name} would write {path}, which it "
                                 f"reads; give it another output")
            if keys & owners.keys():
                writer = owners[min(keys & owners.keys())]
                raise BatchError(f"{where}: {path} is a file {writer} writes; run the "
                                 f"job that reads it in a second batch, after the first")
        kept.append(job)
    return kept


def _file_keys(path: Path) -> set[str]:
    """:func:`path_key`, and for a file that exists its device and inode: a hard link is the
    file under another name (a result named as a link to another job's photo)."""
    keys = {path_key(path)}
    with contextlib.suppress(OSError):
        st = path.stat()
        keys.add(f"inode {st.st_dev}:{st.st_ino}")
    return keys


def _none_in_snapshot_folders(jobs: list[tuple[Job, str]]) -> None:
    """No job writes a file named like a snapshot into another's snapshot folder, where that
    job's snapshots replace, or its run without snapshots removes, every ``step_*.png`` (a
    result named ``step_000002.png`` in ``d_steps/`` was replaced by another picture's
    snapshot, its record still naming its own input, and the batch said done).

    Raises:
        BatchError: naming both jobs.
    """
    # (and its hidden staged folder, whose snapshots a run clears: dip.run.staged_folder)
    folders = {path_key(folder): (where, job.input) for job, where in jobs
               for folder in (files_beside(job.output)["steps"], staged_folder(job.output))}
    for job, where in jobs:
        for path in job_writes(job, asked=True):
            held = folders.get(path_key(path.parent))
            if held is not None and any(fnmatch.fnmatchcase(path.name, pattern)
                                        for pattern in ("step_*.png", ".step_*.part")):
                raise BatchError(f"{where}: {job.input.name} would write {path}, inside the "
                                 f"snapshot folder of {held[0]} ({held[1].name}); give the "
                                 f"jobs different outputs")


def _refuse_users_picture(job: Job, where: str, results: dict[str, str]) -> None:
    """A picture a folder or glob found where one of the batch's results goes, with no
    record beside it, is a user's photo, not dip's result (a record is renamed in before
    its image): refused, naming it (it was left out of the inputs without a word, its
    producer failed 'already exists', and --overwrite replaced it, never restored itself).

    Raises:
        BatchError: ``job``'s input is such a picture.
    """
    key = path_key(job.input)
    if key not in results or record.record_path(job.input).exists():
        return
    raise BatchError(f"{where}: {image.shown(job.input)} is where the result of "
                     f"{results[key]} goes, and dip did not write it (no record beside it): "
                     f"move it, or give the results another folder")


# --- which jobs: shards, and what is already done ---------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    """``'2/8'`` -> ``(2, 8)``: the 2nd of 8 slices (1-based)."""
    k, sep, n = text.partition("/")
    try:
        k_i, n_i = int(k), int(n)
    except ValueError:
        k_i = n_i = 0
    if not sep or not 1 <= k_i <= n_i:
        raise BatchError(f"{{arg:shard}} expects K/N with 1 <= K <= N, got {text!r}")
    return k_i, n_i


def shard_from_env(environ: dict[str, str] | os._Environ = os.environ) -> tuple[int, int] | None:
    """The shard of a SLURM job array task (``sbatch --array``), or None outside one."""
    if "SLURM_ARRAY_TASK_ID" not in environ or "SLURM_ARRAY_TASK_COUNT" not in environ:
        return None
    try:
        task_id = int(environ["SLURM_ARRAY_TASK_ID"])
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        step = int(environ.get("SLURM_ARRAY_TASK_STEP", "1") or 1)
        count = int(environ["SLURM_ARRAY_TASK_COUNT"])
        if step < 1:
            raise ValueError(step)  # (0 divided by zero: a traceback)
    except ValueError:
        raise BatchError("the SLURM_ARRAY_TASK_* variables are not numbers of an array "
                         "(a step of 1 or more); give {arg:shard=K/N}") from None
    k = (task_id - first) // step + 1
    if not 1 <= k <= count:
        raise BatchError(f"SLURM array task {task_id} is outside its {count} tasks; give "
                         f"{{arg:shard=K/N}}")
    return k, count


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` (the batch file's folder), or whole outside it; however
    it is spelt (``sub/../sub/a.png`` is ``sub/a.png``: its seed was another)."""
    try:
        return posixpath.normpath(path.relative_to(base).as_posix())
    except ValueError:
        return path.as_posix()


def select_shard(jobs: list[Job], k: int, n: int) -> list[Job]:
    """The K-th of N interleaved slices of the expanded list: every job in exactly one, as
    long as every shard expands the same list (:func:`other_lists` says when not)."""
    return [job for i, job in enumerate(jobs) if i % n == k - 1]


def list_fingerprint(jobs: list[Job]) -> str:
    """What identifies the whole batch's list of jobs, the same for every shard that expands
    the same one (on any machine: outputs relative to the batch file)."""
    text = "\0".join(job.key or str(job.output) for job in jobs)
    return hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).hexdigest()


def batch_facts(jobs: list[Job], environ: dict[str, str] | os._Environ = os.environ
                ) -> dict[str, Any]:
    """What a shard's summary says of the whole batch: its number of jobs, their
    :func:`list_fingerprint` and the SLURM array the shard ran in (if any)."""
    return {"jobs": len(jobs), "fingerprint": list_fingerprint(jobs),
            "array": environ.get("SLURM_ARRAY_JOB_ID")}


def other_lists(json_path: Path, shard: tuple[int, int], jobs: list[Job],
                environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """Where the summary of another shard of the same SLURM array, beside ``json_path``
    (this shard's), says it expanded another list than ``jobs`` (photos added or removed
    between their starts: the slices moved, and some jobs fell in no shard's), what to say;
    else None. (Shards outside an array are not compared: an earlier run's summaries are
    indistinguishable from this run's.)"""
    mine = batch_facts(jobs, environ)
    if not mine["array"]:
        return None
    for other in sorted(json_path.parent.glob(f"*.shard-*-of-{shard[1]}.json")):
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            if not other.is_file():  # (a pipe: read, it waits for a writer for ever)
                continue
            theirs = json.loads(other.read_text()).get("batch") or {}
            if (theirs.get("array") == mine["array"]
                    and theirs.get("fingerprint") not in (None, mine["fingerprint"])):
                return (f"the summary {other.name} is of a shard that found {theirs['jobs']} "
                        f"jobs, this one {len(jobs)}: files were added or removed between "
                        f"their starts, and some jobs may be in no shard's slice; once every "
                        f"shard is done, run the batch again (without a shard) to do them")
    return None


def _same_contents(p: Plan, rec: dict) -> bool:
    """The files the record's run read are still there and hold what they held
    (:func:`dip.run.fingerprints`: a photo or mask replaced under the same name is redone). A
    record from before fingerprints existed is trusted."""
    recorded = rec.get("fingerprints")
    if not isinstance(recorded, dict):
        return True
    return (all(path.is_file() for path in p.reads)
            and all(recorded.get(name) == value for name, value in fingerprints(p).items()))


def is_done(job: Job) -> bool:
    """The job's output and record exist, the record is of this input (and task options and
    reference) with the same resolved config, that run was not interrupted, and the pictures
    and snapshots asked for are in place."""
    return done_record(job) is not None


def done_record(job: Job) -> dict[str, Any] | None:
    """The record of the job's finished result where :func:`is_done`, else None."""
    try:
        rec = record.read(job.output) if job.output.exists() else None
    except OSError:  # a name too long to ask about: the job's own checks refuse it, alone
        return None
    if rec is None:
        return None
    task = get_task(job.task)
    the_plan = plan(job.request.replace(write=False))
    cfg = json.loads(json.dumps(the_plan.cfg.to_dict()))
    # Which device ran it is not part of what was asked (the preset it implies is), nor how
    # many of its threads (a packed job of one fit records the one it ran on).
    done = record_config(rec["config"], task.sections)
    same = _what_was_asked(cfg) == _what_was_asked(done)
    reference = (str(Path(job.request.reference).resolve())
                 if job.request.reference is not None else None)
    pictures = [key for key in ("report", "gif") if getattr(job.request, key)]
    asked = task.record_args(job.request.task_args)
    defaults = {o.name: o.default for o in task.options}
    done = (same and _same_contents(the_plan, rec) and rec.get("stop_reason") != "interrupted"
            and all(rec.get(key) and record.located(rec, key, job.output).exists()
                    for key in pictures)
            and not _snapshots_left_behind(the_plan)
            and _same_file(rec, "input", str(job.input.resolve()))
            and all(rec.get(k, defaults.get(k)) == v or _same_file(rec, k, v)
                    for k, v in asked.items())
            and _same_file(rec, "reference", reference))
    return rec if done else None


def _snapshots_left_behind(p: Plan) -> bool:
    """Snapshots of the result's own fit still in its staged folder: a kill cut their move
    into the snapshot folder short (:func:`dip.run.write`: they were written during the fit,
    before the record; a later run's, killed while it fitted, are newer and leave the
    result done)."""
    staged = staged_snapshots(p)
    try:
        written = p.files["record"].stat().st_mtime
        return staged.is_dir() and any(path.stat().st_mtime <= written
                                       for path in staged.glob("step_*.png"))
    except OSError:  # gone meanwhile: nothing left behind
        return False


def _same_file(rec: dict, key: str, path: Any) -> bool:
    """The record names ``path`` under ``key``; or another path (the batch's folder was moved,
    renamed or mounted elsewhere) where it keeps that file's fingerprint, which
    :func:`_same_contents` compares with the file's (a path, not a word such as ``alpha``)."""
    if rec.get(key) == path:
        return True
    recorded, value = rec.get("fingerprints"), rec.get(key)
    return (isinstance(path, str) and isinstance(value, str) and os.path.isabs(path)
            and os.path.isabs(value) and isinstance(recorded, dict) and key in recorded)


def _what_was_asked(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without the device and the CPU threads: how a job ran, not what."""
    asked = {k: v for k, v in config.items() if k != "device"}
    if isinstance(asked.get("perf"), dict):
        asked["perf"] = {k: v for k, v in asked["perf"].items() if k != "threads"}
    return asked


# --- running ----------------------------------------------------------------------------------

@dataclass
class Row:
    """What happened to one job (a line of the summary)."""

    job: str
    task: str
    input: str
    output: str
    status: str  # done | skipped (done before) | failed | interrupted | pending (not started)
    seconds: float = 0.0
    steps: int | None = None
    returned_step: int | None = None
    stop_reason: str | None = None
    device: str | None = None
    psnr: float | None = None
    ssim: float | None = None
    error: str | None = None

    @classmethod
    def of(cls, job: Job, status: str, error: str | None = None) -> Row:
        return cls(job.source, job.task, str(job.input), str(job.output), status, error=error)


def forecast(job: Job, overwrite: bool = False) -> Start:
    """What the job will do and cost (:func:`dip.run.forecast_plan`), planned as its run would
    be: the files it would write are checked (:func:`_replacing`, :func:`dip.run.plan`'s, the
    format's size), so that a dry run says which jobs the run would refuse (``overwrite``: as
    ``dip run``'s).

    Raises:
        DipError: the job would fail before its fit.
    """
    return forecast_plan(plan(_replacing(job, overwrite)))  # (planning writes nothing)


def run_job(job: Job, overwrite: bool = False, progress: Callable | None = None,
            spell: Callable[[str, str | None], str] = python_spelling) -> Row:
    """Restore one job's image; any failure becomes a row with its reason, arguments named
    by ``spell`` (never raises, except KeyboardInterrupt outside the fit)."""
    started = time.perf_counter()
    with held_until_start() as release:
        try:
            result = restore(_replacing(job, overwrite), progress=progress,
                             keep_on_interrupt=True, on_start=release)
        except Exception as exc:  # one image's unexpected failure must not end the batch
            result = exc
    return _row(job, result, spell, time.perf_counter() - started)


def _replacing(job: Job, overwrite: bool) -> RunRequest:
    """The job's request, replacing what it may: with ``overwrite`` every file where it
    writes (the user asked); without, dip's own earlier result for this output (its record
    names it, a killed run's record alone too) and the pictures that record names, when the
    new ones are written. Any other file where the job writes is the user's: the run's checks
    refuse it, and one that appears while the job runs is kept.

    Raises:
        InputError: dip's earlier result there was made from another picture (a result
            of the user's, made by one command, that a job would have replaced without a
            word) or changed since it was written (retouched by hand), or a report, GIF or
            uncertainty map the job writes beside it is a file that result did not write.
    """
    if overwrite:
        return job.request.replace(overwrite=True)
    old = record.own_record(job.output)
    if old is None:
        return job.request
    if not _of_this_input(old, job):
        raise InputError(f"{image.shown(job.output)} already exists: dip's result of "
                         f"another picture, {image.shown(str(old.get('input')))}; move it, or "
                         f"use {{arg:overwrite}} to replace it")
    if job.output.exists() and not record.as_written(old, "output", job.output):
        raise InputError(f"{image.shown(job.output)} already exists and was changed since dip "
                         f"wrote it (its record says what dip wrote); move it, or use "
                         f"{{arg:overwrite}} to replace it")
    beside = files_beside(job.output)
    for kind in record.PICTURES:
        path = beside[kind]
        if getattr(job.request, kind) and (path.exists() or path.is_symlink()) and (
                str(record.located(old, kind, job.output)) != str(path.resolve())
                or not record.as_written(old, kind, path)):
            raise InputError(f"{image.shown(path)} already exists and is not dip's earlier "
                             f"result's; move it, or use {{arg:overwrite}} to replace it")
    return job.request.replace(overwrite=True)


def _of_this_input(rec: dict, job: Job) -> bool:
    """The record's result was made from the job's input: its path (the picture there may
    have been replaced since: the job redoes it), or one holding the same bytes (the
    batch's folder moved)."""
    path = job.input.resolve()
    if rec.get("input") in (None, str(path)):  # (None: a record that does not say)
        return True
    if Path(os.path.abspath(job.input)) != path:  # through a link, whose target the record
        return True  # names: repointed, the picture under the job's name is another
    recorded = (rec.get("fingerprints") or {}).get("input")
    try:
        return recorded is not None and recorded == record.fingerprint(path)
    except OSError:  # unreadable: the run says so
        return True


def _row(job: Job, result: Restoration | Exception, spell: Callable, seconds: float) -> Row:
    """The summary's line for a job's outcome."""
    row = Row.of(job, "failed")
    if isinstance(result, DipError):
        row.error = result.render(spell)
    elif isinstance(result, Exception):
        row.error = f"{type(result).__name__}: {result}"
    else:
        _recorded(row, result.record)
        row.status = "interrupted" if row.stop_reason == "interrupted" else "done"
    row.seconds = round(seconds, 2)
    return row


def _recorded(row: Row, rec: dict[str, Any]) -> Row:
    """``row`` with what its result's record says: steps, stop, device and scores (a job
    done by an earlier run too: a resumed batch's summary had no figures for it)."""
    row.steps, row.returned_step = rec.get("iterations"), rec.get("returned_iteration")
    row.stop_reason, row.device = rec.get("stop_reason"), rec.get("device")
    metrics = rec.get("metrics") or {}
    row.psnr = get_task(row.task).row_psnr(metrics)
    row.ssim = metrics.get("ssim")
    return row


def packs(jobs: list[Job], size: int) -> list[list[Job]]:
    """Consecutive jobs that fit with the same settings (:func:`dip.run.pack_key`), at most
    ``size`` to a pack."""
    out: list[list[Job]] = []
    last = None
    for job in jobs:
        key = pack_key(job.request)
        if out and key is not None and key == last and len(out[-1]) < size:
            out[-1].append(job)
        else:
            out.append([job])
        last = key
    return out


def run_pack(pack: list[Job], overwrite: bool = False, progress: Callable | None = None,
             spell: Callable[[str, str | None], str] = python_spelling) -> list[Row]:
    """Restore the jobs of a pack in one group of fits (:func:`dip.run.restore_pack`); a
    failure of the group as a whole (out of memory with all of them at once, or one job's
    unexpected error) runs each job alone instead, where a failure stays that job's."""
    if len(pack) == 1:
        return [run_job(pack[0], overwrite, progress, spell)]
    started = time.perf_counter()
    requests: list[RunRequest | DipError] = []
    for job in pack:  # a job refused here fails alone; the others stay packed
        try:
            requests.append(_replacing(job, overwrite))
        except DipError as exc:
            requests.append(exc)
    packed = [r for r in requests if isinstance(r, RunRequest)]
    try:
        done = iter(restore_pack(packed, progress=progress, keep_on_interrupt=True))
    except Exception:  # as run_job: one image's failure must not end the batch
        return [run_job(job, overwrite, progress, spell) for job in pack]
    seconds = (time.perf_counter() - started) / max(1, len(packed))
    return [_row(job, next(done) if isinstance(r, RunRequest) else r, spell, seconds)
            for job, r in zip(pack, requests)]


def pack_size(pack: int | str, devices: list[str]) -> int:
    """``--pack``: a number, or auto: as many jobs as the CPU has cores (each fits on one
    thread beside the others: 1.25x the throughput of one job at a time on 2 cores,
    benchmarks/README.md "batch.py"); on a GPU as many as one stack holds
    (:data:`dip.layout.STACK_MOST`: jobs of one size take each step together; fewer where
    their memory is over the budget, :func:`dip.run.by_memory`)."""
    if pack != "auto":
        return max(1, int(pack))
    return usable_cores() if devices == ["cpu"] else STACK_MOST


_worker: dict[str, Any] = {}


def _init_worker(devices: Any, threads: int, stop: Any, parent: int, said: Any) -> None:
    """Give this worker its device: a GPU becomes its current CUDA device, which a job's
    ``device: auto`` (= ``cuda``) then uses; a job naming its own device keeps it."""
    import torch

    streams.survive_closed_pipes()  # a warning to a closed `| head` failed the job
    device = devices.get()
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    _worker.update(device=device, stop=stop, parent=parent, busy=False)
    torch.set_num_threads(threads)
    os.environ.pop("OMP_NUM_THREADS", None)  # the pool splits the cores: N threads a worker
    # that a user's OMP_NUM_THREADS=N gave each job's fit would oversubscribe them
    # the warnings of a job (a grey mask, ...) go to the parent, which warns them again
    # (_relay): written here, they landed on the line of the dip command's progress bar, and a
    # Python caller's filters and catch_warnings never saw them
    warnings.showwarning = functools.partial(_tell_parent, said)
    # Ctrl-C reaches every process of the terminal's group, and the parent passes SIGTERM on:
    # between jobs a worker ignores both (no traceback from its idle loop); during a job the
    # first one stops the fit (see _run_in_worker). The parent started this process with both
    # blocked (_spawning), so none was lost or turned into a traceback while it imported torch.
    # a hangup the batch was started to outlive (nohup: SIGHUP ignored, as the worker
    # inherits it) stays ignored; SIGINT and SIGTERM are how the parent stops a job
    hangup = getattr(signal, "SIGHUP", None)
    _worker["stopping"] = tuple(s for s in interrupts.STOPPING if s != hangup
                                or signal.getsignal(s) is not signal.SIG_IGN)
    for signum in interrupts.STOPPING:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, interrupts.STOPPING)
    threading.Thread(target=_watch_parent, daemon=True).start()


def _watch_parent() -> None:
    """A worker whose parent died (``kill -9``) stops its job like Ctrl-C, keeping the estimate,
    starts no other, and exits, instead of running on for hours as an orphan."""
    while os.getppid() == _worker["parent"]:
        time.sleep(0.5)
    _worker["orphaned"] = True
    if _worker["busy"]:
        os.kill(os.getpid(), signal.SIGINT)
    while _worker["busy"]:  # the job writes its estimate
        time.sleep(0.1)
    os._exit(1)


def _stop_job(signum: int, frame: Any) -> None:
    """The first stopping signal of a job interrupts it; later ones (Ctrl-C reaches the worker
    and the parent passes it on) must not cut the writing of its estimate short."""
    for s in _worker["stopping"]:
        signal.signal(s, _no_stop)
    raise KeyboardInterrupt


def _no_stop(signum: int, frame: Any) -> None:
    """A stopping signal once the job is stopping or done: nothing. (Not SIG_IGN: a signal
    caught by a Python handler just before the switch to SIG_IGN raises "ignored due to race
    condition", a traceback, as the parent's SIGINT after a hangup's SIGHUP did.)"""


def _tell_parent(said: Any, message: Warning | str, category: type[Warning],
                 *where: Any, **also: Any) -> None:
    """A worker's ``warnings.showwarning``: the warning's text (a :class:`Spelled`'s
    template, its arguments spelled where it is shown) to the parent's :func:`_relay`."""
    ours = isinstance(message, Spelled)
    said.put((message.template if ours else str(message), ours, category.__name__))


#: seconds the batch waits for the workers' last warnings once its pool has ended
RELAY_WAIT = 10


def _relay(said: Any) -> None:
    """Warn the workers' warnings (:func:`_tell_parent`) in this process, until None: a
    :class:`dip.image.DipWarning` as one, another as Python's class of that name (a
    ``UserWarning`` where Python has none). Each job's are shown, as a batch without workers
    shows them (no registry here, and none kept from job to job in the worker: the same
    words from two jobs are not taken for a repeat)."""
    for text, ours, name in iter(said.get, None):
        kind = getattr(builtins, name, None)
        category = (image.DipWarning if ours else kind if isinstance(kind, type)
                    and issubclass(kind, Warning) else UserWarning)
        warn_again(category(text), category, "<dip run worker>", 0, module=__name__,
                   registry=None)


def _run_in_worker(job: Job, overwrite: bool, spell: Callable) -> Row:
    for signum in _worker["stopping"]:
        signal.signal(signum, _stop_job)
    _worker["busy"] = True  # before the check: _watch_parent reads them in the other order
    try:
        if _worker["stop"].is_set() or _worker.get("orphaned"):  # queued before Ctrl-C
            return Row.of(job, PENDING, NOT_STARTED)
        with warnings.catch_warnings():  # warnings already shown are forgotten (the filters'
            row = run_job(job, overwrite, spell=spell)  # change): each job shows its own
    except KeyboardInterrupt:  # outside the fit, which keeps its estimate itself
        row = Row.of(job, "interrupted")
    finally:
        _worker["busy"] = False
        for signum in _worker["stopping"]:
            signal.signal(signum, _no_stop)
    if row.device in (None, "cuda"):
        row.device = _worker.get("device")
    return row


@contextmanager
def _spawning() -> Iterator[None]:
    """Block SIGINT, SIGTERM and SIGHUP while worker processes are started: a new process
    inherits the blocked mask through exec, so a signal during its start-up (seconds of
    importing torch) waits until :func:`_init_worker` ignores it, and the parent's own is
    delivered on leaving."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, interrupts.STOPPING)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def assign_device(jobs: list[Job], devices: list[str] | None, workers: int) -> list[Job]:
    """Check ``devices``; where they make one device for every job (one worker, or only the
    CPU), it becomes the device of each job that does not name its own, so that the parent
    resolves the same config (e.g. the CPU preset) as the worker that runs the job."""
    if not devices:
        return jobs
    for name in devices:
        try:
            resolve_device(name)
        except InputError as exc:  # its advice names the option given: --devices, not --device
            raise BatchError(exc.template.replace("{arg:device=", "{arg:devices=")) from None
    if "cpu" in devices and len(set(devices)) > 1:
        # A job's preset (and so its result) would depend on which worker took it.
        raise BatchError("{arg:devices} mixes the CPU and GPUs; give one kind")
    if workers > 1 and devices != ["cpu"]:
        return jobs  # each worker's GPU is its current device (_init_worker)
    return [job if job.request.device is not None
            else replace(job, request=job.request.replace(device=devices[0])) for job in jobs]


def run_jobs(jobs: list[Job], *, workers: int = 1, devices: list[str] | None = None,
             overwrite: bool = False, on_end: Callable[[Job, Row], None] | None = None,
             progress: Callable | None = None,
             spell: Callable[[str, str | None], str] = python_spelling,
             pack: int | str = 1) -> list[Row]:
    """Run ``jobs`` (in this process, or in ``workers`` processes spread over ``devices``);
    finished ones are skipped unless ``overwrite``. Workers on a CPU split its cores; on CUDA
    each worker uses one of ``devices`` in turn (a job whose ``device`` is set keeps it).
    In this process, jobs that fit with the same settings run ``pack`` at a time in one group
    of fits (:func:`pack_size`: auto, or a number; with several workers, one job each).

    Raises:
        BatchInterrupted: on Ctrl-C, with every job's row (a job running at that moment
            writes its estimate so far, marked ``interrupted``; one not started is
            ``pending``).
    """
    jobs = assign_device(jobs, devices, workers)
    # the rows in the batch's order, not as the jobs ended (workers finish out of turn, and
    # the jobs done before came first)
    order = {job.output: i for i, job in enumerate(jobs)}

    def in_order(row: Row) -> int:
        return order.get(Path(row.output), len(order))

    started = time.time()
    try:
        rows = _run_jobs(jobs, workers, devices, overwrite, on_end, progress, spell, pack)
    except (BatchInterrupted, WorkersNotStarted) as exc:
        exc.rows.sort(key=in_order)
        raise
    by_output = {job.output: job for job in jobs}
    return sorted((_done_meanwhile(row, by_output.get(Path(row.output)), started)
                   for row in rows), key=in_order)


def _done_meanwhile(row: Row, job: Job | None, started: float) -> Row:
    """A failed job's row, as ``skipped`` where its result is done now by a run that wrote
    its record while this one ran (a second ``dip run`` of the batch, which held it: this
    run's summary, written last, called the other's finished jobs failed)."""
    if row.status != "failed" or job is None:
        return row
    rec = done_record(job)
    try:
        meanwhile = rec is not None and record.record_path(job.output).stat().st_mtime >= started
    except OSError:
        return row
    return _recorded(Row.of(job, "skipped"), rec) if meanwhile else row


def _run_jobs(jobs: list[Job], workers: int, devices: list[str] | None, overwrite: bool,
              on_end: Callable[[Job, Row], None] | None, progress: Callable | None,
              spell: Callable[[str, str | None], str], pack: int | str) -> list[Row]:
    given, devices = devices, devices or default_devices()
    rows: list[Row] = []
    todo = []
    for job in jobs:
        if not overwrite and (rec := done_record(job)) is not None:
            rows.append(_recorded(Row.of(job, "skipped"), rec))
            if claim_path(job.output).exists():  # a killed run's, when it was done
                drop_dead_claims(plan(job.request.replace(write=False)))
            if on_end:
                on_end(job, rows[-1])
        else:
            todo.append(job)
    workers = pool_size(workers, len(todo))
    if workers <= 1:
        # as the first worker would run them: on the first device (--workers 2 --devices
        # cuda:1 with one job left to do ran it on the default GPU); not the default devices,
        # which would replace a device the job's config or set: names (set: {device: cuda}
        # ran on the CPU, its record then of another preset than the job's, and it was redone
        # by every run where the dry run said it fails)
        if given:
            todo = assign_device(todo, devices[:1], 1)
        return _run_here(todo, rows, overwrite, on_end, progress, spell,
                         pack_size(pack, devices))

    threads = max(1, usable_cores() // workers) if devices == ["cpu"] else 1
    # A worker killed from outside (the kernel's out-of-memory killer, a crash) breaks the
    # whole pool and every job in it: those run again in a new pool, and what that one loses
    # too runs one pool each, so the job that kills its worker fails alone.
    pool = dict(devices=devices, threads=threads, overwrite=overwrite, rows=rows,
                on_end=on_end, spell=spell)
    broken = _run_pool(todo, workers, **pool)
    if broken:
        broken = _run_pool(broken, workers, **pool)
    for i, job in enumerate(broken):
        try:
            lost = _run_pool([job], 1, **pool)
        except WorkersNotStarted as exc:  # the jobs after it did not run either
            exc.rows += [Row.of(later, "failed", exc.not_run) for later in broken[i + 1:]]
            raise
        if lost:
            rows.append(Row.of(job, "failed", "its worker process died (killed, or out of "
                                              "memory?)"))
            if on_end:
                on_end(job, rows[-1])
    return rows


def _run_here(todo: list[Job], rows: list[Row], overwrite: bool, on_end: Callable | None,
              progress: Callable | None, spell: Callable, pack: int = 1) -> list[Row]:
    """The jobs in this process, ``pack`` at a time (:func:`run_pack`)."""
    groups = packs(todo, pack)
    for i, group in enumerate(groups):
        try:
            done = run_pack(group, overwrite, progress, spell)
        except KeyboardInterrupt:
            done = [Row.of(job, "interrupted") for job in group]
        for job, row in zip(group, done):
            rows.append(row)
            if on_end:
                on_end(job, row)
        if any(row.status == "interrupted" for row in done):
            # the jobs that never started are in the summary too, as with --workers
            rows += [Row.of(job, PENDING, NOT_STARTED)
                     for later in groups[i + 1:] for job in later]
            raise BatchInterrupted(rows)
    return rows


#: the most processes Python's pool starts on Windows (its wait on their handles)
WINDOWS_MOST_WORKERS = 61


def pool_size(workers: int, jobs: int, system: str = os.name) -> int:
    """The worker processes for ``jobs`` jobs to run: no more than there are jobs (each
    worker loads torch, and on a CPU the workers split the cores: 2 jobs with ``--workers
    8`` left 6 of 8 parts of the cores idle), nor than Windows' pool starts (it refused 64
    with a traceback)."""
    return max(1, min(workers, jobs, WINDOWS_MOST_WORKERS if system == "nt" else jobs))


def _run_pool(todo: list[Job], workers: int, *, devices: list[str], threads: int,
              overwrite: bool, rows: list[Row], on_end: Callable | None,
              spell: Callable) -> list[Job]:
    """One pool over ``todo``; appends the rows, returns the jobs its breaking took down.

    Raises:
        WorkersNotStarted: a worker process could not be started (too many open files): the
            jobs of ``todo`` that did not run failed, and the rows say so.
    """
    ctx = multiprocessing.get_context("spawn")
    try:
        with _spawning():  # the first semaphore starts multiprocessing's resource tracker:
            queue, stop, said = ctx.Queue(), ctx.Event(), ctx.Queue()  # with SIGHUP blocked,
        for i in range(workers):  # never unblocked
            queue.put(devices[i % len(devices)])
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                   initargs=(queue, threads, stop, os.getpid(), said))
    except OSError as exc:
        raise _not_started(exc, todo, rows) from None
    relay = threading.Thread(target=_relay, args=(said,), daemon=True)
    relay.start()
    try:
        return _pooled(pool, todo, stop, overwrite, rows, on_end, spell)
    finally:  # the pool has ended: every worker's warnings are in the queue
        said.put(None)
        # bounded, and the queue not joined at exit: a worker killed while writing to it
        # holds its lock, and the None would never arrive
        said.cancel_join_thread()
        relay.join(RELAY_WAIT)


def _pooled(pool: ProcessPoolExecutor, todo: list[Job], stop: Any, overwrite: bool,
            rows: list[Row], on_end: Callable | None, spell: Callable) -> list[Job]:
    broken: list[Job] = []
    with pool, _pool_thread_failure(pool) as failure:
        futures = {}
        try:
            try:
                with _spawning():  # the pool starts its processes as jobs are submitted
                    for job in todo:
                        futures[pool.submit(_run_in_worker, job, overwrite, spell)] = job
            except (OSError, RuntimeError) as exc:  # (RuntimeError: no thread could start)
                _start_none(pool, stop, futures, rows, on_end)
                raise _not_started(exc, todo, rows) from None
            for future in _completed(pool, futures, stop, failure, rows):
                job = futures[future]
                try:
                    rows.append(future.result())
                except BrokenProcessPool:
                    broken.append(job)
                    continue
                if on_end:
                    on_end(job, rows[-1])
        except KeyboardInterrupt:
            _stop_pool(pool, stop, futures, todo, rows)
            raise BatchInterrupted(rows) from None
    return broken


#: seconds between two looks at whether the pool's own thread still runs
POOL_CHECK = 1.0


def _completed(pool: ProcessPoolExecutor, futures: dict[Future, Job], stop: Any,
               failure: list[BaseException], rows: list[Row]) -> Iterator[Future]:
    """The pool's futures as they complete (``as_completed``), ended with the error that
    stopped the pool's own thread, where one did (a thread it could not start, under a limit
    on threads or memory): the futures it had not finished then waited for ever, and so did
    the batch, SIGTERM too.

    Raises:
        WorkersNotStarted: that thread stopped; the jobs without a row failed.
    """
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=POOL_CHECK, return_when=FIRST_COMPLETED)
        yield from done
        thread = _pool_thread(pool)
        if pending and thread is not None and not thread.is_alive():
            done, pending = wait(pending, timeout=0)  # (what it finished before it stopped)
            yield from done
            if pending:
                stop.set()
                _kill_workers(pool)
                why = failure[0] if failure else RuntimeError("the worker pool stopped")
                raise _not_started(why, [futures[f] for f in pending], rows)


def _pool_thread(pool: ProcessPoolExecutor) -> threading.Thread | None:
    """The pool's own thread, which hands the workers their jobs and reads their results
    (CPython's ``_executor_manager_thread``; None before the first job, or elsewhere)."""
    return getattr(pool, "_executor_manager_thread", None)


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's workers, whose results nothing reads now that its own thread is gone
    (a SIGTERM asks an idle one to stop after its job: it waited for one for ever), before
    the queues they read from are."""
    workers = list((getattr(pool, "_processes", None) or {}).values())
    for process in workers:
        process.kill()
    for process in workers:
        process.join(POOL_CHECK * 5)


@contextlib.contextmanager
def _pool_thread_failure(pool: ProcessPoolExecutor) -> Iterator[list[BaseException]]:
    """The error that ends the pool's own thread, kept for the batch's one line instead of
    Python's traceback of it on stderr; other threads' errors go as before."""
    failure: list[BaseException] = []
    previous = threading.excepthook

    def hook(args: Any) -> None:
        if args.thread is not None and args.thread is _pool_thread(pool):
            failure.append(args.exc_value)
        else:
            previous(args)

    threading.excepthook = hook
    try:
        yield failure
    finally:
        threading.excepthook = previous


def _start_none(pool: ProcessPoolExecutor, stop: Any, futures: dict, rows: list[Row],
                on_end: Callable | None) -> None:
    """A worker could not be started: the jobs handed to the pool start none (the one whose
    start failed was queued too), and a job that did start keeps its row."""
    stop.set()
    thread = _pool_thread(pool)
    if thread is not None and thread.ident is None:  # its own thread could not start: no
        pool._executor_manager_thread = None  # job reached a worker, and shutdown's join
        _kill_workers(pool)  # of it raised 'cannot join thread before it is started'
    pool.shutdown(wait=True, cancel_futures=True)
    for future, job in futures.items():
        row = _returned(future)
        if row is not None and row.error != NOT_STARTED:
            rows.append(row)
            if on_end:
                on_end(job, row)


def _returned(future: Future) -> Row | None:
    """The row a worker returned for its job; None for a job that never ran, was cancelled or
    failed in the pool, or that the pool's stopped thread left not done."""
    if not future.done() or future.cancelled() or future.exception() is not None:
        return None
    return future.result()


def _not_started(exc: BaseException, todo: list[Job], rows: list[Row]) -> WorkersNotStarted:
    """The error for workers (or the pool's thread) that could not be started, with a failed
    row for each job of ``todo`` that has none."""
    why = getattr(exc, "strerror", None) or str(exc)
    advice = ("raise the limit of open files (ulimit -n) or use fewer {arg:workers}"
              if getattr(exc, "errno", None) in (errno.EMFILE, errno.ENFILE)
              else "use fewer {arg:workers}")
    ran = {(row.job, row.input) for row in rows}
    not_run = f"not run: the worker processes could not be started ({why})"
    rows += [Row.of(job, "failed", not_run)
             for job in todo if (job.source, str(job.input)) not in ran]
    return WorkersNotStarted(f"could not start the worker processes: {why}; {advice}", rows,
                             not_run)


def _stop_pool(pool: ProcessPoolExecutor, stop: Any, futures: dict, todo: list[Job],
               rows: list[Row]) -> None:
    """Ctrl-C or SIGTERM: running jobs write their estimate and return; jobs already handed
    to the pool's queue see the event and do not start. Ctrl-C reached the workers too;
    SIGTERM (kill, a SLURM time limit) reached only this process: pass it on."""
    stop.set()
    # (not on Windows, where os.kill ends a process outright: the console's Ctrl-C reached the
    # workers, and a SIGTERM there is that too)
    for process in (list(getattr(pool, "_processes", {}).values()) if os.name != "nt" else ()):
        with contextlib.suppress(OSError):
            os.kill(process.pid, signal.SIGINT)
    with interrupts.deferred() as again:  # already stopping: a second Ctrl-C waits too
        pool.shutdown(wait=True, cancel_futures=True)
        again.clear()
    for future, job in futures.items():
        row = _returned(future)
        if row is None:
            rows.append(Row.of(job, PENDING, NOT_STARTED))
        elif row not in rows:
            rows.append(row)
    for job in todo:
        if job not in futures.values():
            rows.append(Row.of(job, PENDING, NOT_STARTED))


def default_devices() -> list[str]:
    """Every visible CUDA device, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


# --- the summary -------------------------------------------------------------------------------

STATUSES = ("done", "skipped", "failed", "interrupted", PENDING)


def counts(rows: list[Row]) -> dict[str, int]:
    """How many jobs ended in each status."""
    return {status: sum(r.status == status for r in rows) for status in STATUSES}


def summary_paths(jobs: list[Job], summary: str | os.PathLike | None,
                  shard: tuple[int, int] | None) -> tuple[Path, Path]:
    """``summary.csv`` and ``summary.json`` in the folder all outputs share (or ``summary``,
    with .csv and .json: its own .csv, .json or .png replaced, any other part of its name
    kept, as a date's ``nightly.2024-12-07``, which was cut to ``nightly``); a shard's files
    carry ``.shard-K-of-N`` so shards never collide."""
    if summary is not None:
        stem = Path(summary)
        if stem.suffix.lower() in (".csv", ".json", ".png"):
            stem = stem.with_suffix("")
    else:
        try:
            stem = Path(os.path.commonpath([str(j.output.parent) for j in jobs])) / "summary"
        except ValueError:  # outputs on two Windows drives share no folder
            raise BatchError("the outputs share no folder for the summary (they are on two "
                             "drives); give {arg:summary_path}") from None
    name = stem.name + (f".shard-{shard[0]}-of-{shard[1]}" if shard is not None else "")
    return stem.with_name(name + ".csv"), stem.with_name(name + ".json")


def summary_files(csv_path: Path, json_path: Path) -> list[Path]:
    """The summary's three files: the table, its JSON, the contact sheet."""
    return [csv_path, json_path, csv_path.with_suffix(".png")]


def prepare_summary(csv_path: Path, json_path: Path, jobs: list[Job]) -> None:
    """Check before any job runs that the summary can be written there (not after a night):
    :func:`check_summary`, and its folder can be written (made, if it is not there).

    Raises:
        BatchError, InputError: naming the file or the folder.
    """
    check_summary(csv_path, json_path, jobs)
    try:
        made = missing_folders(csv_path.parent)
    except (OSError, RuntimeError):  # a name too long, a loop of links: writable_folder says
        made = []
    try:  # (a file made and removed there: os.access says yes to root, even in /proc, /sys)
        writable_folder(csv_path.parent, f"the summary {csv_path.name}")
    except InputError:
        for folder in made:  # deepest first: the refused run leaves no folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def check_summary(csv_path: Path, json_path: Path, jobs: list[Job]) -> None:
    """The summary's checks that write nothing (``--dry-run`` makes them too): its names fit
    the file system, none of its files is a file a job reads or writes, and none replaces a
    file dip did not write (a photo called summary.png, a user's own summary.csv).

    Raises:
        BatchError: naming the file.
    """
    # (before a name too long is asked about)
    check_name_length(csv_path, summary_files(csv_path, json_path), "summary",
                      "{arg:summary_path}")
    reads = {path_key(p) for job in jobs for p in job_reads(job)}
    writes = {path_key(p) for job in jobs for p in job_writes(job)}
    for path in summary_files(csv_path, json_path):
        if path_key(path) in reads:
            raise BatchError(f"the summary would write {path}, a file the batch reads; choose "
                             f"another summary path")
        if path_key(path) in writes:  # a job's result, record or picture (summary.png)
            raise BatchError(f"the summary would write {path}, where a job writes; choose "
                             f"another summary path")
        if path.exists() and not _our_summary(path):
            raise BatchError(f"{path} exists and dip did not write it; it is kept: move it or "
                             f"choose another summary path")


def _our_summary(path: Path) -> bool:
    """A summary file an earlier ``dip run`` wrote (its header, keys or mark say so); a pipe
    or a device of its name is none (reading a pipe waits for a writer for ever)."""
    if not path.is_file():
        return False
    try:
        if path.suffix == ".csv":
            with path.open("rb") as f:  # bytes: a name that is not UTF-8 is its bytes there
                return f.readline().strip() == ",".join(f.name for f in fields(Row)).encode()
        if path.suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(data, dict) and {"counts", "jobs"} <= data.keys()
    except (OSError, ValueError):
        return False
    # a contact sheet: marked when drawn (one from before the mark: beside our own table)
    return (image.dip_marker(path) == "summary"
            or (image.dip_marker(path) is None and path.with_suffix(".csv").is_file()
                and _our_summary(path.with_suffix(".csv")) and path.suffix == ".png"
                and _unmarked_sheet(path)))


def _unmarked_sheet(path: Path) -> bool:
    """A PNG without dip's mark whose record says nothing: an old contact sheet only when no
    record claims it as a result (a result beside the table would have its record)."""
    return not record.is_dip_output(path)


def write_summary(rows: list[Row], csv_path: Path, json_path: Path,
                  everyone: list[Job] | None = None) -> None:
    """The table, its JSON and the contact sheet (:func:`summary_files`) written together, all
    of them or none: each is written to a temporary name, and they take their places only
    once all three are written (:func:`dip.image.write_all_atomic`; a sheet that cannot be
    written leaves the last run's three files as they were), the table last. The JSON is
    strict, as the records are: a PSNR that is not a finite number is ``null``, and
    ``null_because`` says why. A file name that is not UTF-8 is its bytes in the table, as the
    file system has it, and an escape in the JSON (``\\udcff``, as in the records), which
    reads back as the name Python opens. ``everyone``: the whole batch's jobs, of which a
    shard's ``rows`` are a slice (its JSON keeps their number and :func:`list_fingerprint`)."""
    records = [asdict(r) for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, [f.name for f in fields(Row)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    data, reasons = record.strict({"counts": counts(rows), "jobs": records})
    if everyone is not None:
        data["batch"] = batch_facts(everyone)
    if reasons:
        data["null_because"] = reasons
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    table = buf.getvalue().encode("utf-8", "surrogateescape")
    sheet = summary_files(csv_path, json_path)[2]
    image.write_all_atomic([(csv_path, lambda f: f.write(table)),
                            (json_path, lambda f: f.write(text.encode())),
                            (sheet, image.marked_png(reports.contact_sheet(rows), "summary"))])
