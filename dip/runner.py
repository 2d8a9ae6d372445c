"""From files to a restored file: one call per task, the same for the CLI and Python users.

:func:`restore` reads the input (and mask / reference), builds the operator, the code and the
generator from the resolved config, runs :func:`dip.fitting.fit`, and writes the image and its JSON
record atomically. It raises :class:`dip.errors.DipError` for anything the user can fix, before
any file is written.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dip import image, interrupts, metrics, operators
from dip import report as reports
from dip.config import TASKS, RunConfig, resolve
from dip.engine import resolve_perf
from dip.errors import ConfigError, InputError, RunError
from dip.version import __version__
from dip.fitting import FitResult, Progress, fit
from dip.inputs import make_code
from dip.nets import build_net
from dip.stopping import build_stop_rule


@dataclass
class Problem:
    """What the fit needs to know about a task: ``A``, ``y`` and the output's shape."""

    operator: torch.nn.Module
    observation: torch.Tensor
    out_size: tuple[int, int]


def _denoise(picture: image.Picture, cfg: RunConfig, known: torch.Tensor | None) -> Problem:
    return Problem(operators.Identity(), picture.pixels, picture.size)


def _inpaint(picture: image.Picture, cfg: RunConfig, known: torch.Tensor | None) -> Problem:
    assert known is not None
    op = operators.Mask(known)
    return Problem(op, op(picture.pixels), picture.size)


def _superres(picture: image.Picture, cfg: RunConfig, known: torch.Tensor | None) -> Problem:
    h, w = picture.size
    return Problem(operators.Downsample(cfg.factor), picture.pixels,
                   (h * cfg.factor, w * cfg.factor))


PROBLEMS: dict[str, Callable[[image.Picture, RunConfig, torch.Tensor | None], Problem]] = {
    "denoise": _denoise,
    "inpaint": _inpaint,
    "superres": _superres,
}


@dataclass
class Restoration:
    """The result of :func:`restore`.

    Attributes:
        picture: the restored image (pixels ``(1, C, H, W)`` on the CPU, alpha re-attached).
        record: the JSON record written beside the output (also returned when not written).
        output: where the image was written, or None.
        fit: the raw :class:`dip.fitting.FitResult` (history, peak).
    """

    picture: image.Picture
    record: dict[str, Any]
    output: Path | None
    fit: FitResult


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps`` -> a device that exists here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise InputError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {name} requested but CUDA is not available here; "
                             f"use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InputError(f"device {name} does not exist: {torch.cuda.device_count()} CUDA "
                             f"device(s) visible")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("device mps requested but Metal is not available here; "
                         "use --device cpu")
    return device


#: ``--format`` names -> file extensions
FORMATS = {"png": ".png", "jpg": ".jpg", "tif": ".tif", "bmp": ".bmp", "webp": ".webp"}
#: ``mask=MASK_FROM_ALPHA``: the holes are the input's transparent pixels
MASK_FROM_ALPHA = "alpha"


def mask_record(mask: str | os.PathLike | None) -> str | None:
    """How a record names a mask: ``alpha``, the file's absolute path, or None."""
    if mask is None:
        return None
    return MASK_FROM_ALPHA if mask == MASK_FROM_ALPHA else str(Path(mask).resolve())


def default_output(input_path: str | os.PathLike, task: str, fmt: str = "png") -> Path:
    """``{stem}_{task}.{fmt}`` in the current folder."""
    return Path(f"{Path(input_path).stem}_{task}{FORMATS[fmt]}")


def output_path(input_path: Path, task: str, output: str | os.PathLike | None,
                fmt: str | None) -> Path:
    """The result's path: ``output``, or the default name in the format ``fmt`` asks for."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    if output is None:
        return default_output(input_path, task, fmt or "png")
    output = Path(output)
    if fmt is not None and image.output_format(output) != image.output_format(
            Path("x" + FORMATS[fmt])):
        raise InputError(f"--format {fmt} disagrees with the output's extension "
                         f"'{output.suffix}' ({output}); give one of the two")
    return output


def record_path(output: Path) -> Path:
    """The JSON record sits at the output path + ``.json``."""
    return output.with_name(output.name + ".json")


def beside(output: Path) -> dict[str, Path]:
    """What a run may write beside its result: the report, the GIF, the snapshot folder."""
    return {"report": output.with_name(f"{output.stem}_report.png"),
            "gif": output.with_name(f"{output.stem}.gif"),
            "steps": output.with_name(f"{output.stem}_steps")}


def prepare_outputs(outputs: list[Path], reads: list[Path], overwrite: bool) -> None:
    """Check, before any work, that ``outputs`` can be written: a known image or record
    extension, a writable folder (created if missing), not one of the files the run ``reads``,
    and not already there unless ``overwrite``.

    Raises:
        InputError: with the path and what to do.
    """
    read = {p.resolve() for p in reads if p.exists()}
    for path in outputs:
        if path.suffix.lower() != ".json":
            image.output_format(path)
        if path.resolve() in read:
            raise InputError(f"output {path} is one of the run's input files; choose another "
                             f"output name")
        if path.exists() and not overwrite:
            raise InputError(f"{path} already exists; use --overwrite to replace it")
        if path.is_dir():
            raise InputError(f"output {path} is a folder; give a file name such as "
                             f"{path / 'result.png'}")
        writable_folder(path.parent, f"output {path}")


def writable_folder(folder: Path, what: str) -> None:
    """Create ``folder`` if missing and check it can be written, before any work.

    Raises:
        InputError: naming ``what`` the folder is for.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder for {what}: {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK):
        raise InputError(f"cannot write to the folder {folder} ({what})")


