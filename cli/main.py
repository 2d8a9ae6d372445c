"""The ``dip`` command: parse options, call :mod:`dip`, report, choose the exit code.

No numerical code lives here, and no knowledge of a task: each task's subcommand is generated
from :data:`dip.tasks.TASKS` (its options, help and summary) and the options every run takes
from :class:`dip.request.RunRequest`. Every error the user can fix is one line on stderr, with
arguments named as flags: exit 2 for bad input or options (nothing is run or written), 1 when
a run fails, 130 on Ctrl-C, 143 on SIGTERM, 129 on SIGHUP (each writes the estimate so far).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource
from tqdm import tqdm

import dip
from dip import batch
from dip.cli import signals
from dip.damage import corruptions
from dip.errors import DipError, InputError, Spelled, held_until_start
from dip.estimate import Estimate
from dip.fitting import Progress
from dip.image import DEFAULT_MAX_PIXELS, printable
from dip.record import PICTURES, record_path, steps_said
from dip.report import quiet_matplotlib
from dip.request import Option, RunRequest, request_options, split_arguments
from dip.run import Restoration, Start, beside, restore
from dip.stopping import MAX_BUDGET_GROWTH
from dip.tasks import TASKS, Task

#: exit codes by error class (the first that matches)
EXIT_CODES = ((InputError, 2), (DipError, 1))


def _flags() -> dict[str, str]:
    """Every argument's flag by its library name: the commands' own options (``dip run``'s
    ``shard``, ``devices``), over them the run's, the tasks' and their damage's
    (:class:`Option` s)."""
    found = {p.name: flag for command in cli.commands.values() for p in command.params
             if isinstance(p, click.Option)
             for flag in [next((o for o in p.opts if o.startswith("--")), None)] if flag}
    options = list(request_options())
    for task in TASKS.values():
        options += [*task.options, *(c.option for c in task.corruptions)]
    found.update({o.name: o.cli_flag for o in options})
    return found


def flag_spelling(name: str, value: str | None) -> str:
    """How the command names a library argument: ``overwrite`` -> ``--overwrite``,
    ``device``, ``cpu`` -> ``--device cpu``, a config key -> ``--set key=...``."""
    flag = None if "." in name else _flags().get(name)
    if flag is None:
        return f"--set {name}={value if value is not None else '...'}"
    return flag if value is None else f"{flag} {value}"


def job_spelling(name: str, value: str | None) -> str:
    """How ``dip run`` names a library argument in a job's error: as the batch file's key
    (``'mask_tolerance'``, ``'set: {optim.lr: ...}'``), but ``dip run``'s own options
    (``--overwrite``) as flags."""
    keys = {o.name for task in TASKS.values() for o in batch.job_keys(task).values()}
    return (batch.job_key_spelling if "." in name or name in keys else flag_spelling)(name, value)


#: what click (8.2 and later) raises for a group called without a command; none before
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


class DipGroup(click.Group):
    """A click group that turns every error into one line on stderr (no usage block, no
    traceback) and keeps click's exit codes (2 for usage errors)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except (click.exceptions.Abort, KeyboardInterrupt) as stop:
            # a signal while a finished result was written takes effect once it is written
            # (click turns KeyboardInterrupt into Abort, the interrupt its cause)
            written = getattr(stop, "written", None) or getattr(stop.__cause__, "written", None)
            click.echo("dip: interrupted" + (f" after the finished result was written: "
                                             f"{printable(str(written))}" if written else ""),
                       err=True)
            rv = signals.exit_code()
        except _NO_ARGS as exc:  # a bare "dip": its help, not an error
            click.echo(exc.format_message())
            rv = 0
        except click.ClickException as exc:
            click.echo(f"dip: error: {printable(exc.format_message())}", err=True)
            rv = exc.exit_code
        except DipError as exc:
            click.echo(f"dip: error: {printable(exc.render(flag_spelling))}", err=True)
            rv = next(code for cls, code in EXIT_CODES if isinstance(exc, cls))
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=DipGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(dip.__version__, prog_name="dip")
def cli() -> None:
    """Restore a damaged photo with Deep Image Prior: no training data, no downloaded weights.

    A randomly initialised network is fitted to your one image and stopped before it learns
    the damage. Each restoring command writes the result and, beside it, a JSON record of how
    it was made (RESULT.png.json).
    """


# --- options from their descriptions ----------------------------------------------------------

