"""The ``dip`` command: parse options, call :mod:`dip`, report, choose the exit code.

No numerical code lives here. Every error the user can fix is one line on stderr:
exit 2 for bad input or options (nothing is run or written), 1 when a run fails, 130 on Ctrl-C,
143 on SIGTERM (both write the estimate so far).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from tqdm import tqdm

import dip
from dip import batch, image
from dip import report as reports
from dip.cli import signals
from dip.errors import DipError
from dip.fitting import Progress
from dip.runner import FORMATS, Restoration, record_path


class DipGroup(click.Group):
    """A click group that turns every error into one line on stderr (no usage block, no
    traceback) and keeps click's exit codes (2 for usage errors)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("dip: interrupted", err=True)
            rv = signals.exit_code()
        except click.ClickException as exc:
            click.echo(f"dip: error: {exc.format_message()}", err=True)
            rv = exc.exit_code
        except DipError as exc:
            click.echo(f"dip: error: {exc}", err=True)
            rv = exc.exit_code
        except KeyboardInterrupt:
            click.echo("dip: interrupted", err=True)
            rv = signals.exit_code()
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group(cls=DipGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(dip.__version__, prog_name="dip")
def cli() -> None:
    """Restore a damaged photo with Deep Image Prior: no training data, no downloaded weights.

    A randomly initialised network is fitted to your one image and stopped before it learns
    the damage. Each command writes the result and, beside it, a JSON record of how it was
    made (RESULT.png.json).
    """


def run_options(func):
    """Options shared by every restoring command."""
    options = [
        click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Result path; its extension picks the format [default: "
                          "{stem}_{task}.png in the current folder]."),
        click.option("--format", "fmt", type=click.Choice(list(FORMATS)),
                     help="The result's format when -o is not given [default: png]. 16 bits "
                          "per channel are kept in PNG (and grey TIFF)."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="YAML file of config keys, over the task's preset."),
        click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                     help="Override one config key, e.g. --set optim.lr=0.005 (repeatable)."),
        click.option("--iters", type=click.IntRange(min=1),
                     help="Upper bound on optimisation steps [default: the preset's budget]."),
        click.option("--stop", type=click.Choice(["auto", "fixed"]),
                     help="auto: stop when the outputs' running variance stops falling "
                          "(no clean image needed; when denoising, not before the result "
                          "is as close to the input as the noise); fixed: run all --iters "
                          "steps "
                          "[default: the preset's: auto, but fixed for fast inpainting]."),
        click.option("--preset", type=click.Choice(["auto", "paper", "fast"]),
                     help="paper: the paper's settings; fast: dip's cheaper settings for CPUs "
                          "(measured in benchmarks/README.md); auto: fast on a CPU, paper on "
                          "a GPU [default: auto]."),
        click.option("--seed", type=int, help="Random seed [default: 0]."),
        click.option("--device", help="auto | cpu | cuda | cuda:N | mps [default: auto]."),
        click.option("--reference", type=click.Path(dir_okay=False, path_type=Path),
                     help="Clean image: report PSNR and SSIM (never used to fit)."),
        click.option("--save-every", type=click.IntRange(min=1), metavar="N",
                     help="Keep a snapshot every N steps in {stem}_{task}_steps/."),
        click.option("--report", is_flag=True,
                     help="Also write {stem}_{task}_report.png: input, result (and reference) "
                          "with a magnified detail, and the loss, stop-rule and PSNR curves "
                          "(needs matplotlib: the [plot] extra)."),
        click.option("--gif", is_flag=True,
                     help="Also write {stem}_{task}.gif, the fit as an animation of the "
                          "snapshots in {stem}_{task}_steps/ (every --save-every steps, else "
                          "every budget/50 steps: about 50 frames over a whole run)."),
        click.option("--max-pixels", type=click.IntRange(min=1),
                     default=image.DEFAULT_MAX_PIXELS, show_default=True,
                     help="Refuse larger images."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary."),
        click.option("--overwrite", is_flag=True, help="Replace an existing result."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(task: str, input_path: Path, *, output, fmt, config_file, overrides, iters, stop,
         preset, seed, device, reference, save_every, report, gif, max_pixels, quiet,
         overwrite, **task_args) -> None:
    bar = None

    def progress(p: Progress) -> None:
        nonlocal bar
        if bar is None:
            # disable=None: a bar on a terminal, none in a log file (the summary line stays)
            bar = tqdm(total=p.total, desc=task, unit="step", dynamic_ncols=True, leave=False,
                       disable=None)
        postfix = {"loss": f"{p.loss:.2e}"}
        if p.psnr is not None:
            postfix["psnr"] = f"{p.psnr:.2f}"
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)

    try:
        result = dip.restore(task, input_path, output=output, fmt=fmt, config=config_file,
                             overrides=overrides, iters=iters, stop=stop, seed=seed,
                             device=device, preset=preset,
                             reference=reference, save_every=save_every, overwrite=overwrite,
                             report=report, gif=gif,
                             max_pixels=max_pixels, progress=None if quiet else progress,
                             **task_args)
    finally:
        if bar is not None:
            bar.close()
    if not quiet:
        click.echo(_summary(result))
    if result.record["stop_reason"] == "interrupted":
        click.echo("dip: interrupted; wrote the estimate so far", err=True)
        sys.exit(signals.exit_code())


def _summary(result: Restoration) -> str:
    r = result.record
    reason = {"auto": "automatic stop", "budget": "step budget reached",
              "interrupted": "interrupted"}.get(r["stop_reason"], r["stop_reason"])
    line = (f"wrote {result.output} ({r['iterations']} steps, {reason}; image from step "
            f"{r['returned_iteration']}; {r['seconds']:.1f} s on {r['device']}, preset "
            f"{r['preset']})")
    m = r.get("metrics")
    if m:
        line += f"\n  PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}"
        if m.get("peak_psnr") is not None:
            line += f" (peak {m['peak_psnr']:.2f} dB at step {m['peak_iteration']})"
        if "input_psnr" in m:
            line += f"; noisy input {m['input_psnr']:.2f} dB"
        if "mean_fill_psnr" in m:
            line += f"; holes filled with the mean colour {m['mean_fill_psnr']:.2f} dB"
        if "psnr_y" in m:
            line += (f"; bicubic {m['bicubic_psnr']:.2f} dB\n  Y-channel PSNR (the paper's "
                     f"protocol) {m['psnr_y']:.2f} dB; bicubic {m['bicubic_psnr_y']:.2f} dB")
    line += f"\n  record: {record_path(result.output)}"
    for key in ("report", "gif"):
        if key in r:
            line += f"\n  {key}: {r[key]}"
    return line


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@run_options
def denoise(input_path: Path, **options) -> None:
    """Remove noise from INPUT."""
    _run("denoise", input_path, **options)


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--mask", required=True, metavar="FILE|alpha",
              help="Image of the same size: white (non-zero) = pixels to fill, black = keep "
                   "(the convention of OpenCV, scikit-image and paint programs). 'alpha': "
                   "fill the input's transparent pixels (a file named alpha: ./alpha).")
@click.option("--mask-keeps", is_flag=True,
              help="Read the mask the other way round: white = known pixels (the convention "
                   "of the Deep Image Prior paper's code).")
@run_options
def inpaint(input_path: Path, mask: str, mask_keeps: bool, **options) -> None:
    """Fill the holes of INPUT marked by --mask."""
    _run("inpaint", input_path, mask=mask, mask_keeps=mask_keeps, **options)


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--factor", type=click.Choice(["2", "4", "8"]),
              help="The result is FACTOR times larger in each dimension [default: 4, or the "
                   "config's factor].")
