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

import contextlib
import csv
import difflib
import glob
import hashlib
import io
import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import yaml

from dip import image, interrupts
from dip import report as reports
from dip.config import TASKS, TYPE_NAMES, load_yaml, record_config
from dip.errors import ConfigError, DipError
from dip.runner import (FORMATS, MASK_FROM_ALPHA, beside, default_output, mask_record,
                        output_path, record_path, resolve_config, resolve_device, restore,
                        writable_folder)

#: what a job (or ``defaults``) may hold, and the type each value must have
JOB_KEYS: dict[str, tuple[type, ...]] = {
    "task": (str,), "input": (str,), "output": (str,), "mask": (str,), "mask_keeps": (bool,),
    "factor": (int,), "reference": (str,), "config": (str,), "set": (dict, list),
    "iters": (int,), "stop": (str,), "preset": (str,), "seed": (int,), "device": (str,),
    "save_every": (int,), "max_pixels": (int,), "format": (str,), "report": (bool,),
    "gif": (bool,),
}
_LINE = "__line__"
NOT_STARTED = "not started: the batch was interrupted"
_GLOB_CHARS = set("*?[")
SEED_BITS = 63


class BatchError(ConfigError):
    """The batch file itself is wrong: nothing runs (exit code 2)."""


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a batch; ``rows`` says what happened to each job that started."""

    def __init__(self, rows: list[Row]) -> None:
        super().__init__()
        self.rows = rows


@dataclass(frozen=True)
class Job:
    """One image to restore, with every path resolved.

    ``source`` names where it came from (``jobs[2], line 14``); ``seed`` is already derived
    from the batch seed and the input's path (:func:`job_seed`).
    """

    task: str
    input: Path
    output: Path
    source: str
    seed: int
    mask: Path | str | None = None  # a file, or "alpha" (the input's transparent pixels)
    mask_keeps: bool = False
    factor: int | None = None
    reference: Path | None = None
    config: Path | None = None
    overrides: tuple[str, ...] = ()
    iters: int | None = None
    stop: str | None = None
    preset: str | None = None
    device: str | None = None
    save_every: int | None = None
    max_pixels: int = image.DEFAULT_MAX_PIXELS
    report: bool = False
    gif: bool = False

    def config_args(self) -> dict[str, Any]:
        """The arguments :func:`dip.runner.resolve_config` and :func:`dip.restore` share."""
        return dict(config=self.config, overrides=self.overrides, iters=self.iters,
                    stop=self.stop, seed=self.seed, device=self.device, factor=self.factor,
                    save_every=self.save_every, preset=self.preset)

    def restore_args(self) -> dict[str, Any]:
        return dict(output=self.output, mask=self.mask, mask_keeps=self.mask_keeps,
                    reference=self.reference, max_pixels=self.max_pixels, report=self.report,
                    gif=self.gif, **self.config_args())


def job_seed(seed: int, key: str) -> int:
    """A job's seed from the batch's ``seed`` and the input's path relative to the batch file:
    a result does not depend on the order of the jobs or on how they are sharded."""
    digest = hashlib.blake2b(f"{seed}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> (64 - SEED_BITS)


# --- reading the batch file ---------------------------------------------------------------------

class _LineLoader(yaml.SafeLoader):
    """Safe YAML that remembers the line of every mapping (for messages)."""


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


def _check_entry(entry: Any, where: str, allowed: dict) -> dict:
    if not isinstance(entry, dict):
        raise BatchError(f"{where}: expected a mapping of options, got {entry!r}")
    for key, value in entry.items():
        if key == _LINE:
            continue
        if key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise BatchError(f"{where}: unknown key '{key}'{hint} (allowed: "
                             f"{', '.join(allowed)})")
        if not isinstance(value, allowed[key]) or (isinstance(value, bool)
                                                   and bool not in allowed[key]):
            kinds = " or ".join(TYPE_NAMES[t] for t in allowed[key])
            raise BatchError(f"{where}: '{key}' expects {kinds}, got {value!r}")
    return entry


def _overrides(value: dict | list | None, where: str) -> list[str]:
    """``set:`` as ``key=value`` strings for :func:`dip.config.parse_override` (JSON is YAML,
    so every value reads back as it was written)."""
    if value is None:
        return []
    if isinstance(value, list):
        if not all(isinstance(v, str) and "=" in v for v in value):
            raise BatchError(f"{where}: 'set' as a list holds 'key.path=value' strings")
        return list(value)
    return [f"{k}={json.dumps(_strip_lines(v), ensure_ascii=False)}" for k, v in value.items()
            if k != _LINE]


def _expand_inputs(pattern: str, base: Path, where: str) -> tuple[list[Path], bool]:
    """The files an ``input`` names, sorted; and whether it named several (folder, glob)."""
    path = base / pattern
    suffixes = image.readable_suffixes()
    try:
        if _GLOB_CHARS & set(pattern):
            found = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
        elif path.is_dir():
            found = sorted(path.iterdir())
        elif path.exists():
            return [path], False
        else:
            raise BatchError(f"{where}: input not found: {path}")
    except OSError as exc:
        raise BatchError(f"{where}: cannot list input {path}: {exc.strerror or exc}") from None
    # Images only (not records, summaries, ...) and not a batch's own contact sheet.
    files = [p for p in found if p.is_file() and p.suffix.lower() in suffixes
             and not (p.name.startswith("summary") and p.with_suffix(".csv").exists())]
    if not files:
        raise BatchError(f"{where}: input {pattern!r} matches no image in {base}")
    return files, True


def _companion(value: str | None, base: Path, input_path: Path, many: bool, key: str,
               where: str) -> Path | str | None:
    """A job's mask or reference: a file, or with several inputs a folder of same-named files."""
    if value is None:
        return None
    if key == "mask" and value == MASK_FROM_ALPHA:
        return MASK_FROM_ALPHA
    path = base / value
    if path.is_dir():
        path = path / input_path.name
    elif many:
        raise BatchError(f"{where}: with several inputs, '{key}' must be a folder holding a "
                         f"file named like each input ({path} is not a folder)")
    if not path.is_file():
        raise BatchError(f"{where}: {key} not found: {path}")
    return path


