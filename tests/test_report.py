"""What a user sees: the report's layout, the GIF's frames, the batch contact sheet, dip info,
and the install hint when matplotlib is missing."""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageFont

from dip import batch, estimate, image
from dip.cli.main import cli
from dip.layout import MARGIN
from dip.report import contact_sheet, detail_box, shown_name

from conftest import save, synthetic

TINY = ["--set", "net.channels_down=[8,8,8,8,8]", "--set", "net.channels_up=[8,8,8,8,8]",
        "--device", "cpu", "-q", "--stop", "fixed"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_a_namesakes_report_is_not_cleared_as_stale(tmp_path: Path, noisy_png: Path) -> None:
    """``q.png`` and ``q.jpg`` share their pictures' names. ``-o q.jpg --report --overwrite``
    takes ``q_report.png`` over from ``q.png``; a later ``-o q.png --overwrite`` without a
    report deleted it as q.png's stale one, and q.jpg's record named a file that was gone."""
    pytest.importorskip("matplotlib")
    png, jpg = tmp_path / "q.png", tmp_path / "q.jpg"
    for out, extra in ((png, ["--report"]), (jpg, ["--report", "--overwrite"]),
                       (png, ["--overwrite"])):
        result = invoke("denoise", noisy_png, "-o", out, "--iters", 2, *extra, *TINY)
        assert result.exit_code == 0, result.output
    report = tmp_path / "q_report.png"
    assert report.is_file()
    assert json.loads((tmp_path / "q.jpg.json").read_text())["report"] == str(report.resolve())
    # the result's own stale report still goes
    assert invoke("denoise", noisy_png, "-o", jpg, "--iters", 2, "--overwrite",
                  *TINY).exit_code == 0
    assert not report.exists()


@pytest.mark.parametrize("with_reference, columns", [(True, 3), (False, 2)])
def test_report_is_an_image_of_the_expected_layout(tmp_path: Path, noisy_png: Path,
                                                  clean_png: Path, with_reference: bool,
                                                  columns: int) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "o.png"
    extra = ["--reference", clean_png] if with_reference else []
    result = invoke("denoise", noisy_png, "-o", out, "--iters", 5, "--report", *extra, *TINY)
    assert result.exit_code == 0, result.output
    report = tmp_path / "o_report.png"
    # panels input | result (| reference) over their details, curves under them: 4 x 11
    # inches a column at 100 dpi
    assert Image.open(report).size == (400 * columns, 1100)
    assert json.loads((tmp_path / "o.png.json").read_text())["report"] == str(report)


def test_report_without_matplotlib_says_how_to_get_it(tmp_path: Path, noisy_png: Path,
                                                      monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = invoke("denoise", noisy_png, "-o", tmp_path / "o.png", "--iters", 2, "--report",
                    *TINY)
    assert result.exit_code == 2
    assert "pip install" in result.output and "[plot]" in result.output
    assert not list(tmp_path.glob("o*"))


def test_gif_has_one_frame_per_snapshot(tmp_path: Path, noisy_png: Path) -> None:
    out = tmp_path / "o.png"
    result = invoke("denoise", noisy_png, "-o", out, "--iters", 6, "--save-every", 2, "--gif",
                    *TINY)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "o_steps").glob("step_*.png"))) == 3
    gif = Image.open(tmp_path / "o.gif")
    # steps 2, 4, 6, then the result: the fits' average at step 6 after denoising's Wiener
    # filter (dip.wiener), which the snapshots skip
    assert gif.n_frames == 4 and gif.size == (32, 32)
    plain = invoke("denoise", noisy_png, "-o", out, "--iters", 6, "--save-every", 2, "--gif",
                   "--overwrite", "--set", "noise.wiener=false", *TINY)
    assert plain.exit_code == 0, plain.output
    assert Image.open(tmp_path / "o.gif").n_frames == 3  # step 6 is the result


def test_a_gif_of_many_snapshots_has_at_most_120_frames_first_and_result_included(
        tmp_path: Path) -> None:
    from dip import report

    frames = []
    for i in range(130):
        frames.append(tmp_path / f"step_{i:06d}.png")
        Image.new("L", (8, 8), i).save(frames[-1])
    result = image.Picture(torch.full((1, 1, 8, 8), 250 / 255))
    gif = Image.open(io.BytesIO(report.render_gif(frames, result)))
    assert gif.n_frames == report.GIF_FRAMES == 120  # was 121: 120 snapshots and the result
    assert gif.convert("L").getpixel((0, 0)) == 0
    gif.seek(gif.n_frames - 1)
    assert gif.convert("L").getpixel((0, 0)) == 250


def test_gif_without_save_every_takes_50_frames_over_the_budget(tmp_path: Path,
                                                                noisy_png: Path) -> None:
    assert invoke("denoise", noisy_png, "-o", tmp_path / "o.png", "--iters", 100, "--gif",
                  *TINY).exit_code == 0
    assert Image.open(tmp_path / "o.gif").n_frames == 51  # and the filtered result