@run_options
def superres(input_path: Path, factor: str | None, **options) -> None:
    """Enlarge INPUT FACTOR times (no ground truth needed)."""
    _run("superres", input_path, factor=int(factor) if factor else None, **options)


@cli.command()
@click.argument("clean", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the corrupted image.")
@click.option("--noise", "sigma", type=click.FloatRange(min=0), metavar="SIGMA",
              help="Add Gaussian noise of std SIGMA (0-255 units, e.g. 25).")
@click.option("--drop-pixels", type=click.FloatRange(0, 1, max_open=True), metavar="P",
              help="Remove a fraction P of the pixels; also writes OUTPUT_mask.png "
                   "(white = missing, ready for `dip inpaint --mask`).")
@click.option("--downscale", type=click.Choice(["2", "4", "8"]), metavar="K",
              help="Shrink K times with Lanczos (the paper's way to make SR inputs).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing files.")
def corrupt(clean: Path, output: Path, sigma: float | None, drop_pixels: float | None,
            downscale: str | None, seed: int, overwrite: bool) -> None:
    """Make a test input from a CLEAN image: exactly one of --noise, --drop-pixels, --downscale."""
    written = dip.corrupt(clean, output, noise=sigma, drop_pixels=drop_pixels,
                          downscale=int(downscale) if downscale else None, seed=seed,
                          overwrite=overwrite)
    if "cropped_to" in written:
        h, w = written["cropped_to"]
        click.echo(f"note: cropped {clean} to {w}x{h} (a multiple of {downscale}) before "
                   f"downscaling; compare results with that crop", err=True)
    click.echo(f"wrote {output}" + (f" and {written['mask']}" if "mask" in written else ""))


@cli.command("run")
@click.argument("batch_file", metavar="BATCH.yaml", type=click.Path(path_type=Path))
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Jobs at once, each in its own process (on a CPU they split the cores).")
@click.option("--devices", metavar="LIST",
              help="Devices for the workers, e.g. cuda:0,cuda:1 [default: every visible CUDA "
                   "device, else cpu].")
@click.option("--shard", metavar="K/N",
              help="Run only the K-th of N slices of the jobs [default: from "
                   "SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT in a SLURM job array].")
@click.option("--summary", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the summary (.csv and .json) [default: summary.csv and "
                   "summary.json in the folder the outputs share].")
@click.option("--dry-run", is_flag=True, help="List the jobs and whether each is done; run none.")
@click.option("--overwrite", is_flag=True, help="Redo jobs that are already done.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def run(batch_file: Path, workers: int, devices: str | None, shard: str | None,
        summary: Path | None, dry_run: bool, overwrite: bool, quiet: bool) -> None:
    """Run every job of BATCH.yaml; finished jobs are skipped, a failed one does not stop the
    others. Exit code: 0 all done, 1 some failed, 2 the batch file is invalid, 130 Ctrl-C,
    143 SIGTERM.

    \b
    defaults: {iters: 3000, seed: 0}   # any job option, for every job
    jobs:
      - task: denoise
        input: photos/*.jpg           # a file, a folder or a glob
        output: results/denoised/     # a folder: {stem}_{task}.png inside
        set: {optim.lr: 0.005}        # config keys, as --set
      - {task: inpaint, input: page.png, mask: page_mask.png}
      - {task: superres, input: small/, factor: 4}

    Job options: task, input, output, format, mask, mask_keeps, factor, reference, config,
    set, iters, stop, preset, seed, device, save_every, max_pixels, report, gif. Paths are
    relative to the batch file; outputs default to results/ beside it. Each job's seed is derived from the seed and the
    input's path, so results do not depend on order or sharding.
    """
    jobs = batch.load_batch(batch_file)
    shard_kn = batch.parse_shard(shard) if shard else batch.shard_from_env()
    if shard_kn:
        jobs = batch.select_shard(jobs, *shard_kn)
    device_list = devices.split(",") if devices else None
    if dry_run:
        for job in batch.assign_device(jobs, device_list, workers):
            state = "done" if not overwrite and batch.is_done(job) else "to do"
            click.echo(f"{state:>5}  {job.task:<8} {job.input} -> {job.output}  [{job.source}]")
        click.echo(f"{len(jobs)} job(s)" + (f" in shard {shard_kn[0]}/{shard_kn[1]}"
                                            if shard_kn else ""))
        return
    if not jobs:
        click.echo(f"shard {shard_kn[0]}/{shard_kn[1]} has no jobs")
        return
    csv_path, json_path = batch.summary_paths(jobs, summary, shard_kn)
    batch.prepare_summary(csv_path)

    bars: dict[str, tqdm] = {}
    if not quiet:
        bars["jobs"] = tqdm(total=len(jobs), desc="jobs", unit="job", dynamic_ncols=True,
                            disable=None)

    def on_end(job: batch.Job, row: batch.Row) -> None:
        if "image" in bars:
            bars.pop("image").close()
        if row.status == "failed":
            tqdm.write(f"dip: failed: {job.input}: {row.error}", file=sys.stderr)
        if "jobs" in bars:
            bars["jobs"].update(1)

    def progress(p: Progress) -> None:
        if "image" not in bars:
            bars["image"] = tqdm(total=p.total, desc="  image", unit="step", leave=False,
                                 dynamic_ncols=True, disable=None)
        bars["image"].update(1)

    interrupted = False
    try:
        rows = batch.run_jobs(jobs, workers=workers, devices=device_list, overwrite=overwrite,
                              on_end=on_end, progress=None if quiet else progress)
    except batch.BatchInterrupted as exc:
        rows, interrupted = exc.rows, True
    finally:
        for bar in bars.values():
            bar.close()
    batch.write_summary(rows, csv_path, json_path)
    sheet = csv_path.with_suffix(".png")
    try:
        reports.write_contact_sheet(sheet, rows)
    except OSError as exc:
        click.echo(f"dip: could not write the contact sheet {sheet}: {exc.strerror or exc}",
                   err=True)
    if not quiet:
        click.echo(_batch_table(rows))
    counts = batch.counts(rows)
    click.echo(f"{counts['done']} done, {counts['skipped']} already done, {counts['failed']} "
               f"failed" + (", interrupted" if interrupted else "")
               + f"; summary: {csv_path}, {json_path}, {sheet}")
    if interrupted:
        click.echo("dip: interrupted; the running jobs wrote their estimate so far (marked "
                   "interrupted, redone by the next run)", err=True)
        sys.exit(signals.exit_code())
    if counts["failed"]:
        sys.exit(1)


def _batch_table(rows: list[batch.Row]) -> str:
    lines = [f"{'status':<11} {'seconds':>8} {'steps':>6} {'PSNR':>6}  output"]
    for r in rows:
        psnr = f"{r.psnr:.2f}" if r.psnr is not None else "-"
        lines.append(f"{r.status:<11} {r.seconds:>8.1f} {r.steps or '-':>6} {psnr:>6}  "
                     f"{r.output if r.status != 'failed' else r.input}")
    return "\n".join(lines)


@cli.command()
def info() -> None:
    """Versions, the devices dip can use, threads, and the presets each task would run."""
    import platform

    import PIL
    import torch

    from dip import config

    click.echo(f"dip {dip.__version__}, torch {torch.__version__}, Python "
               f"{platform.python_version()}, Pillow {PIL.__version__}")
    click.echo(f"cpu: {torch.get_num_threads()} torch threads ({os.cpu_count()} cores)")
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        p = torch.cuda.get_device_properties(i)
        click.echo(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
    if torch.backends.mps.is_available():
        click.echo("mps: Apple Metal")
    auto = config.choose_preset("auto", "auto")
    click.echo(f"presets (auto picks {auto} here):")
    for task in config.TASKS:
        for name in ("paper", "fast"):
            c = config.resolve(task, overrides=[f"preset={name}"])
            click.echo(f"  {task:<8} {name:<5} {c.net.channels_down[0]:>3} channels, lr "
                       f"{c.optim.lr:g}, up to {c.optim.iters} steps, stop {c.stop.rule}")
    try:
        import matplotlib
        plot = f"matplotlib {matplotlib.__version__} (--report works)"
    except ImportError:
        plot = "matplotlib missing: --report needs the [plot] extra"
    click.echo(f"extras: {plot}")


def main() -> None:
    signals.install()  # again, for a caller that did not come through dip.cli.entry
    cli()


if __name__ == "__main__":
    main()