def _output(value: str | None, base: Path, input_path: Path, task: str, many: bool,
            fmt: str) -> Path:
    if value is None:
        return base / "results" / default_output(input_path, task, fmt)
    path = base / value
    if value.endswith(("/", os.sep)) or path.is_dir() or many or not path.suffix:
        return path / default_output(input_path, task, fmt)
    return path


def load_batch(path: str | os.PathLike) -> list[Job]:
    """Read, expand and check a batch file; every job's config is resolved once, so a wrong
    key or value stops the batch before anything runs.

    Raises:
        BatchError: naming the job, its line and the key.
    """
    path = Path(path)
    data = read_batch_file(path)
    _check_entry(data, str(path), {"defaults": (dict,), "jobs": (list,)})
    base = path.resolve().parent
    defaults = _check_entry(data.get("defaults") or {}, f"{path}: defaults",
                            {k: v for k, v in JOB_KEYS.items() if k != "input"})
    if not data.get("jobs"):
        raise BatchError(f"{path}: no jobs (expected 'jobs:' with a list of jobs)")
    jobs: list[tuple[Job, str]] = []
    owners: dict[Path, str] = {}
    for index, entry in enumerate(data["jobs"]):
        line = entry.get(_LINE) if isinstance(entry, dict) else None
        where = f"{path}: jobs[{index}]" + (f" (line {line})" if line else "")
        _check_entry(entry, where, JOB_KEYS)
        spec = {**defaults, **entry}
        overrides = (_overrides(defaults.get("set"), f"{path}: defaults")
                     + _overrides(entry.get("set"), where))
        for key in ("task", "input"):
            if key not in spec:
                raise BatchError(f"{where}: missing '{key}'")
        task = spec["task"]
        if task not in TASKS:
            raise BatchError(f"{where}: unknown task '{task}' (known: {', '.join(TASKS)})")
        if task == "inpaint" and "mask" not in spec:
            raise BatchError(f"{where}: an inpaint job needs 'mask'")
        if task != "inpaint" and "mask" in spec:
            raise BatchError(f"{where}: 'mask' only applies to inpaint, not {task}")
        config = base / spec["config"] if "config" in spec else None
        fmt = spec.get("format", "png")
        if fmt not in FORMATS:
            raise BatchError(f"{where}: 'format' must be one of {', '.join(FORMATS)}, got "
                             f"{fmt!r}")
        if spec.get("max_pixels", 1) < 1:
            raise BatchError(f"{where}: 'max_pixels' must be >= 1, got {spec['max_pixels']}")
        files, many = _expand_inputs(spec["input"], base, where)
        first = True
        for input_path in files:
            try:
                key = input_path.relative_to(base).as_posix()
            except ValueError:
                key = input_path.as_posix()
            job = Job(
                task=task, input=input_path,
                output=_output(spec.get("output"), base, input_path, task, many, fmt),
                source=where.removeprefix(f"{path}: "),
                seed=job_seed(spec.get("seed", 0), key),
                mask=_companion(spec.get("mask"), base, input_path, many, "mask", where),
                mask_keeps=spec.get("mask_keeps", False), factor=spec.get("factor"),
                reference=_companion(spec.get("reference"), base, input_path, many,
                                     "reference", where),
                config=config, overrides=tuple(overrides), iters=spec.get("iters"),
                stop=spec.get("stop"), preset=spec.get("preset"), device=spec.get("device"),
                save_every=spec.get("save_every"),
                max_pixels=spec.get("max_pixels", image.DEFAULT_MAX_PIXELS),
                report=spec.get("report", False), gif=spec.get("gif", False))
            try:
                image.output_format(job.output)
                output_path(job.input, task, job.output, spec.get("format"))
                if first:  # the entry's settings, the same for each of its files but the seed
                    resolve_config(task, **job.config_args())
                    if job.device is not None:
                        resolve_device(job.device)
                    if job.report:
                        reports.require_matplotlib()
            except DipError as exc:
                raise BatchError(f"{where}: {exc}") from None
            first = False
            jobs.append((job, where))
    # A folder that is both input and output: this batch's own files (results, records,
    # reports, GIFs, snapshots) are not inputs, so every run, and every shard whenever it
    # starts, expands to the same job list.
    own = {p.resolve() for job, _ in jobs
           for p in [job.output, record_path(job.output), *beside(job.output).values()]}
    kept: list[Job] = []
    for job, where in jobs:
        if job.input.resolve() in own or job.input.resolve().parent in own:
            continue
        if job.output in owners:
            raise BatchError(f"{where}: {job.input.name} would write {job.output}, which "
                             f"{owners[job.output]} also writes; give the jobs different "
                             f"outputs")
        owners[job.output] = f"{where} ({job.input.name})"
        kept.append(job)
    return kept



