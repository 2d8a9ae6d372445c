"""The ``dip`` command: parse options, call :mod:`dip`, report, choose the exit code.

No numerical code lives here. Every error the user can fix is one line on stderr:
exit 2 for bad input or options (nothing is run or written), 1 when a run fails, 130 on Ctrl-C.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

import dip
from dip import image
from dip.errors import DipError
from dip.fit import Progress
from dip.runner import Restoration, record_path


class DipGroup(click.Group):
    """A click group that turns every error into one line on stderr (no usage block, no
    traceback) and keeps click's exit codes (2 for usage errors)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Abort:
            click.echo("dip: interrupted", err=True)
            rv = 130
        except click.ClickException as exc:
            click.echo(f"dip: error: {exc.format_message()}", err=True)
            rv = exc.exit_code
        except DipError as exc:
            click.echo(f"dip: error: {exc}", err=True)
            rv = exc.exit_code
        except KeyboardInterrupt:
            click.echo("dip: interrupted", err=True)
            rv = 130
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
                     help="Result path [default: {stem}_{task}.png in the current folder]."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="YAML file of config keys, over the task's preset."),
        click.option("--set", "overrides", multiple=True, metavar="KEY.PATH=VALUE",
                     help="Override one config key, e.g. --set optim.lr=0.005 (repeatable)."),
        click.option("--iters", type=click.IntRange(min=1),
                     help="Upper bound on optimisation steps [default: the preset's budget]."),
        click.option("--stop", type=click.Choice(["auto", "fixed"]),
                     help="auto: stop when the outputs' running variance stops falling "
                          "(no clean image needed); fixed: run all --iters steps "
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
        click.option("--max-pixels", type=click.IntRange(min=1),
                     default=image.DEFAULT_MAX_PIXELS, show_default=True,
                     help="Refuse larger images."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary."),
        click.option("--overwrite", is_flag=True, help="Replace an existing result."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _run(task: str, input_path: Path, *, output, config_file, overrides, iters, stop, preset,
         seed, device, reference, save_every, max_pixels, quiet, overwrite, **task_args) -> None:
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
        result = dip.restore(task, input_path, output=output, config=config_file,
                             overrides=overrides, iters=iters, stop=stop, seed=seed,
                             device=device, preset=preset,
                             reference=reference, save_every=save_every, overwrite=overwrite,
                             max_pixels=max_pixels, progress=None if quiet else progress,
                             **task_args)
    finally:
        if bar is not None:
            bar.close()
    if not quiet:
        click.echo(_summary(result))
    if result.record["stop_reason"] == "interrupted":
        click.echo("dip: interrupted; wrote the estimate so far", err=True)
        sys.exit(130)


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
    return line


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@run_options
def denoise(input_path: Path, **options) -> None:
    """Remove noise from INPUT."""
    _run("denoise", input_path, **options)


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--mask", type=click.Path(path_type=Path), required=True,
              help="Image of the same size: white (non-zero) = pixels to fill, black = keep "
                   "(the convention of OpenCV, scikit-image and paint programs).")
@click.option("--mask-keeps", is_flag=True,
              help="Read the mask the other way round: white = known pixels (the convention "
                   "of the Deep Image Prior paper's code).")
@run_options
def inpaint(input_path: Path, mask: Path, mask_keeps: bool, **options) -> None:
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


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