def test_superres_report_shows_the_input_at_the_results_scale(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    small = save(synthetic(16), tmp_path / "small.png")
    assert invoke("superres", small, "--factor", 2, "-o", tmp_path / "big.png", "--iters", 3,
                  "--report", *TINY).exit_code == 0
    assert Image.open(tmp_path / "big_report.png").size == (800, 1100)


def test_detail_box_finds_the_textured_corner() -> None:
    import torch

    img = torch.zeros(1, 1, 64, 64)
    img[..., 40:, 40:] = torch.rand(1, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    top, left, side = detail_box(img)
    assert side == 16 and top >= 32 and left >= 32


def test_info_says_nothing_of_a_cache_folder_matplotlib_cannot_make(tmp_path: Path) -> None:
    """Its two lines (mkdir failed, a temporary cache made instead) came before dip's; a run
    with --report already keeps them quiet."""
    pytest.importorskip("matplotlib")
    import subprocess

    from conftest import dip_command

    (tmp_path / "a file").write_text("")
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "a file" / "matplotlib")}
    result = subprocess.run([*dip_command(), "info"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert "(--report works)" in result.stdout


def test_info_lists_versions_devices_and_presets(monkeypatch) -> None:
    from dip import cgroups

    monkeypatch.setattr(cgroups, "cpu_quota", lambda: 1)  # a container's --cpus 1
    monkeypatch.setattr(cgroups, "memory_headroom", lambda: 2 ** 29)  # 0.5 GB left to it
    result = invoke("info")
    assert result.exit_code == 0
    free = estimate.free_bytes(torch.device("cpu"))
    assert free is not None and free < 2 ** 29 + 4 * 2 ** 30  # the headroom and the process
    # the budget a run plans with, as its estimate says "fits in" (it said the free memory);
    # read back, not matched: the process's own memory moves between two readings
    said = re.search(r"cpu memory: ([0-9.]+) GB free to a run, which plans with ([0-9.]+) GB",
                     result.output)
    assert said is not None, result.output
    # both rounded to 0.1 GB: 0.05 + 0.8 x 0.05 apart at most
    assert float(said[2]) == pytest.approx(float(said[1]) * (1 - MARGIN), abs=0.091)
    for words in ("dip 0.", "torch", "cpu: 1 of the machine's", f"{free / 2 ** 30:.1f} GB ",
                  "denoise", "paper", "fast", "auto picks",
                  "--max-memory sets another budget"):  # the command's flag, not a config key
        assert words in result.output


def test_a_batch_job_can_ask_for_a_report(tmp_path: Path, noisy_png: Path) -> None:
    pytest.importorskip("matplotlib")
    (tmp_path / "b.yaml").write_text(
        "defaults: {iters: 3, device: cpu, stop: fixed, set: {net.channels_down: [8,8,8,8,8], "
        "net.channels_up: [8,8,8,8,8]}}\n"
        f"jobs:\n  - {{task: denoise, input: {noisy_png.name}, output: out/, report: true}}\n")
    assert invoke("run", tmp_path / "b.yaml", "-q").exit_code == 0
    assert Image.open(tmp_path / "out" / "noisy_denoise_report.png").size == (800, 1100)
    (tmp_path / "out" / "noisy_denoise_report.png").unlink()
    assert "1 done" in invoke("run", tmp_path / "b.yaml", "-q").output  # redone: no report


def test_overwrite_starts_the_gif_from_fresh_snapshots(tmp_path: Path, noisy_png: Path) -> None:
    out = tmp_path / "o.png"
    assert invoke("denoise", noisy_png, "-o", out, "--iters", 8, "--save-every", 2, "--gif",
                  *TINY).exit_code == 0
    assert invoke("denoise", noisy_png, "-o", out, "--iters", 4, "--save-every", 2, "--gif",
                  "--overwrite", *TINY).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "o_steps").iterdir()) == [
        "step_000002.png", "step_000004.png"]
    assert Image.open(tmp_path / "o.gif").n_frames == 3  # and the filtered result


def test_16_bit_grey_frames_are_not_white(tmp_path: Path) -> None:
    import numpy as np

    noise = np.random.default_rng(0).normal(0, 2000, (32, 32))  # a clean ramp: nothing to do
    ramp = np.clip(np.linspace(0, 65535, 32) + noise, 0, 65535).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert invoke("denoise", tmp_path / "deep.png", "-o", tmp_path / "o.png", "--iters", 4,
                  "--save-every", 2, "--gif", *TINY).exit_code == 0
    gif = Image.open(tmp_path / "o.gif")
    frame = np.asarray(gif.convert("L"))
    assert frame.mean() < 200 and frame.std() > 5  # a picture, not a white sheet


def test_gif_must_not_replace_the_result(tmp_path: Path, noisy_png: Path) -> None:
    result = invoke("denoise", noisy_png, "-o", tmp_path / "o.gif", "--iters", 2, "--gif", *TINY)
    assert result.exit_code == 2 and "own path" in result.output
    assert not list(tmp_path.glob("o*"))