# --- which jobs: shards, and what is already done ---------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    """``'2/8'`` -> ``(2, 8)``: the 2nd of 8 slices (1-based)."""
    k, sep, n = text.partition("/")
    try:
        k_i, n_i = int(k), int(n)
    except ValueError:
        k_i = n_i = 0
    if not sep or not 1 <= k_i <= n_i:
        raise BatchError(f"--shard expects K/N with 1 <= K <= N, got {text!r}")
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
    except ValueError:
        raise BatchError("the SLURM_ARRAY_TASK_* variables are not numbers; give --shard "
                         "K/N") from None
    k = (task_id - first) // step + 1
    if not 1 <= k <= count:
        raise BatchError(f"SLURM array task {task_id} is outside its {count} tasks; give "
                         f"--shard K/N")
    return k, count


def select_shard(jobs: list[Job], k: int, n: int) -> list[Job]:
    """The K-th of N interleaved slices of the expanded list: every job in exactly one."""
    return [job for i, job in enumerate(jobs) if i % n == k - 1]


def is_done(job: Job) -> bool:
    """The job's output and record exist, the record is of this input with the same resolved
    config, and that run was not interrupted."""
    record = _read_record(job.output) if job.output.exists() else None
    if record is None:
        return False
    cfg = json.loads(json.dumps(resolve_config(job.task, **job.config_args()).to_dict()))
    # Which device ran it is not part of what was asked (the preset it implies is).
    same = {k: v for k, v in cfg.items() if k != "device"} == {
        k: v for k, v in record_config(record.get("config") or {}).items() if k != "device"}
    reference = str(job.reference.resolve()) if job.reference is not None else None
    pictures = [key for key in ("report", "gif") if getattr(job, key)]
    return (same and record.get("stop_reason") != "interrupted"
            and all(record.get(key) and Path(record[key]).exists() for key in pictures)
            and record.get("input") == str(job.input.resolve())
            and record.get("mask") == mask_record(job.mask)
            and bool(record.get("mask_keeps", False)) == job.mask_keeps
            and record.get("reference") == reference)