def write_outputs(files: list[tuple[Path, Callable]]) -> None:
    """Write a result and its record together, atomically; a failure is one clear error."""
    try:
        image.write_all_atomic(files)
    except OSError as exc:
        raise RunError(f"cannot write {files[0][0]}: {exc.strerror or exc}") from None


def resolve_config(task: str, *, config: str | os.PathLike | dict | None = None,
                   overrides: list[str] | tuple = (), iters: int | None = None,
                   stop: str | None = None, seed: int | None = None, device: str | None = None,
                   factor: int | None = None, save_every: int | None = None,
                   preset: str | None = None) -> RunConfig:
    """The config :func:`restore` runs with these arguments (the one its record holds)."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    files = [config] if isinstance(config, (str, os.PathLike)) else []
    base = [config] if isinstance(config, dict) else []
    cfg = resolve(task, files, overrides, base=base, explicit={
        "optim.iters": iters, "stop.rule": stop, "seed": seed, "device": device,
        "factor": factor, "output.save_every": save_every, "preset": preset})
    build_stop_rule(cfg.stop)  # the stop.* settings checked now, before any job runs
    if cfg.stop.noise_floor > 0 and task != "denoise":
        # the floor compares the estimate with the input itself: only denoising's input is
        # the image plus noise
        raise ConfigError(f"config key 'stop.noise_floor' applies to denoise only, not {task} "
                          f"(set it to 0)")
    return cfg


def restore(task: str, input: str | os.PathLike, *, output: str | os.PathLike | None = None,
            mask: str | os.PathLike | None = None, mask_keeps: bool = False,
            factor: int | None = None, config: str | os.PathLike | dict | None = None,
            overrides: list[str] | tuple = (), iters: int | None = None,
            stop: str | None = None, seed: int | None = None, device: str | None = None,
            preset: str | None = None,
            reference: str | os.PathLike | None = None, save_every: int | None = None,
            overwrite: bool = False, write: bool = True, fmt: str | None = None,
            report: bool = False, gif: bool = False,
            max_pixels: int = image.DEFAULT_MAX_PIXELS,
            progress: Callable[[Progress], None] | None = None) -> Restoration:
    """Restore one image file with Deep Image Prior.

    Args:
        task: ``denoise`` | ``inpaint`` | ``superres``.
        input: the damaged image (any format Pillow reads).
        output: where to write the result (default ``{stem}_{task}.png`` in the current
            folder); its JSON record goes to ``output + '.json'``.
        fmt: ``png`` | ``jpg`` | ``tif`` | ``bmp`` | ``webp``: the default output's format
            (with ``output`` given, its extension must agree).
        mask: inpainting only: an image file, white (non-zero) = pixels to fill, unless
            ``mask_keeps``; or ``"alpha"``: the input's transparent pixels (alpha < 50 %) are
            the holes, and the result is written opaque.
        factor: superres only: 2, 4 or 8.
        config: a YAML file, or a mapping of (dotted or nested) config keys.
        overrides: ``key.path=value`` strings, as ``--set``.
        iters, stop, seed, device, save_every, preset: as the CLI flags (None: from the
            config).
        reference: the clean image, to report PSNR/SSIM (never used to fit).
        overwrite: replace an existing output.
        write: False runs without writing anything (the result is returned).
        report: also write ``{output stem}_report.png``: input, result (and reference) with a
            magnified detail, and the loss / variance / PSNR curves (needs matplotlib).
        gif: also write ``{output stem}.gif``, the fit as an animation of its snapshots
            (every ``save_every`` steps, else every budget/50 steps; the snapshots stay in
            ``{output stem}_steps/``).
        progress: called after every step with a :class:`dip.fitting.Progress`.

    Raises:
        InputError, ConfigError: before anything runs or is written.
        RunError: the fit failed; nothing is written.
    """
    started = time.perf_counter()
    cfg = resolve_config(task, config=config, overrides=overrides, iters=iters, stop=stop,
                         seed=seed, device=device, factor=factor, save_every=save_every,
                         preset=preset)
    stop_rule = build_stop_rule(cfg.stop)
    if task == "inpaint" and mask is None:
        raise InputError("inpaint needs a mask (--mask FILE)")
    if task != "inpaint" and mask is not None:
        raise InputError(f"--mask only applies to inpaint, not {task}")

    input_path = Path(input)
    # The checks that need no pixels first: a wrong flag costs no decode.
    out_path = output_path(input_path, task, output, fmt)
    from_alpha = mask == MASK_FROM_ALPHA
    files = beside(out_path)
    snapshots = files["steps"] if write else None
    report_file = files["report"] if write and report else None
    gif_file = files["gif"] if write and gif else None
    every = cfg.output.save_every or (max(1, cfg.optim.iters // 50) if gif_file else 0)
    if report_file is not None:
        reports.require_matplotlib()
    if gif_file is not None and gif_file == out_path:
        raise InputError(f"--gif would write {gif_file}, the result's own path; give the "
                         f"result another format")
    picture = image.load_image(input_path, max_pixels=max_pixels)
    if write:
        reads = [input_path] + [Path(p) for p in (None if from_alpha else mask, reference)
                                if p is not None]
        extras = [p for p in (report_file, gif_file) if p is not None]
        prepare_outputs([out_path, record_path(out_path), *extras], reads, overwrite)
        if every and snapshots.exists() and any(snapshots.iterdir()):
            if not overwrite:
                raise InputError(f"snapshot folder {snapshots} is not empty; use --overwrite "
                                 f"to replace its files")
            for old in snapshots.glob("step_*.png"):  # not frames of this run's GIF
                old.unlink()

    known = None
    if from_alpha:
        if picture.alpha is None:
            raise InputError(f"--mask alpha: {input_path} has no alpha channel (transparency) "
                             f"to take the holes from")
        known = (picture.alpha >= 0.5).float()
        if not known.any():
            raise InputError(f"--mask alpha: every pixel of {input_path} is transparent; "
                             f"nothing to restore from")
        # The holes get filled: the result is opaque, not the input's alpha.
        picture = image.Picture(picture.pixels, None, picture.bits)
    elif mask is not None:
        known = image.load_mask(mask, picture.size, keeps=mask_keeps, max_pixels=max_pixels)
    problem = PROBLEMS[task](picture, cfg, known)
    ref = None
    if reference is not None:
        ref = image.load_image(reference, max_pixels=max_pixels * cfg.factor ** 2,
                               what="reference").pixels
        if ref.shape[-2:] != problem.out_size:
            raise InputError(
                f"reference {reference} is {ref.shape[-1]}x{ref.shape[-2]} but the result will "
                f"be {problem.out_size[1]}x{problem.out_size[0]}")
        if ref.shape[1] != picture.pixels.shape[1]:
            raise InputError(f"reference {reference} has {ref.shape[1]} channel(s), the input "
                             f"{picture.pixels.shape[1]}; both must be grey or both colour")

    out_pixels = problem.out_size[0] * problem.out_size[1]
    if out_pixels > max_pixels:
        raise InputError(f"the result would be {problem.out_size[1]}x{problem.out_size[0]} = "
                         f"{out_pixels / 1e6:.1f} MP, above the limit of {max_pixels / 1e6:.1f} "
                         f"MP (raise it with --max-pixels)")

    dev = resolve_device(cfg.device)
    perf = resolve_perf(cfg.perf, dev, constant_lr=cfg.optim.schedule == "constant")
    observation = problem.observation.to(dev)
    operator = problem.operator.to(dev)
    ref_dev = ref.to(dev) if ref is not None else None
    channels = picture.pixels.shape[1]

    # Every random draw comes from the run's seed: the weights through a forked global RNG (so
    # the caller's RNG state is untouched), the code and its perturbations from a generator.
    cuda_devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(cfg.seed)
        net = build_net(cfg.net.name, cfg.input.channels, channels,
                        channels_down=cfg.net.channels_down, channels_up=cfg.net.channels_up,
                        channels_skip=cfg.net.channels_skip, kernel_down=cfg.net.kernel_down,
                        kernel_up=cfg.net.kernel_up, kernel_skip=cfg.net.kernel_skip,
                        upsample=cfg.net.upsample, downsample=cfg.net.downsample,
                        padding=cfg.net.padding, activation=cfg.net.activation,
                        need1x1_up=cfg.net.need1x1_up)
    net = net.to(dev)
    generator = torch.Generator(device=dev).manual_seed(cfg.seed)
    code = make_code(cfg.input.kind, cfg.input.channels, problem.out_size, cfg.input.scale,
                     generator)

    metric = None
    if ref_dev is not None:
        def metric(estimate: torch.Tensor) -> float:
            return metrics.psnr(estimate, ref_dev)

    alpha = picture.alpha
    if alpha is not None and task == "superres":
        alpha = image.resize(alpha, problem.out_size, "bicubic")

    def on_step(p: Progress) -> None:
        if snapshots is not None and every and p.step % every == 0:
            snap = image.Picture(p.estimate.detach().float().cpu(), alpha, picture.bits)
            try:
                image.save_image(snap, snapshots / f"step_{p.step:06d}.png")
            except OSError as exc:
                raise RunError(f"cannot write a snapshot into {snapshots}: "
                               f"{exc.strerror or exc}") from None
        if progress is not None:
            progress(p)

    try:
        result = fit(net, code, operator, observation, iters=cfg.optim.iters, lr=cfg.optim.lr,
                     average=cfg.optim.average, perturb_std=cfg.input.perturb_std,
                     guard=cfg.optim.guard, generator=generator,
                     stop_rule=stop_rule, metric=metric,
                     metrics_every=cfg.output.metrics_every, callback=on_step, perf=perf,
                     schedule=cfg.optim.schedule, lr_end=cfg.optim.lr_end)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
        if not _out_of_memory(exc):
            raise
        advice = ["a smaller image"]
        if dev.type != "cpu":
            advice.append("--device cpu")
        if cfg.preset != "fast":
            advice.append("the narrower network of --preset fast")
        raise RunError(f"out of memory on {dev} for a {problem.out_size[1]}x"
                       f"{problem.out_size[0]} result; try {' or '.join(advice)}") from None

    # The result is complete (or the estimate an interruption keeps): a signal now takes
    # effect once it is written, not half-way through drawing or writing it.
    with interrupts.deferred():
        pixels = result.image.float().cpu()
        restored = image.Picture(pixels, alpha, picture.bits)

        record: dict[str, Any] = {
            "task": task,
            "input": str(input_path.resolve()),
            "output": str(out_path.resolve()) if write else None,
            "mask": mask_record(mask),
            "mask_keeps": mask_keeps,
            "reference": str(Path(reference).resolve()) if reference is not None else None,
            "iterations": result.iterations,
            "returned_iteration": result.returned_iteration,
            "stop_reason": result.stop_reason,
            # the noise level behind the stop rule's noise floor (0-255 units; given or
            # estimated; under 0.5 the floor was off)
            "noise_sigma": (round(stop_rule.sigma * 255, 3)
                            if getattr(stop_rule, "noise_floor", 0) else None),
            "seconds": round(time.perf_counter() - started, 3),
            "device": str(dev),
            "preset": cfg.preset,
            "perf": perf.describe(),
            "seed": cfg.seed,
            "size": {"input": list(picture.size), "output": list(problem.out_size)},
            "versions": {"dip": __version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "config": cfg.to_dict(),
            "guard_restores": result.history.get("restores", []),
            # sampled every output.metrics_every steps: the curves behind the numbers above
            "history": {k: [round(v, 6) if isinstance(v, float) else v for v in values]
                        for k, values in result.history.items() if k != "restores"},
        }
        if ref is not None:
            record["metrics"] = _metrics(task, pixels, ref, picture, known, cfg, result)

        if write:
            pictures = []
            for key, extra in (("report", report_file), ("gif", gif_file)):
                if extra is not None:
                    record[key] = str(extra.resolve())
            try:  # drawn before anything is written: all the files, or none
                if report_file is not None:
                    data = reports.render_report(picture, restored, record, ref, known)
                    pictures.append((report_file, lambda f, d=data: f.write(d)))
                if gif_file is not None:
                    data = reports.render_gif(sorted(snapshots.glob("step_*.png")), restored)
                    pictures.append((gif_file, lambda f, d=data: f.write(d)))
            except Exception as exc:  # matplotlib's and Pillow's failures are many kinds
                raise RunError(f"could not draw the pictures of {out_path}: "
                               f"{type(exc).__name__}: {exc}") from None
            text = (json.dumps(record, indent=2) + "\n").encode()
            write_outputs([(out_path, image.image_writer(restored, out_path)),
                           (record_path(out_path), lambda f: f.write(text)), *pictures])
        return Restoration(restored, record, out_path if write else None, result)


def _out_of_memory(exc: BaseException) -> bool:
    """CUDA raises OutOfMemoryError; the CPU and MPS allocators raise a RuntimeError."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text