def click_option(opt: Option) -> click.Option:
    """The click option an :class:`Option` describes."""
    names = [opt.cli_flag] + ([opt.short] if opt.short else []) + [opt.name]
    kwargs: dict[str, Any] = {"help": opt.help, "metavar": opt.metavar}
    if opt.kind == "flag":
        return click.Option(names, is_flag=True, default=bool(opt.default), help=opt.help)
    if opt.choices is not None:
        kwargs["type"] = click.Choice(list(opt.choices))
    elif opt.kind == "path":  # as typed: RunRequest makes it a Path, and refuses a folder's
        kwargs["type"] = str if opt.words else click.Path(dir_okay=False)  # name (out.png/)
    elif opt.kind in ("int", "float"):
        number, bounded = (int, click.IntRange) if opt.kind == "int" else (float, click.FloatRange)
        kwargs["type"] = (bounded(min=opt.minimum, max=opt.maximum, min_open=opt.above)
                          if opt.minimum is not None else number)
    if opt.kind == "list":
        kwargs["multiple"] = True
    if opt.default is not None and opt.kind != "list":
        kwargs.update(default=opt.default, show_default=True)
    return click.Option(names, **kwargs)


def _typed(opt: Option, value: Any) -> Any:
    """A click value as the library takes it (an int choice arrives as its string)."""
    if value is not None and opt.kind == "int" and opt.choices is not None:
        return int(value)
    return value


# --- the restoring commands -------------------------------------------------------------------

QUIET = click.Option(["-q", "--quiet", "quiet"], is_flag=True,
                     help="No progress bar, no summary.")


def task_command(task: Task) -> click.Command:
    """``dip TASK INPUT [options]``: the task's own options, then those every run takes."""
    params = [click.Argument(["input_path"], metavar="INPUT", type=click.Path(path_type=Path))]
    params += [click_option(o) for o in task.options if o.cli]
    params += [click_option(o) for o in request_options() if o.cli] + [QUIET]
    known = {o.name: o for o in [*request_options(), *task.options]}

    def callback(input_path: Path, quiet: bool, **values: Any) -> None:
        # what the user typed: a default is left to the library (a record passed with
        # --config gives its own settings where the user gives none)
        given = click.get_current_context().get_parameter_source
        values = {k: _typed(known[k], v) for k, v in values.items()
                  if v is not None and v != () and given(k) is not ParameterSource.DEFAULT}
        request = RunRequest(task=task.name, **split_arguments(
            list(task.options), {"input": input_path, **values}))
        _run(task, request, quiet)

    return click.Command(task.name, callback=callback, params=params, help=task.help,
                         short_help=task.help.splitlines()[0])


def _run(task: Task, request: RunRequest, quiet: bool) -> None:
    bar = None
    # the PSNR of a run of one fit (its last measured); several fits' are each one's own, not
    # the result's (a SURE fit's under the noisy input's while the result was 9 dB over it),
    # and came and went as the fits took turns: not shown
    fits = 1

    def progress(p: Progress) -> None:
        nonlocal bar
        if bar is None:
            # disable=None: a bar on a terminal, none in a log file (the summary line stays)
            bar = tqdm(total=p.total, desc=task.name, unit="step", dynamic_ncols=True,
                       leave=False, disable=None)
        postfix = {"loss": f"{p.loss:.2e}"}
        if p.psnr is not None and fits == 1:
            postfix["psnr"] = f"{p.psnr:.2f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)

    def on_start(start: Start) -> None:
        nonlocal fits
        fits = len(start.layout.fitted())
        release()  # every check passed: the warnings of the set-up, then the start line
        if not quiet:
            click.echo(f"dip: {start.describe()}", err=True)

    try:
        with held_until_start() as release:
            result = restore(request, progress=None if quiet else progress,
                             keep_on_interrupt=True, on_start=on_start)
    finally:
        if bar is not None:
            bar.close()
    if not quiet:
        click.echo(summary(task, result))
    if result.record["stop_reason"] == "interrupted":
        click.echo("dip: interrupted; wrote the estimate so far", err=True)
        sys.exit(signals.exit_code())


STOP_REASONS = {"auto": "automatic stop", "budget": "step budget reached",
                "interrupted": "interrupted"}


