"""The record written beside every result (``RESULT.png.json``): how it was made, typed.

:class:`Record` is built once by :func:`dip.run.restore` and serialised once
(:meth:`Record.to_json`); readers (``dip run``'s resume check, the summary, ``--config
RESULT.json``) go through :func:`read`. The JSON is strict: a value that is not a finite
number (the PSNR of a result identical to its reference) is written as ``null``, and
``null_because`` says why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Record:
    """One run. ``task_args`` are the task's own options as it records them (inpainting's
    ``mask`` and ``mask_keeps``, ...); they are written at the top level beside ``task``."""

    task: str
    input: str
    output: str | None
    reference: str | None
    iterations: int
    returned_iteration: int
    stop_reason: str
    #: the noise level the fits worked with (0-255 units; given or estimated): the denoising
    #: stop's noise floor and SURE's (under a fixed budget too), or auto_if_noisy's reading;
    #: None where nothing read one
    noise_sigma: float | None
    seconds: float
    device: str
    preset: str
    perf: str
    seed: int
    size: dict[str, list[int]]
    versions: dict[str, str]
    config: dict[str, Any]
    guard_restores: list[int]
    #: sampled every output.metrics_every steps: the curves behind the numbers above
    history: dict[str, list]
    task_args: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    #: extra files written with the result: {"report": path, "gif": path}
    files: dict[str, str] = field(default_factory=dict)
    #: content fingerprints of the files the run read ({"input": "...", "mask": "..."}):
    #: a changed file under the same name is not "already done"; and of those it wrote
    #: ("output" and the :data:`PICTURES`), added as they are written: a file changed
    #: since is the user's (:func:`as_written`)
    fingerprints: dict[str, str] = field(default_factory=dict)
    #: further facts a task or the run adds (the tile plan, the estimate, ...)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record as written: the fields of the first version keep their places (the
        run's mask fields are null when the task has none)."""
        data = dataclasses.asdict(self)
        task_args = {"mask": None, "mask_keeps": False, **data.pop("task_args")}
        out = {"task": data.pop("task"), "input": data.pop("input"),
               "output": data.pop("output"), **task_args}
        metrics, files = data.pop("metrics"), data.pop("files")
        extra = data.pop("extra")
        out.update(data)
        if metrics is not None:
            out["metrics"] = metrics
        out.update(files)
        out.update(extra)
        return out

    def to_json(self) -> str:
        data, reasons = strict(self.to_dict())
        if reasons:
            data["null_because"] = reasons
        return json.dumps(data, indent=2, allow_nan=False) + "\n"


def strict(value: Any, path: str = "") -> tuple[Any, dict[str, str]]:
    """``value`` with every NaN / infinity replaced by None, and where each was."""
    reasons: dict[str, str] = {}
    if isinstance(value, float) and not math.isfinite(value):
        why = ("infinite: the images are identical" if value > 0 else
               "infinite" if value < 0 else "not a number: nothing to measure")
        return None, {path: why}
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out[key], found = strict(item, f"{path}.{key}" if path else str(key))
            reasons.update(found)
        return out, reasons
    if isinstance(value, (list, tuple)):
        out_list = []
        for i, item in enumerate(value):
            cleaned, found = strict(item, f"{path}[{i}]")
            out_list.append(cleaned)
            reasons.update(found)
        return out_list, reasons
    return value, reasons


