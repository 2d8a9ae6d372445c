"""Pictures of what happened: a run's before/after report with its curves (matplotlib, the
optional ``[plot]`` extra), the animated GIF of a fit, and a batch's contact sheet (Pillow).

Every file is written atomically, like results.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from dip import image
from dip.errors import InputError
from dip.record import fitted_members, steps_said

PLOT_HINT = ("{arg:report} draws with matplotlib, which is not installed: pip install "
             "matplotlib (in this repository: make demo, or pip install -e \".[plot]\" in "
             "its .venv)")


@contextlib.contextmanager
def quiet_matplotlib() -> Iterator[None]:
    """Inside, matplotlib logs errors only: not each cache folder it could not make (an
    unwritable ``XDG_CACHE_HOME``) nor the temporary one it made instead, which it logs on
    import and again when the first figure needs its fonts."""
    log = logging.getLogger("matplotlib")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def require_matplotlib() -> None:
    """Raise :class:`InputError` with the install hint unless matplotlib can be imported, or
    with matplotlib's own reason where it is installed but cannot start (no writable folder
    for its cache, not even a temporary one); its warnings on the way are not shown
    (:func:`quiet_matplotlib`): the error, or nothing, says it."""
    try:
        with quiet_matplotlib():
            import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(PLOT_HINT) from None
    except OSError as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"{{arg:report}} draws with matplotlib, which could not start: "
                         f"{reason}") from None


def shown_name(path: Any) -> str:
    """The file name of ``path`` as a picture shows it: bytes of the name that are not UTF-8
    (which Python keeps as surrogate escapes, and no font can draw) spelled as backslash
    escapes, ``in\\xff.png``; a name that is UTF-8 as it is."""
    text = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
    name = Path(text).name
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that no byte became
        raw = name.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def detail_box(pixels: torch.Tensor, fraction: float = 0.25) -> tuple[int, int, int]:
    """The square of side ``fraction`` x the shorter side with the most local detail (gradient
    energy) — where a restoration is easiest to judge.

    Shape:
        - Input: ``(1, C, H, W)``
        - Output: ``(top, left, side)``
    """
    h, w = pixels.shape[-2:]
    side = max(4, int(min(h, w) * fraction))
    grey = pixels.float().mean(1, keepdim=True)
    energy = (grey[..., :, 1:] - grey[..., :, :-1]).abs()[..., :-1, :] + \
        (grey[..., 1:, :] - grey[..., :-1, :]).abs()[..., :, :-1]
    if min(energy.shape[-2:]) < side:
        return 0, 0, min(h, w)
    stride = max(1, side // 4)
    pooled = F.avg_pool2d(energy, side, stride=stride)[0, 0]
    index = int(pooled.argmax())
    top, left = divmod(index, pooled.shape[-1])
    return top * stride, left * stride, side


def _rgb(pixels: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` in [0, 1] -> ``(H, W, 3)`` for display."""
    a = pixels.detach().float().cpu().clamp(0, 1)[0].permute(1, 2, 0).numpy()
    return np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a