def corrupt(clean: str | os.PathLike, output: str | os.PathLike, *, noise: float | None = None,
            drop_pixels: float | None = None, downscale: int | None = None, seed: int = 0,
            overwrite: bool = False) -> dict[str, Path]:
    """Make a test input from a clean image: exactly one of ``noise`` (Gaussian, sigma in 0-255
    units), ``drop_pixels`` (fraction of pixels removed; also writes ``{stem}_mask.png``, white
    = missing, ready for ``inpaint``) or ``downscale`` (2, 4 or 8, Lanczos as the paper; the
    clean image is first cropped to a multiple of the factor).

    Returns:
        ``{"image": path}`` plus ``"mask"`` for drop_pixels and ``"cropped_to"`` (H, W) when
        downscaling had to crop.
    """
    chosen = [name for name, v in (("noise", noise), ("drop_pixels", drop_pixels),
                                   ("downscale", downscale)) if v is not None]
    if len(chosen) != 1:
        raise InputError("give exactly one of --noise, --drop-pixels, --downscale"
                         + (f" (got {', '.join(chosen)})" if chosen else ""))
    clean, output = Path(clean), Path(output)
    picture = image.load_image(clean)
    mask_path = output.with_name(f"{output.stem}_mask.png") if drop_pixels is not None else None
    outputs = [output] + ([mask_path] if mask_path else [])
    prepare_outputs(outputs, [clean], overwrite)

    generator = torch.Generator().manual_seed(seed)
    files = []
    written: dict[str, Any] = {"image": output}
    if noise is not None:
        result = picture.with_pixels(operators.add_noise(picture.pixels, noise, generator))
    elif drop_pixels is not None:
        pixels, known = operators.drop_pixels(picture.pixels, drop_pixels, generator)
        result = picture.with_pixels(pixels)
        files.append((mask_path, image.image_writer(image.Picture(1 - known), mask_path)))
        written["mask"] = mask_path
    else:
        if downscale not in (2, 4, 8):
            raise InputError(f"downscale factor must be 2, 4 or 8, got {downscale}")
        h, w = operators.valid_superres_size(*picture.size, downscale)
        if h == 0 or w == 0:
            raise InputError(f"{clean} is too small to downscale {downscale} times")
        small = (h // downscale, w // downscale)
        alpha = picture.alpha
        result = image.Picture(
            image.resize(picture.pixels[..., :h, :w], small, "lanczos"),
            None if alpha is None else image.resize(alpha[..., :h, :w], small, "lanczos"),
            picture.bits)
        if (h, w) != picture.size:
            written["cropped_to"] = (h, w)
    write_outputs([(output, image.image_writer(result, output))] + files)
    return written


def _metrics(task: str, pixels: torch.Tensor, ref: torch.Tensor, picture: image.Picture,
             known: torch.Tensor | None, cfg: RunConfig, result: FitResult) -> dict[str, Any]:
    """PSNR/SSIM of the result, the peak seen during the run, and each task's naive baseline
    (the noisy input; holes filled with the mean known colour; bicubic upscaling)."""
    out: dict[str, Any] = {
        "psnr": round(metrics.psnr(pixels, ref), 4),
        "ssim": round(metrics.ssim(pixels, ref), 4),
        "peak_psnr": None if result.peak_psnr is None else round(result.peak_psnr, 4),
        "peak_iteration": result.peak_iteration,
    }
    if task == "denoise":
        out["input_psnr"] = round(metrics.psnr(picture.pixels, ref), 4)
    if task == "inpaint" and known is not None:
        mean = (picture.pixels * known).sum((2, 3), keepdim=True) / known.sum()
        filled = picture.pixels * known + mean * (1 - known)
        out["mean_fill_psnr"] = round(metrics.psnr(filled, ref), 4)
    if task == "superres":
        # The paper's SR protocol: Y channel, `factor` pixels cropped at each border.
        out["psnr_y"] = round(metrics.psnr_y(pixels, ref, cfg.factor), 4)
        bicubic = image.resize(picture.pixels, tuple(ref.shape[-2:]), "bicubic")
        out["bicubic_psnr"] = round(metrics.psnr(bicubic, ref), 4)
        out["bicubic_psnr_y"] = round(metrics.psnr_y(bicubic, ref, cfg.factor), 4)
    return out