def _read_record(output: Path) -> dict | None:
    try:
        record = json.loads(record_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "config" in record else None


# --- running ----------------------------------------------------------------------------------

@dataclass
class Row:
    """What happened to one job (a line of the summary)."""

    job: str
    task: str
    input: str
    output: str
    status: str  # done | skipped | failed | interrupted
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


def run_job(job: Job, overwrite: bool = False,
            progress: Callable | None = None) -> Row:
    """Restore one job's image; any failure becomes a row with its reason (never raises,
    except KeyboardInterrupt outside the fit)."""
    row = Row.of(job, "failed")
    started = time.perf_counter()
    # Leftovers of a run killed while writing (see image.write_all_atomic).
    for stale in job.output.parent.glob(f".{glob.escape(job.output.name)}*.part"):
        stale.unlink(missing_ok=True)
    # dip's own earlier result for other settings (it has a record) is replaced; a file that
    # is not dip's is only replaced with --overwrite.
    replace = overwrite or _read_record(job.output) is not None or not job.output.exists()
    if replace and job.output.exists():
        # Gone before the new record is renamed into place: a kill between the two renames
        # then leaves a record without an image (redone), never a new record beside an old
        # image (which would count as done).
        job.output.unlink()
    try:
        result = restore(job.task, job.input, overwrite=replace, progress=progress,
                         **job.restore_args())
    except DipError as exc:
        row.error = str(exc)
    except Exception as exc:  # one image's unexpected failure must not end the batch
        row.error = f"{type(exc).__name__}: {exc}"
    else:
        r = result.record
        row.status = "interrupted" if r["stop_reason"] == "interrupted" else "done"
        row.steps, row.returned_step = r["iterations"], r["returned_iteration"]
        row.stop_reason, row.device = r["stop_reason"], r["device"]
        metrics = r.get("metrics") or {}
        row.psnr = metrics.get("psnr_y", metrics.get("psnr"))
        row.ssim = metrics.get("ssim")
    row.seconds = round(time.perf_counter() - started, 2)
    return row


_worker: dict[str, Any] = {}
#: the signals that stop a job (Ctrl-C; SIGTERM from kill, timeout or a SLURM time limit)
_STOPPING = (signal.SIGINT, signal.SIGTERM)


def _init_worker(devices: Any, threads: int, stop: Any, parent: int) -> None:
    """Give this worker its device: a GPU becomes its current CUDA device, which a job's
    ``device: auto`` (= ``cuda``) then uses; a job naming its own device keeps it."""
    import torch

    device = devices.get()
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    _worker.update(device=device, stop=stop, parent=parent, busy=False)
    torch.set_num_threads(threads)
    # Ctrl-C reaches every process of the terminal's group, and the parent passes SIGTERM on:
    # between jobs a worker ignores both (no traceback from its idle loop); during a job the
    # first one stops the fit (see _run_in_worker). The parent started this process with both
    # blocked (_spawning), so none was lost or turned into a traceback while it imported torch.
    for signum in _STOPPING:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPPING)
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
    for s in _STOPPING:
        signal.signal(s, signal.SIG_IGN)
    raise KeyboardInterrupt