def test_a_file_name_that_is_not_utf8_is_shown_with_its_byte_escaped() -> None:
    # Python keeps the byte 0xff of a file name as the surrogate \udcff, which no font draws
    assert shown_name("/photos/in\udcff.png") == "in\\xff.png"
    assert shown_name(b"/photos/in\xff.png") == "in\\xff.png"
    assert shown_name(Path("caf\u00e9.png")) == "caf\u00e9.png"  # UTF-8 names as they are


def test_a_report_is_drawn_for_an_input_whose_name_is_not_utf8(tmp_path: Path,
                                                               noisy_png: Path) -> None:
    pytest.importorskip("matplotlib")
    source = Path(os.fsdecode(bytes(tmp_path) + b"/in\xff.png"))
    noisy_png.rename(source)
    out = source.with_name(source.stem + "_out.png")
    result = invoke("denoise", source, "-o", out, "--iters", 2, "--report", *TINY)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (32, 32)
    assert Image.open(out.with_name(out.stem + "_report.png")).size == (800, 1100)


@pytest.mark.parametrize("name", [b"in\xff.png", "照片.png".encode()])
def test_the_contact_sheet_names_a_file_whose_name_is_not_utf8(tmp_path: Path, monkeypatch,
                                                               name: bytes) -> None:
    # Pillow's own bitmap font (a Pillow without FreeType) draws Latin-1 only: a name that
    # is not UTF-8, or is but not Latin-1, failed the summary
    monkeypatch.setattr(ImageFont, "load_default", ImageFont.load_default_imagefont)
    source = save(synthetic(32), Path(os.fsdecode(bytes(tmp_path) + b"/" + name)))
    row = batch.Row("b.yaml", "denoise", str(source), str(tmp_path / "gone.png"), "failed")
    assert contact_sheet([row]).size == (4 * 268 + 8, 168 + 8)


def test_an_unwritable_cache_folder_costs_the_report_no_warnings(tmp_path: Path) -> None:
    # XDG_CACHE_HOME that cannot be made: matplotlib logged the folder it could not make and
    # the temporary one it made instead, a paragraph each, when the report drew its fonts
    import subprocess

    from conftest import dip_command

    pytest.importorskip("matplotlib")
    src = save(synthetic(24), tmp_path / "in.png")
    env = {k: v for k, v in os.environ.items() if k != "MPLCONFIGDIR"}
    env["XDG_CACHE_HOME"] = "/dev/null/cache"
    done = subprocess.run(dip_command() + ["denoise", str(src), "-o", str(tmp_path / "o.png"),
                                           "--iters", "2", "--restarts", "1", "--report"],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0 and (tmp_path / "o_report.png").is_file(), done.stderr
    assert done.stderr.startswith("dip: about ") and len(done.stderr.splitlines()) == 1, \
        done.stderr


def test_report_when_matplotlib_cannot_start_is_one_line(tmp_path: Path, noisy_png: Path,
                                                         monkeypatch, caplog) -> None:
    """Installed, but with no writable folder for its cache (not even a temporary one)
    matplotlib's import raises OSError, after logging each folder it could not make."""
    import importlib.abc
    import logging

    class NoCacheFolder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "matplotlib":
                logging.getLogger("matplotlib").warning("mkdir -p failed for path /home/x")
                raise OSError("Matplotlib requires access to a writable cache directory, but "
                              "there was an issue with the default path (/home/x), and a "
                              "temporary directory could not be created; set the "
                              "MPLCONFIGDIR environment variable to a writable directory")

    monkeypatch.delitem(sys.modules, "matplotlib", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoCacheFolder(), *sys.meta_path])
    out = tmp_path / "o.png"
    result = invoke("denoise", noisy_png, "-o", out, "--iters", 2, "--report", *TINY)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert result.output.startswith("dip: error: --report draws with matplotlib, which could "
                                    "not start: Matplotlib requires access to a writable cache")
    assert "MPLCONFIGDIR" in result.output and "Traceback" not in result.output
    # nor its warnings on stderr (here pytest's log capture takes what would be printed)
    assert not [r for r in caplog.records if r.name.startswith("matplotlib")]
    assert not list(tmp_path.glob("o*"))


def test_a_curve_of_one_sample_is_drawn_as_a_point() -> None:
    """A run of no more steps than output.metrics_every has one sample a curve: drawn as a
    line alone, the loss and PSNR axes were empty."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from dip import report

    fig = Figure()
    grid = fig.add_gridspec(3, 2)
    report._draw_curves(fig, grid, [("loss", [0.5], True), ("PSNR (dB)", [20.0, 21.0, 22.0],
                                                               False)], [10, 20, 30], 10, None)
    one, three = (ax.lines[0] for ax in fig.axes)
    assert one.get_marker() == "o" and one.get_xydata().tolist() == [[30.0, 0.5]]
    assert three.get_marker() in (None, "None", "")