def _how(r: dict) -> str:
    """The summary's line on how the result was made: tiles, restarts, a filter after them."""
    tiles, restarts = r.get("tiles"), r["config"]["optim"]["restarts"]
    noise = r["config"].get("noise") or {}
    gaussian = noise.get("model") == "gaussian"
    turns = (" (the paper's fit and SURE's in turn)"
             if gaussian and noise.get("objective") == "alternate" else "")
    parts = ((["fitted as the mean of its channels, which hold one noise, and its colour put "
               "back"] if r.get("one_noise_gains") else [])
             + ([tiles["why"]] if r.get("members") and tiles else [])
             + ([f"the average of {restarts} restarts{turns}"] if restarts > 1 else []))
    if gaussian and noise.get("wiener") and r["stop_reason"] != "interrupted":
        pilot = ("that average" if restarts > 1 else "the tiles' image" if tiles
                 else "the fit's image")
        parts.append(f"then a Wiener filter of the input with {pilot} as its pilot (BM3D's "
                     f"second step)")
    return "\n  " + "; ".join(parts) if parts else ""


def summary(task: Task, result: Restoration) -> str:
    """What a run did, in a few lines."""
    r = result.record
    reason = STOP_REASONS.get(r["stop_reason"], r["stop_reason"])
    steps, images = steps_said(r)
    line = (f"wrote {printable(str(result.output))} ({steps}, {reason}; {images}; "
            f"{r['seconds']:.1f} s on {r['device']}, preset {r['preset']})")
    m = r.get("metrics")
    if m:
        line += f"\n  PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}"
        if m.get("peak_psnr") is not None:
            line += f" (peak {m['peak_psnr']:.2f} dB at step {m['peak_iteration']})"
        baseline = task.describe(m)
        if baseline:
            line += f"; {baseline}"
    line += _how(r)
    if r.get("estimate"):
        line += f"\n  estimated beforehand: {Estimate(**_estimate_args(r['estimate'])).describe()}"
    line += f"\n  record: {printable(str(record_path(result.output)))}"
    files = beside(result.output)  # as the result's path is said (the record's are absolute)
    for key in PICTURES:
        if key in r:
            line += f"\n  {key}: {printable(str(files[key]))}"
    return line


for _task in TASKS.values():
    cli.add_command(task_command(_task))


# --- dip corrupt --------------------------------------------------------------------------------

def corrupt_command() -> click.Command:
    kinds = corruptions()
    params = [
        click.Argument(["clean"], type=click.Path(path_type=Path)),
        click.Option(["-o", "--output"], type=click.Path(dir_okay=False, path_type=Path),
                     required=True, help="Where to write the corrupted image."),
        *[click_option(c.option) for c in kinds.values()],
        click.Option(["--seed"], type=int, default=0, show_default=True,
                     help="Random seed of the noise or the pixels dropped."),
        click.Option(["--max-pixels"], type=click.IntRange(min=1),
                     default=DEFAULT_MAX_PIXELS, show_default=True,
                     help="Refuse larger images."),
        click.Option(["--overwrite"], is_flag=True, help="Replace existing files."),
    ]

    def callback(clean: Path, output: Path, seed: int, max_pixels: int, overwrite: bool,
                 **damage: Any) -> None:
        damage = {k: _typed(kinds[k].option, v) for k, v in damage.items() if v is not None}
        written = dip.corrupt(clean, output, seed=seed, overwrite=overwrite,
                              max_pixels=max_pixels, **damage)
        for name, value in damage.items():
            note = kinds[name].describe(written, value, clean)
            if note:
                click.echo(f"dip: note: {note}", err=True)
        extra = [str(v) for k, v in written.items() if k != "image" and isinstance(v, Path)]
        click.echo(printable(f"wrote {output}" + "".join(f" and {e}" for e in extra)))

    flags = ", ".join(c.option.cli_flag for c in kinds.values())
    pairs = "".join(f"; {c.option.cli_flag} may follow {kinds[a].option.cli_flag}"
                    for c in kinds.values() for a in c.after if a in kinds)
    return click.Command("corrupt", callback=callback, params=params,
                         help=f"Make a test input from a CLEAN image: one of {flags}{pairs}.",
                         short_help="Make a test input from a clean image.")


cli.add_command(corrupt_command())


# --- dip run --------------------------------------------------------------------------------------

def _job_options_help() -> str:
    common = [o.job_key for o in request_options() if o.batch]
    owners: dict[str, list[str]] = {}  # a key several tasks take is named once (kernel)
    for t in TASKS.values():
        for o in t.options:
            owners.setdefault(o.job_key, []).append(t.name)
    own = [f"{key} ({', '.join(names)})" for key, names in owners.items()]
    return ", ".join(dict.fromkeys(["task", *common, *own]))  # task is also a request field