def render_report(inputs: image.Picture, result: image.Picture, record: dict[str, Any],
                  reference: torch.Tensor | None = None,
                  known: torch.Tensor | None = None,
                  headline: tuple[str, float] | None = None) -> bytes:
    """The report of one run: input, result (and reference) at the same scale, each with its
    most detailed region magnified; under them the loss, the stop rule's variance and (with a
    reference) the PSNR over the steps, the returned step and the peak marked.

    Args:
        inputs: the damaged picture (holes shown black where ``known`` is 0).
        result: the restored picture; ``record``: its JSON record (history, steps).
        reference: the clean image ``(1, C, H, W)``, or None.
        headline: the task's own score of the result, e.g. ``("Y-PSNR", 30.1)``.

    Returns:
        The PNG file's bytes (the caller writes them with the result).
    """
    # matplotlib's object API: no pyplot, so no global backend or figure state is touched
    from matplotlib.figure import Figure

    size = result.pixels.shape[-2:]
    shown = inputs.pixels if known is None else inputs.pixels * known
    if shown.shape[-2:] != size:  # super-resolution: the small input at the result's scale
        shown = F.interpolate(shown, size=size, mode="nearest")
    panels = [("input", shown), ("result", result.pixels)]
    if reference is not None:
        panels.append(("reference", reference))
    history = record.get("history", {})
    # with several fits the curves are the first one's (the record's history); said on a
    # line of its own, as the PSNR's title and this ran into each other
    first = ("" if len(fitted_members(record)) < 2 else
             "\n(the first tile's)" if record.get("tiles") else "\n(the first restart's)")
    curves = [(f"loss{first}", history.get("loss", []), True)]
    if history.get("variance"):
        curves.append((f"stop rule: running variance{first}", history["variance"], True))
    if history.get("psnr"):
        curves.append((f"PSNR (dB) against the reference{first}", history["psnr"], False))

    columns = max(len(panels), len(curves))
    fig = Figure(figsize=(4 * columns, 11), dpi=100)
    grid = fig.add_gridspec(3, columns, height_ratios=[4, 4, 3])
    steps, images = steps_said(record)
    result_label = f"result ({images.removeprefix('image ').removeprefix('images ')})"
    if headline is not None:
        result_label += f", {headline[0]} {headline[1]:.2f} dB"
    _draw_panels(fig, grid, panels, detail_box(result.pixels), {"result": result_label})
    _draw_curves(fig, grid, curves, history.get("step", []), record.get("returned_iteration"),
                 (record.get("metrics") or {}).get("peak_iteration"))
    fig.suptitle(f"dip {record.get('task')}: {shown_name(record.get('input'))} — "
                 f"{steps}, {record.get('stop_reason')}, "
                 f"preset {record.get('preset')}, {record.get('seconds', 0):.0f} s on "
                 f"{record.get('device')}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={image.MARKER_KEY: "report"})
    return buf.getvalue()


def _draw_panels(fig: Any, grid: Any, panels: list[tuple[str, torch.Tensor]],
                 box: tuple[int, int, int], labels: dict[str, str]) -> None:
    """The pictures in the top row, their magnified detail (``box``) in the second."""
    from matplotlib.patches import Rectangle

    top, left, side = box
    for i, (title, pixels) in enumerate(panels):
        shown = _rgb(pixels)
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(shown, interpolation="nearest")
        ax.add_patch(Rectangle((left, top), side, side, fill=False, color="red", lw=1.5))
        ax.set_title(labels.get(title, title))
        ax.axis("off")
        zoom = fig.add_subplot(grid[1, i])
        zoom.imshow(shown[top:top + side, left:left + side], interpolation="nearest")
        zoom.set_title(f"{title}: detail x{shown.shape[1] / side:.0f}")
        zoom.axis("off")


def _draw_curves(fig: Any, grid: Any, curves: list[tuple[str, list, bool]], steps: list,
                 returned: int | None, peak: int | None) -> None:
    """The loss, variance and PSNR curves in the bottom row, returned step and peak marked."""
    for i, (title, values, log) in enumerate(curves):
        ax = fig.add_subplot(grid[2, i])
        xs = steps[-len(values):] if values else []  # the variance starts once its window is full
        # a curve of one or two samples (a run of few steps) is drawn as points too: a line
        # of one point draws nothing
        ax.plot(xs, values, lw=1, marker="o" if len(values) < 3 else None, ms=3)
        if log:
            ax.set_yscale("log")
        if returned is not None:
            ax.axvline(returned, color="green", ls="--", lw=1, label=f"returned: {returned}")
        if peak is not None and title.startswith("PSNR"):
            ax.axvline(peak, color="red", ls=":", lw=1, label=f"peak: {peak}")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(loc="best", fontsize=8)


#: a GIF keeps at most this many frames (evenly spaced) and this many pixels a side
GIF_FRAMES, GIF_SIDE = 120, 512


def _display(pixels: torch.Tensor, side: int | None = None) -> Image.Image:
    """8-bit RGB for viewing, from any picture (16-bit grey included), at most ``side``."""
    img = image._to_pil(pixels, 8).convert("RGB")
    if side is not None:
        img.thumbnail((side, side))
    return img


def render_gif(frames: Sequence[str | Path], last: image.Picture,
               milliseconds: int = 80) -> bytes:
    """An animated GIF of the fit: the snapshot files in order (spread over all of them), then
    the returned image, held a second, unless it is the last snapshot; ``GIF_FRAMES`` frames
    at most in all. Returns its bytes."""
    shown = GIF_FRAMES - 1  # and the returned image
    if len(frames) > shown:
        frames = [frames[round(i * (len(frames) - 1) / (shown - 1))] for i in range(shown)]
    pictures = [_display(image.load_image(f, max_pixels=2**62, what="snapshot").pixels, GIF_SIDE)
                for f in frames]
    final = _display(last.pixels, GIF_SIDE)
    if not pictures or pictures[-1].tobytes() != final.tobytes():
        pictures.append(final)  # (GIF would merge it into an identical last snapshot)
    durations = [milliseconds] * (len(pictures) - 1) + [max(1000, milliseconds)]
    buf = io.BytesIO()
    pictures[0].save(buf, format="GIF", save_all=True, append_images=pictures[1:], loop=0,
                     duration=durations, disposal=1, comment=image.gif_mark("gif"))
    return buf.getvalue()


THUMB = 128


#: a contact sheet shows at most this many jobs (the summary files list them all)
SHEET_JOBS = 400


def _thumb(path: str | Path | None) -> Image.Image:
    tile = Image.new("RGB", (THUMB, THUMB), (235, 235, 235))
    if path is None:
        return tile
    try:
        img = _display(image.load_image(path).pixels, THUMB)
    except (InputError, OSError, ValueError):
        return tile  # a failed job's missing or unreadable file: an empty tile
    tile.paste(img, ((THUMB - img.width) // 2, (THUMB - img.height) // 2))
    return tile


def contact_sheet(rows: Sequence[Any], columns: int = 4) -> Image.Image:
    """A batch at a glance: for each job its input and result side by side, with its name,
    status, PSNR (when a reference was given) and seconds under them.

    ``rows`` are :class:`dip.batch.Row` s (``input``, ``output``, ``status``, ``psnr``,
    ``seconds``, ``error``); the first ``SHEET_JOBS`` are shown.
    """
    rows = list(rows)[:SHEET_JOBS]
    font = ImageFont.load_default()
    cell_w, cell_h, pad = 2 * THUMB + 12, THUMB + 40, 8
    n_rows = max(1, -(-len(rows) // columns))
    sheet = Image.new("RGB", (columns * cell_w + pad, n_rows * cell_h + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        x, y = pad + (i % columns) * cell_w, pad + (i // columns) * cell_h
        sheet.paste(_thumb(row.input), (x, y))
        done = row.status in ("done", "skipped", "interrupted")
        sheet.paste(_thumb(row.output if done else None), (x + THUMB + 4, y))
        name = shown_name(row.input)
        figures = [row.status]
        if row.psnr is not None:
            figures.append(f"{row.psnr:.2f} dB")
        if row.seconds:
            figures.append(f"{row.seconds:.0f} s")
        colour = ((0, 0, 0) if done else (120, 120, 120) if row.status == "pending"
                  else (200, 0, 0))  # failed in red; pending: the next run does it
        if not isinstance(font, ImageFont.FreeTypeFont):  # Pillow's bitmap font: Latin-1 only
            name = name.encode("latin-1", "backslashreplace").decode("latin-1")
        draw.text((x, y + THUMB + 3), name[:40], fill=(0, 0, 0), font=font)
        draw.text((x, y + THUMB + 17), ", ".join(figures)[:40], fill=colour, font=font)
    return sheet