def _run_in_worker(job: Job, overwrite: bool) -> Row:
    for signum in _STOPPING:
        signal.signal(signum, _stop_job)
    _worker["busy"] = True  # before the check: _watch_parent reads them in the other order
    try:
        if _worker["stop"].is_set() or _worker.get("orphaned"):  # queued before Ctrl-C
            return Row.of(job, "interrupted", NOT_STARTED)
        row = run_job(job, overwrite)
    except KeyboardInterrupt:  # outside the fit, which keeps its estimate itself
        row = Row.of(job, "interrupted")
    finally:
        _worker["busy"] = False
        for signum in _STOPPING:
            signal.signal(signum, signal.SIG_IGN)
    if row.device in (None, "cuda"):
        row.device = _worker.get("device")
    return row


@contextmanager
def _spawning() -> Iterator[None]:
    """Block SIGINT and SIGTERM while worker processes are started: a new process inherits the
    blocked mask through exec, so a signal during its start-up (seconds of importing torch)
    waits until :func:`_init_worker` ignores it, and the parent's own is delivered on leaving."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPPING)
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
        resolve_device(name)
    if "cpu" in devices and len(set(devices)) > 1:
        # A job's preset (and so its result) would depend on which worker took it.
        raise BatchError("--devices mixes the CPU and GPUs; give one kind")
    if workers > 1 and devices != ["cpu"]:
        return jobs  # each worker's GPU is its current device (_init_worker)
    return [job if job.device is not None else replace(job, device=devices[0]) for job in jobs]


def run_jobs(jobs: list[Job], *, workers: int = 1, devices: list[str] | None = None,
             overwrite: bool = False, on_end: Callable[[Job, Row], None] | None = None,
             progress: Callable | None = None) -> list[Row]:
    """Run ``jobs`` (in this process, or in ``workers`` processes spread over ``devices``);
    finished ones are skipped unless ``overwrite``. Workers on a CPU split its cores; on CUDA
    each worker uses one of ``devices`` in turn (a job whose ``device`` is set keeps it).

    Raises:
        BatchInterrupted: on Ctrl-C, with the rows of the jobs that started (a job running at
            that moment writes its estimate so far, marked ``interrupted``).
    """
    jobs = assign_device(jobs, devices, workers)
    devices = devices or default_devices()
    rows: list[Row] = []
    todo = []
    for job in jobs:
        if not overwrite and is_done(job):
            rows.append(Row.of(job, "skipped"))
            if on_end:
                on_end(job, rows[-1])
        else:
            todo.append(job)
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            try:
                rows.append(run_job(job, overwrite, progress))
            except KeyboardInterrupt:
                rows.append(Row.of(job, "interrupted"))
            if on_end:
                on_end(job, rows[-1])
            if rows[-1].status == "interrupted":
                raise BatchInterrupted(rows)
        return rows

    threads = max(1, (os.cpu_count() or 1) // workers) if devices == ["cpu"] else 1
    # A worker killed from outside (the kernel's out-of-memory killer, a crash) breaks the
    # whole pool and every job in it: those run again in a new pool, and what that one loses
    # too runs one pool each, so the job that kills its worker fails alone.
    broken = _run_pool(todo, workers, devices, threads, overwrite, rows, on_end)
    if broken:
        broken = _run_pool(broken, workers, devices, threads, overwrite, rows, on_end)
    for job in broken:
        if _run_pool([job], 1, devices, threads, overwrite, rows, on_end):
            rows.append(Row.of(job, "failed", "its worker process died (killed, or out of "
                                              "memory?)"))
            if on_end:
                on_end(job, rows[-1])
    return rows


def _run_pool(todo: list[Job], workers: int, devices: list[str], threads: int,
              overwrite: bool, rows: list[Row], on_end: Callable | None) -> list[Job]:
    """One pool over ``todo``; appends the rows, returns the jobs its breaking took down."""
    ctx = multiprocessing.get_context("spawn")
    queue, stop = ctx.Queue(), ctx.Event()
    for i in range(workers):
        queue.put(devices[i % len(devices)])
    broken: list[Job] = []
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(queue, threads, stop, os.getpid())) as pool:
        futures = {}
        try:
            with _spawning():  # the pool starts its processes as jobs are submitted
                for job in todo:
                    futures[pool.submit(_run_in_worker, job, overwrite)] = job
            for future in as_completed(futures):
                job = futures[future]
                try:
                    rows.append(future.result())
                except BrokenProcessPool:
                    broken.append(job)
                    continue
                if on_end:
                    on_end(job, rows[-1])
        except KeyboardInterrupt:
            # Running jobs write their estimate and return; jobs already handed to the pool's
            # queue see the event and do not start. Ctrl-C reached the workers too; SIGTERM
            # (kill, a SLURM time limit) reached only this process: pass it on.
            stop.set()
            for process in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(OSError):
                    os.kill(process.pid, signal.SIGINT)
            with interrupts.deferred() as again:  # already stopping: a second Ctrl-C waits too
                pool.shutdown(wait=True, cancel_futures=True)
                again.clear()
            for future, job in futures.items():
                if future.cancelled() or future.exception() is not None:
                    rows.append(Row.of(job, "interrupted", NOT_STARTED))
                elif future.result() not in rows:
                    rows.append(future.result())
            for job in todo:
                if job not in futures.values():
                    rows.append(Row.of(job, "interrupted", NOT_STARTED))
            raise BatchInterrupted(rows) from None
    return broken


def default_devices() -> list[str]:
    """Every visible CUDA device, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return ["cpu"]