@cli.command("run", help=f"""Run every job of BATCH.yaml; finished jobs are skipped, a failed
    one does not stop the others. Exit code: 0 all done, 1 some failed, 2 the batch file is
    invalid or names a file that is not there or a glob that finds nothing (no job runs),
    130 Ctrl-C, 143 SIGTERM, 129 SIGHUP (the terminal closed).

    \b
    defaults: {{iters: 3000, seed: 0}}   # any job option but input, for every job
    jobs:
      - task: denoise
        input: photos/*.jpg           # a file, a folder or a glob
        output: results/denoised/     # a folder: {{stem}}_{{task}}.png inside
        set: {{optim.lr: 0.005}}        # config keys, as --set
      - {{task: inpaint, input: page.png, mask: page_mask.png}}
      - {{task: superres, input: small/, factor: 4}}

    Job options: {_job_options_help()}. Paths are relative to the batch file (~ is the home
    folder); outputs default to results/ beside it. Each job's seed is derived from its seed
    (its key, else its set:'s or config file's, else 0) and the input's path, so results do
    not depend on order or sharding; a job that names no seed (nor its defaults, its set: or
    a later config file) and whose config is a result's record runs with the record's seed,
    and so remakes it.
    """)
@click.argument("batch_file", metavar="BATCH.yaml", type=click.Path(path_type=Path))
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Jobs at once, each in its own process (on a CPU they split the cores).")
@click.option("--devices", metavar="LIST",
              help="Devices for the workers, e.g. cuda:0,cuda:1 [default: every visible CUDA "
                   "device, else cpu].")
@click.option("--shard", metavar="K/N",
              help="Run only the K-th of N slices of the jobs, K from 1 to N [default: from "
                   "SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT in a SLURM job array].")
@click.option("--summary", "summary_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the summary (.csv, .json and the contact sheet .png) "
                   "[default: summary.* in the folder the outputs of the whole batch share].")
@click.option("--pack", default="auto", show_default=True, metavar="auto|K",
              help="Fit K jobs with the same settings side by side in one process, each on "
                   "one thread (auto: one per CPU core; up to 16 on a GPU), fewer where their "
                   "estimated memory together is over the budget (max_memory, else the free "
                   "memory less 20 %). With --workers, one job per worker.")
@click.option("--dry-run", is_flag=True,
              help="List the jobs, whether each is done, and what those to do will cost, or "
                   "why one would fail (exit code 1); run none.")
@click.option("--overwrite", is_flag=True,
              help="Redo jobs that are already done, and replace files where a job writes "
                   "that are not dip's, or that were changed since dip wrote them.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bars and no final table (its line of counts stays).")
def run(batch_file: Path, workers: int, devices: str | None, shard: str | None,
        summary_path: Path | None, pack: str, dry_run: bool, overwrite: bool,
        quiet: bool) -> None:
    if pack != "auto" and not (pack.isdecimal() and int(pack) >= 1):
        raise click.BadParameter(f"auto or a number >= 1, not {pack!r}", param_hint="'--pack'")
    jobs = everyone = batch.load_batch(batch_file)
    shard_kn = batch.parse_shard(shard) if shard is not None else batch.shard_from_env()
    if shard_kn:
        jobs = batch.select_shard(jobs, *shard_kn)
    device_list = devices.split(",") if devices is not None else None
    if dry_run:  # the run's refusals of the summary path, as the run would make them
        if jobs:
            batch.check_summary(*batch.summary_paths(everyone, summary_path, shard_kn), jobs)
        with _warnings_as_job_keys():
            _dry_run(jobs, device_list, workers, overwrite, shard_kn)
        return
    if not jobs:
        click.echo(f"shard {shard_kn[0]}/{shard_kn[1]} has no jobs")
        return
    # every shard's summary in the folder the whole batch's outputs share
    csv_path, json_path = batch.summary_paths(everyone, summary_path, shard_kn)
    batch.assign_device(jobs, device_list, workers)  # --devices checked before any folder is made
    batch.prepare_summary(csv_path, json_path, jobs)
    rows, interrupted = _run_batch(jobs, workers, device_list, overwrite, quiet, pack)
    written = _write_summary(rows, csv_path, json_path, everyone if shard_kn else None)
    moved = batch.other_lists(json_path, shard_kn, everyone) if shard_kn else None
    if moved:
        click.echo(f"dip: warning: {printable(moved)}", err=True)
    if not quiet:
        click.echo(_batch_table(rows))
    counts = batch.counts(rows)
    click.echo(f"{counts['done']} done, {counts['skipped']} already done, {counts['failed']} "
               f"failed" + (f", interrupted ({counts['interrupted']} stopped, "
                            f"{counts[batch.PENDING]} not started)" if interrupted else "")
               + (f"; summary: {printable(', '.join(map(str, written)))}" if written else ""))
    if interrupted:
        click.echo("dip: interrupted; the running jobs wrote their estimate so far (marked "
                   "interrupted, redone by the next run)", err=True)
        sys.exit(signals.exit_code())
    if counts["failed"] or not written:
        sys.exit(1)