def fingerprint(path: Path) -> str:
    """``sha256:...`` of a file's bytes: a file replaced under the same name is told apart
    (about 0.5 s per GB here; a 12 MP JPEG takes milliseconds)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


#: the pictures a record names beside its result, by their keys (``x_report.png`` ...)
PICTURES = ("report", "gif", "uncertainty")


def as_written(rec: dict[str, Any], kind: str, path: Path) -> bool:
    """``path`` holds what the run ``rec`` describes wrote as its ``kind`` (``output`` or one
    of :data:`PICTURES`): not a file the user edited or put there since, which only
    ``overwrite`` replaces. A record from before it kept these fingerprints says nothing
    against it; a file that cannot be read is not known to be it."""
    recorded = rec.get("fingerprints")
    value = recorded.get(kind) if isinstance(recorded, dict) else None
    if not isinstance(value, str):
        return True
    try:
        return fingerprint(path) == value
    except OSError:
        return False


def is_dip_output(path: Path) -> bool:
    """A result dip wrote: a dip record beside it names it as its output."""
    return own_record(path) is not None


def own_record(path: Path) -> dict[str, Any] | None:
    """The record beside ``path`` if it is the record of ``path`` (it names it as its
    output), else None. A record that names a file of this name in another folder is its
    record too where its folder was moved (renamed, or mounted at another path): the input it
    names is where it was, relative to the result or as written, holding what it held
    (:func:`located`)."""
    data = read(path)
    if data is None:
        return None
    written = data.get("output")
    if written in (str(path.resolve()), None):
        return data
    moved = isinstance(written, str) and Path(written).name == path.name
    return data if moved and _input_unchanged(data, path) else None


def _input_unchanged(data: dict[str, Any], output: Path) -> bool:
    """The record's input, where it lies relative to ``output`` as it did to the output the
    record names, or at its path as written, holds what the run read (its fingerprint)."""
    recorded = data.get("fingerprints")
    value = recorded.get("input") if isinstance(recorded, dict) else None
    if not isinstance(value, str) or not isinstance(data.get("input"), str):
        return False  # (a record from before fingerprints: not known once moved)
    for path in {located(data, "input", output), Path(data["input"])}:
        try:
            if path is not None and path.is_file() and fingerprint(path) == value:
                return True
        except OSError:  # (a file that cannot be read: not this one)
            continue
    return False


def located(data: dict[str, Any], key: str, output: Path) -> Path | None:
    """Where the file the record names under ``key`` (its input, reference, GIF, ...) is for
    the result at ``output``: as written where the record names that result; else where it
    lay relative to the result the record names (the folder was moved, renamed or mounted
    elsewhere, the files with it). None where the record names none."""
    value, written = data.get(key), data.get("output")
    if not isinstance(value, str):
        return None
    here = Path(os.path.abspath(output)).resolve()
    if not isinstance(written, str) or written == str(here):
        return Path(value)
    try:
        return Path(os.path.normpath(here.parent / os.path.relpath(value,
                                                                   os.path.dirname(written))))
    except ValueError:  # on another drive (Windows)
        return Path(value)


def fitted_members(record: dict[str, Any]) -> list[dict[str, Any]]:
    """A record's members that were fitted (not a tile that needed no fit, nor one never
    started): empty for a run of one fit, whose record lists no members."""
    return [m for m in record.get("members", ()) if "iterations" in m]


def steps_said(record: dict[str, Any]) -> tuple[str, str]:
    """A record's steps in words, and the steps its image came from: ``("20 steps", "image
    from step 15")`` for one fit; for several (restarts, tiles: ``members``) the span over
    them, ``("2 fits of 20 to 70 steps", "images from steps 15 to 64")``: the record's own
    ``iterations`` are the first member's."""
    fits = fitted_members(record)
    if len(fits) < 2:
        n = record.get("iterations")
        return (f"{n} step{'' if n == 1 else 's'}",
                f"image from step {record.get('returned_iteration')}")

    def span(key: str) -> tuple[str, bool]:
        low, high = min(m[key] for m in fits), max(m[key] for m in fits)
        return (f"{low}", False) if low == high else (f"{low} to {high}", True)

    returned, apart = span("returned_iteration")
    return (f"{len(fits)} fits of {span('iterations')[0]} steps",
            f"images from step{'s' if apart else ''} {returned}")


def record_path(output: Path) -> Path:
    """The JSON record sits at the output path + ``.json``."""
    return output.with_name(output.name + ".json")


def read(output: Path) -> dict[str, Any] | None:
    """The record beside ``output`` as a mapping, or None when there is none, it is not
    JSON, or it is not a dip record (no ``config`` mapping): a pipe or a device of its name
    is none (reading a pipe waited for a writer for ever)."""
    path = record_path(output)
    try:
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        return None
    return data