# --- the summary -------------------------------------------------------------------------------

STATUSES = ("done", "skipped", "failed", "interrupted")


def counts(rows: list[Row]) -> dict[str, int]:
    """How many jobs ended in each status."""
    return {status: sum(r.status == status for r in rows) for status in STATUSES}


def summary_paths(jobs: list[Job], summary: str | os.PathLike | None,
                  shard: tuple[int, int] | None) -> tuple[Path, Path]:
    """``summary.csv`` and ``summary.json`` in the folder all outputs share (or ``summary``,
    with .csv and .json); a shard's files carry ``.shard-K-of-N`` so shards never collide."""
    if summary is not None:
        stem = Path(summary).with_suffix("")
    else:
        stem = Path(os.path.commonpath([str(j.output.parent) for j in jobs])) / "summary"
    name = stem.name + (f".shard-{shard[0]}-of-{shard[1]}" if shard is not None else "")
    return stem.with_name(name + ".csv"), stem.with_name(name + ".json")


def prepare_summary(csv_path: Path) -> None:
    """Check before any job runs that the summary can be written there (not after a night)."""
    writable_folder(csv_path.parent, f"the summary {csv_path.name} (or give --summary)")


def write_summary(rows: list[Row], csv_path: Path, json_path: Path) -> None:
    """Both files written atomically."""
    records = [asdict(r) for r in rows]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, [f.name for f in fields(Row)], lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    text = json.dumps({"counts": counts(rows), "jobs": records}, indent=2) + "\n"
    image.write_all_atomic([(csv_path, lambda f: f.write(buf.getvalue().encode())),
                            (json_path, lambda f: f.write(text.encode()))])