@contextlib.contextmanager
def _warnings_as_job_keys() -> Iterator[None]:
    """The library's warnings during a batch, an argument named as the job's key
    (``'mask_keeps'``), not as a flag, where they are shown as the command shows them (not
    where a caller records them: a test's, an embedding program's)."""
    with warnings.catch_warnings():
        if warnings.showwarning is show_warning:
            warnings.showwarning = functools.partial(show_warning, spell=job_spelling)
        yield


def _write_summary(rows: list[batch.Row], csv_path: Path, json_path: Path,
                   everyone: list[batch.Job] | None = None) -> list[Path]:
    """The summary's three files, all or none (:func:`dip.batch.write_summary`): the files
    written, or none after one line on why."""
    try:
        batch.write_summary(rows, csv_path, json_path, everyone)
    except (OSError, ValueError, MemoryError) as exc:  # a full disk after the night's work,
        # or ulimit -v (the results are written)
        why = "out of memory" if isinstance(exc, MemoryError) else (
            getattr(exc, "strerror", None) or exc)
        click.echo(printable(f"dip: could not write the summary beside {csv_path}: {why}"),
                   err=True)
        return []
    return batch.summary_files(csv_path, json_path)


def _dry_run(jobs: list[batch.Job], devices: list[str] | None, workers: int, overwrite: bool,
             shard_kn: tuple[int, int] | None) -> None:
    """Each job, whether it is done, and for those to do what they will cost; a job that
    would fail (an unreadable input, a colour it does not hold) says why, and the list goes
    on (exit code 1 after it, as the run would)."""
    seconds, failing = 0.0, 0
    for job in batch.assign_device(jobs, devices, workers):
        state = "done" if not overwrite and batch.is_done(job) else "to do"
        cost = ""
        if state == "to do":
            try:
                start = batch.forecast(job, overwrite)
                seconds += start.estimate.seconds
                cost = f"  {start.describe()}"
            except DipError as exc:
                state, failing = "fails", failing + 1
                cost = f"  {exc.render(job_spelling)}"
        click.echo(printable(f"{state:>5}  {job.task:<8} {job.input} -> {job.output}  "
                             f"[{job.source}]{cost}"))
    total = Estimate(seconds, 0, "").describe().split(",")[0]
    click.echo(f"{len(jobs)} job(s)" + (f" in shard {shard_kn[0]}/{shard_kn[1]}"
                                        if shard_kn else "")
               + (f"; {total} of fitting for those to do, one after another"
                  if seconds else "")
               + (f"; {failing} would fail" if failing else ""))
    if failing:
        sys.exit(1)


def _estimate_args(saved: dict[str, Any]) -> dict[str, Any]:
    return {"seconds": saved["seconds"], "peak_bytes": int(saved["peak_gb"] * 2 ** 30),
            "device": saved["device"]}


def _run_batch(jobs: list[batch.Job], workers: int, devices: list[str] | None,
               overwrite: bool, quiet: bool, pack: str = "auto") -> tuple[list[batch.Row], bool]:
    """Run the jobs with a bar over jobs and one over each image's steps (the jobs' bar alone
    where worker processes run them: their steps are not reported back)."""
    bars: dict[str, tqdm] = {}
    if not quiet:
        bars["jobs"] = tqdm(total=len(jobs), desc="jobs", unit="job", dynamic_ncols=True,
                            disable=None)

    def on_end(job: batch.Job, row: batch.Row) -> None:
        if "image" in bars:
            bars.pop("image").close()
        if row.status == "failed":
            tqdm.write(printable(f"dip: failed: {job.input}: {row.error}"), file=sys.stderr)
        if "jobs" in bars:
            bars["jobs"].update(1)

    def progress(p: Progress) -> None:
        if "image" not in bars:
            bars["image"] = tqdm(total=p.total, desc="  image", unit="step", leave=False,
                                 dynamic_ncols=True, disable=None)
        bars["image"].update(1)

    try:
        with _warnings_as_job_keys():
            rows = batch.run_jobs(jobs, workers=workers, devices=devices, overwrite=overwrite,
                                  on_end=on_end, progress=None if quiet else progress,
                                  spell=job_spelling, pack=pack)
        return rows, False
    except batch.BatchInterrupted as exc:
        return exc.rows, True
    except batch.WorkersNotStarted as exc:  # one line, then the summary of what ran: exit 1
        tqdm.write(f"dip: error: {printable(exc.render(flag_spelling))}", file=sys.stderr)
        return exc.rows, False
    finally:
        for bar in bars.values():
            bar.close()


def _batch_table(rows: list[batch.Row]) -> str:
    lines = [f"{'status':<11} {'seconds':>8} {'steps':>6} {'PSNR':>6}  output"]
    for r in rows:
        if r.status == batch.PENDING:  # counted below, listed in the summary files
            continue
        psnr = f"{r.psnr:.2f}" if r.psnr is not None else "-"
        lines.append(f"{r.status:<11} {r.seconds:>8.1f} {r.steps or '-':>6} {psnr:>6}  "
                     f"{printable(r.output if r.status != 'failed' else r.input)}")
    return "\n".join(lines)


@cli.command()
def info() -> None:
    """Versions, the devices dip can use, the cores and memory a run may use, and the presets
    each task would run."""
    import platform

    import PIL
    import torch

    from dip import config

    click.echo(f"dip {dip.__version__}, torch {torch.__version__}, Python "
               f"{platform.python_version()}, Pillow {PIL.__version__}")
    from dip.estimate import free_bytes
    from dip.layout import MARGIN
    from dip.threads import environment_threads, performance_cores, usable_cores

    free = free_bytes(torch.device("cpu"))
    click.echo(f"cpu: {usable_cores()} of the machine's {os.cpu_count()} cores usable"
               + " (within this process's affinity and its container's or job's limits"
               + (", on its performance cores)" if performance_cores() else ")"))
    if (pinned := environment_threads()) is not None:
        click.echo(f"OMP_NUM_THREADS={pinned}: a fit alone runs on {pinned} thread(s) where "
                   f"perf.threads is auto")
    if free is not None:  # the budget a run plans with by default (perf.max_memory 0)
        click.echo(f"cpu memory: {free / 2 ** 30:.1f} GB free to a run, which plans with "
                   f"{free * (1 - MARGIN) / 2 ** 30:.1f} GB of it ({1 - MARGIN:.0%}; "
                   f"--max-memory sets another budget)")
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        click.echo(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
    if torch.backends.mps.is_available():
        click.echo("mps: Apple Metal")
    auto = config.choose_preset("auto", "auto")
    click.echo(f"presets (auto picks {auto} here):")
    for task in TASKS:
        for name in ("paper", "fast"):
            c = config.resolve(task, overrides=[f"preset={name}"])
            click.echo(f"  {task:<8} {name:<5} {c.net.describe():>12}, lr "
                       f"{c.optim.lr:g}, up to {c.optim.iters} steps"
                       + (f" (up to {round(c.optim.iters * MAX_BUDGET_GROWTH)} for noise "
                          f"under sigma {c.stop.budget_sigma:g})" if c.stop.budget_sigma else "")
                       + f", stop {c.stop.rule}")
    try:
        with quiet_matplotlib():  # (its two lines on a cache folder it cannot make)
            import matplotlib
        plot = f"matplotlib {matplotlib.__version__} (--report works)"
    except ImportError:
        plot = "matplotlib missing: --report needs the [plot] extra"
    click.echo(f"extras: {plot}")


def show_warning(message: Warning | str, category: type, filename: str, lineno: int,
                 file: Any = None, line: str | None = None,
                 spell: Callable[[str, str | None], str] = flag_spelling) -> None:
    """The library's warnings (:class:`dip.image.DipWarning`) as one line each, like errors,
    an argument spelled by ``spell``."""
    text = message.render(spell) if isinstance(message, Spelled) else message
    # through tqdm: a progress bar on the terminal is cleared first and drawn again below
    # (the warning was written onto the bar's line, and a stale bar stayed above it)
    tqdm.write(f"dip: warning: {printable(str(text))}", file=sys.stderr)


def main() -> None:
    signals.install()  # again, for a caller that did not come through dip.cli.entry
    warnings.showwarning = show_warning
    try:
        cli()
    except SystemExit as exc:
        if signals.stopped(exc.code):
            signals.leave(exc.code)
        raise


if __name__ == "__main__":
    main()
