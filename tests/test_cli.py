"""The real click app through CliRunner: files written, records complete, mistakes answered
with one line and a non-zero exit code."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dip import image
from dip.cli.main import cli

from conftest import save, synthetic, wait_until

FAST = ["--iters", "3", "--device", "cpu", "-q"]
RECORD_FIELDS = {"task", "input", "output", "iterations", "stop_reason", "seconds", "device",
                 "seed", "versions", "config", "returned_iteration"}


def invoke(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _one_line_error(result, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def _mask(tmp_path: Path, size=(32, 32)) -> Path:
    m = np.zeros(size, dtype=np.uint8)
    m[8:16, 10:20] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    return tmp_path / "mask.png"


def test_denoise_writes_image_and_record(tmp_path: Path, noisy_png: Path) -> None:
    out = tmp_path / "out" / "result.png"  # missing folders are created
    result = invoke("denoise", noisy_png, "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (32, 32)
    record = json.loads(out.with_name("result.png.json").read_text())
    assert RECORD_FIELDS <= record.keys()
    assert record["task"] == "denoise" and record["iterations"] == 3
    assert record["stop_reason"] == "budget" and record["device"] == "cpu"
    assert record["config"]["optim"]["iters"] == 3
    assert {"dip", "torch"} <= record["versions"].keys()


def test_default_output_name_is_stem_task_in_the_current_folder(tmp_path: Path,
                                                                noisy_png: Path,
                                                                monkeypatch) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    assert invoke("denoise", noisy_png, *FAST).exit_code == 0
    assert (work / "noisy_denoise.png").exists() and (work / "noisy_denoise.png.json").exists()


SMALL_NET = ["--set", "net.channels_down=[16,16,16]", "--set", "net.channels_up=[16,16,16]",
             "--set", "net.channels_skip=[4,4,4]", "--stop", "fixed", "--device", "cpu", "-q"]


def test_inpaint_fills_the_white_pixels_and_mask_keeps_flips_it(tmp_path: Path) -> None:
    img = synthetic(32)
    img[..., 8:16, 10:20] = 0  # a black hole, marked white in the mask
    holed = save(img, tmp_path / "holed.png")
    mask = _mask(tmp_path)
    hole = np.asarray(Image.open(mask)) > 0

    result = invoke("inpaint", holed, "--mask", mask, "-o", tmp_path / "a.png", "--iters", 150,
                    *SMALL_NET)
    assert result.exit_code == 0, result.output
    filled = np.asarray(Image.open(tmp_path / "a.png"), dtype=float)
    assert filled[hole].mean() > 100  # filled from its surroundings, not kept black
    record = json.loads((tmp_path / "a.png.json").read_text())
    assert record["task"] == "inpaint" and record["mask"].endswith("mask.png")

    # Read the other way round, the black rectangle is the only known region: it stays black.
    result = invoke("inpaint", holed, "--mask", mask, "--mask-keeps", "-o", tmp_path / "b.png",
                    "--iters", 150, *SMALL_NET)
    assert result.exit_code == 0, result.output
    kept = np.asarray(Image.open(tmp_path / "b.png"), dtype=float)
    assert kept[hole].mean() < 50  # near black (0), far from the filled run's ~145


def test_dip_alone_prints_its_help_not_an_error() -> None:
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 0 and "error" not in result.output
    assert result.output.startswith("Usage: ") and "denoise" in result.output
    assert result.output == CliRunner().invoke(cli, ["--help"]).output


def test_inpaint_help_states_the_mask_convention() -> None:
    text = " ".join(invoke("inpaint", "--help").output.split())
    assert "white (50 % grey or lighter) = pixels to fill" in text
    assert "--mask-keeps" in text and "white = known pixels" in text


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_help_never_cuts_a_flag_at_its_hyphen(command: str) -> None:
    # click wraps at hyphens: inpaint's help read "from --mask-" / "color" at 80 columns
    text = CliRunner().invoke(cli, [command, "--help"], terminal_width=80).output
    assert not [line for line in text.splitlines() if re.search(r"--[\w-]*-$", line)], text


@pytest.mark.parametrize("factor", ["2", "4", "8"])
def test_superres_output_is_factor_times_larger(tmp_path: Path, factor: str) -> None:
    small = save(synthetic(8), tmp_path / "small.png")
    out = tmp_path / "big.png"
    result = invoke("superres", small, "--factor", factor, "-o", out, *FAST)
    assert result.exit_code == 0, result.output
    assert Image.open(out).size == (8 * int(factor),) * 2
    assert json.loads((tmp_path / "big.png.json").read_text())["config"]["factor"] == int(factor)


def test_superres_kernel_is_used_and_recorded(tmp_path: Path) -> None:
    small = save(synthetic(8), tmp_path / "small.png")
    result = invoke("superres", small, "--kernel", "bicubic", "-o", tmp_path / "b.png", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b.png.json").read_text())["kernel"] == "bicubic"
    assert invoke("superres", small, "-o", tmp_path / "l.png", *FAST).exit_code == 0
    assert json.loads((tmp_path / "l.png.json").read_text())["kernel"] == "lanczos"
    # another operator, another fit: the same seed gives another image
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "b.png")),
                              np.asarray(Image.open(tmp_path / "l.png")))


def test_superres_unknown_kernel_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    small = save(synthetic(8), tmp_path / "small.png")
    line = _one_line_error(invoke("superres", small, "--kernel", "gauss:2", "-o",
                                  tmp_path / "o.png", *FAST))
    assert line == ("dip: error: unknown downsampling kernel 'gauss:2'; use lanczos, lanczos3, "
                    "bicubic, area or gaussian:SIGMA")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small.png"]


def test_the_recorded_psnr_curve_and_peak_are_the_results_not_the_networks(
        tmp_path: Path, clean_png: Path) -> None:
    """Inpainting puts the known pixels back and super-resolution back-projects after the fit:
    the curve and the peak were the network's image, 16 dB under the result at the same
    step."""
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    small = save(image.resize(image.load_image(clean_png).pixels, (8, 8), "lanczos"),
                 tmp_path / "small.png")
    for task, given in (("inpaint", [clean_png, "--mask", tmp_path / "mask.png"]),
                        ("superres", [small])):
        out = tmp_path / f"{task}.png"
        result = invoke(task, *given, "-o", out, "--reference", clean_png, "--stop", "fixed",
                        "--set", "output.metrics_every=1", *FAST)
        assert result.exit_code == 0, result.output
        record = json.loads(Path(f"{out}.json").read_text())
        m, curve = record["metrics"], record["history"]["psnr"]
        assert curve[-1] == pytest.approx(m["psnr"], abs=0.05), (task, curve, m)
        assert m["peak_psnr"] == pytest.approx(max(curve), abs=1e-3)


def test_reference_adds_metrics_to_the_record(tmp_path: Path, noisy_png: Path,
                                              clean_png: Path) -> None:
    for restarts, wiener in ((1, "false"), (2, "false"), (1, "true")):
        out = tmp_path / f"r{restarts}{wiener}.png"
        result = invoke("denoise", noisy_png, "-o", out, "--reference", clean_png,
                        "--set", "output.metrics_every=1", "--restarts", restarts,
                        "--set", f"noise.wiener={wiener}", *FAST)
        assert result.exit_code == 0, result.output
        m = json.loads(Path(f"{out}.json").read_text())["metrics"]
        assert {"psnr", "ssim", "peak_psnr", "peak_iteration"} <= m.keys()
        if restarts == 1 and wiener == "false":
            assert m["peak_psnr"] >= m["psnr"] - 1e-3 and 1 <= m["peak_iteration"] <= 3
        else:  # one fit's best moment is neither the average's nor the filtered result's
            assert m["peak_psnr"] is None and m["peak_iteration"] is None


def test_superres_reference_reports_the_papers_protocol(tmp_path: Path) -> None:
    small = save(synthetic(8), tmp_path / "small.png")
    ref = save(synthetic(32), tmp_path / "ref.png")
    result = invoke("superres", small, "-o", tmp_path / "o.png", "--reference", ref, *FAST)
    assert result.exit_code == 0, result.output
    m = json.loads((tmp_path / "o.png.json").read_text())["metrics"]
    assert {"psnr_y", "bicubic_psnr_y"} <= m.keys()


def test_save_every_keeps_snapshots(tmp_path: Path, noisy_png: Path) -> None:
    out = tmp_path / "s.png"
    result = invoke("denoise", noisy_png, "-o", out, "--save-every", "2", "--iters", "4",
                    "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "s_steps").iterdir()) == [
        "step_000002.png", "step_000004.png"]


def test_same_seed_gives_the_same_image(tmp_path: Path, noisy_png: Path) -> None:
    for name in ("a.png", "b.png"):
        assert invoke("denoise", noisy_png, "-o", tmp_path / name, "--seed", "7",
                      *FAST).exit_code == 0
    a, b = (np.asarray(Image.open(tmp_path / n)) for n in ("a.png", "b.png"))
    assert np.array_equal(a, b)


def test_config_file_and_set_reach_the_record(tmp_path: Path, noisy_png: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("net:\n  channels_down: [8, 8]\n  channels_up: [8, 8]\n"
                   "  channels_skip: [2, 2]\n")
    out = tmp_path / "c.png"
    result = invoke("denoise", noisy_png, "-o", out, "--config", cfg,
                    "--set", "optim.lr=0.005", *FAST)
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "c.png.json").read_text())["config"]
    assert config["net"]["channels_down"] == [8, 8] and config["optim"]["lr"] == 0.005


# --- mistakes: one line on stderr, exit 2, nothing written -----------------------------------

def test_existing_output_is_kept_without_overwrite(tmp_path: Path, noisy_png: Path) -> None:
    out = tmp_path / "o.png"
    out.write_bytes(b"precious")
    line = _one_line_error(invoke("denoise", noisy_png, "-o", out, *FAST))
    assert "already exists" in line and "--overwrite" in line
    assert out.read_bytes() == b"precious"
    assert invoke("denoise", noisy_png, "-o", out, "--overwrite", *FAST).exit_code == 0
    assert out.read_bytes() != b"precious"


def test_a_replaced_result_keeps_its_permissions(tmp_path: Path, noisy_png: Path) -> None:
    """A result the user made read-only, and its record shared with a group, stay so when
    --overwrite replaces them (they took the umask's 0644 before)."""
    out, record = tmp_path / "o.png", tmp_path / "o.png.json"
    assert invoke("denoise", noisy_png, "-o", out, *FAST).exit_code == 0
    out.chmod(0o444)
    record.chmod(0o664)
    result = invoke("denoise", noisy_png, "-o", out, "--overwrite", "--seed", "1", *FAST)
    assert result.exit_code == 0, result.output
    assert json.loads(record.read_text())["seed"] == 1  # both replaced
    assert (out.stat().st_mode & 0o777, record.stat().st_mode & 0o777) == (0o444, 0o664)


def test_output_path_mistakes_are_caught_before_the_run(tmp_path: Path, noisy_png: Path,
                                                      clean_png: Path) -> None:
    blocker = tmp_path / "file.png"
    blocker.write_bytes(b"x")
    line = _one_line_error(invoke("denoise", noisy_png, "-o", blocker / "x.png", *FAST))
    assert "cannot create the folder" in line
    mask = _mask(tmp_path)
    before = mask.read_bytes()
    line = _one_line_error(invoke("inpaint", noisy_png, "--mask", mask, "-o", mask,
                                  "--overwrite", *FAST))
    assert "one of the run's input files" in line and mask.read_bytes() == before
    line = _one_line_error(invoke("denoise", noisy_png, "--reference", clean_png, "-o",
                                  clean_png, "--overwrite", *FAST))
    assert "one of the run's input files" in line


def test_snapshots_do_not_replace_earlier_ones_without_overwrite(tmp_path: Path,
                                                                 noisy_png: Path) -> None:
    steps = tmp_path / "s_steps"
    steps.mkdir()
    (steps / "step_000002.png").write_bytes(b"old")
    line = _one_line_error(invoke("denoise", noisy_png, "-o", tmp_path / "s.png",
                                  "--save-every", 2, *FAST))
    assert "not empty" in line and (steps / "step_000002.png").read_bytes() == b"old"


def test_superres_factor_can_come_from_the_config(tmp_path: Path) -> None:
    small = save(synthetic(8), tmp_path / "small.png")
    out = tmp_path / "big.png"
    assert invoke("superres", small, "--set", "factor=2", "-o", out, *FAST).exit_code == 0
    assert Image.open(out).size == (16, 16)


def test_result_too_large_is_refused_before_the_run(tmp_path: Path) -> None:
    small = save(synthetic(8), tmp_path / "small.png")
    line = _one_line_error(invoke("superres", small, "--factor", 8, "--max-pixels", 1000,
                                  *FAST))
    assert "64x64" in line and "--max-pixels" in line


def test_superres_rejects_a_factor_it_cannot_do(tmp_path: Path, clean_png: Path) -> None:
    line = _one_line_error(invoke("superres", clean_png, "--factor", "3", *FAST))
    assert "'3' is not one of '2', '4', '8'" in line


# --- dip corrupt ------------------------------------------------------------------------------

def test_corrupt_noise_drop_and_downscale(tmp_path: Path, clean_png: Path) -> None:
    assert invoke("corrupt", clean_png, "-o", tmp_path / "n.png", "--noise", 25).exit_code == 0
    noisy = np.asarray(Image.open(tmp_path / "n.png"), dtype=float)
    clean = np.asarray(Image.open(clean_png), dtype=float)
    assert 20 < (noisy - clean).std() < 26  # clipping shaves a little off 25

    assert invoke("corrupt", clean_png, "-o", tmp_path / "d.png", "--drop-pixels",
                  0.5).exit_code == 0
    mask = np.asarray(Image.open(tmp_path / "d_mask.png"))
    assert 0.4 < (mask > 0).mean() < 0.6  # white = missing, ready for `dip inpaint --mask`
    assert (np.asarray(Image.open(tmp_path / "d.png"))[mask > 0] == 0).all()

    assert invoke("corrupt", clean_png, "-o", tmp_path / "s.png", "--downscale", 4).exit_code == 0
    assert Image.open(tmp_path / "s.png").size == (8, 8)


def test_corrupt_downscale_is_what_superres_kernel_lanczos3_says(tmp_path: Path) -> None:
    """Its help says so: Pillow's three lobes, not the two of superres's default kernel."""
    from dip import operators

    clean = save(synthetic(64), tmp_path / "c.png")
    assert invoke("corrupt", clean, "-o", tmp_path / "s.png", "--downscale", 4).exit_code == 0
    small = image.load_image(tmp_path / "s.png").pixels
    pixels = image.load_image(clean).pixels
    inner = (..., slice(2, -2), slice(2, -2))  # (the borders' convention differs)
    misfit = {k: float((operators.Downsample(4, k)(pixels) - small)[inner].abs().mean())
              for k in ("lanczos3", "lanczos")}
    assert misfit["lanczos3"] < 0.5 * misfit["lanczos"], misfit
    assert "--kernel lanczos3 matches it" in " ".join(invoke("corrupt", "--help").output.split())


def test_run_help_names_each_job_option_once() -> None:
    text = " ".join(invoke("run", "--help").output.split())
    assert "kernel (deblur, superres)" in text and text.count("kernel (") == 1
    assert "any job option but input" in text


def test_corrupt_needs_exactly_one_corruption(tmp_path: Path, clean_png: Path) -> None:
    """One kind of damage, or a blur then noise (the message says both: it said "exactly
    one", which a blur with noise is not)."""
    told = ("give one kind of damage: one of --blur, --noise, --poisson, --drop-pixels, "
            "--downscale, or --blur then --noise")
    line = _one_line_error(invoke("corrupt", clean_png, "-o", tmp_path / "x.png"))
    assert told in line
    line = _one_line_error(invoke("corrupt", clean_png, "-o", tmp_path / "x.png", "--noise", 5,
                                  "--downscale", 2))
    assert told + " (got --noise, --downscale)" in line
    assert not (tmp_path / "x.png").exists()


def test_corrupt_is_one_python_call(tmp_path: Path, clean_png: Path) -> None:
    import dip

    written = dip.corrupt(clean_png, tmp_path / "h.png", drop_pixels=0.3, seed=4)
    assert written == {"image": tmp_path / "h.png", "mask": tmp_path / "h_mask.png"}
    assert Image.open(written["mask"]).size == (32, 32)
    from dip.errors import InputError

    # (the command line's spelling, --drop-pixels, was in Python's message too)
    with pytest.raises(InputError, match=re.escape("drop_pixels must be a fraction in [0, 1), "
                                                   "got 1.5")):
        dip.corrupt(clean_png, tmp_path / "x.png", drop_pixels=1.5)
    assert not (tmp_path / "x.png").exists()


def test_corrupt_takes_max_pixels_and_warns_of_what_the_format_drops(tmp_path: Path) -> None:
    """Its refusal of a large image advised --max-pixels, which it did not have; a 16-bit
    or transparent picture written as a JPEG lost its depth or alpha without a word."""
    rgba = np.full((16, 16, 4), 100, np.uint8)
    rgba[..., 3] = 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    refused = invoke("corrupt", tmp_path / "a.png", "-o", tmp_path / "x.png", "--noise", 3,
                     "--max-pixels", 100)
    assert refused.exit_code == 2 and "above the limit of 100 pixels (raise it with " \
        "--max-pixels)" in refused.output
    from dip.image import DipWarning

    with pytest.warns(DipWarning, match="x.jpg: JPEG holds no transparency, so the input's "
                                        "is dropped"):
        made = invoke("corrupt", tmp_path / "a.png", "-o", tmp_path / "x.jpg", "--noise", 3,
                      "--max-pixels", 256)
    assert made.exit_code == 0, made.output


def test_corrupt_is_seeded(tmp_path: Path, clean_png: Path) -> None:
    for name, seed in (("a.png", 1), ("b.png", 1), ("c.png", 2)):
        invoke("corrupt", clean_png, "-o", tmp_path / name, "--noise", 25, "--seed", seed)
    a, b, c = (np.asarray(Image.open(tmp_path / n)) for n in ("a.png", "b.png", "c.png"))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), *(
    [(signal.SIGHUP, 129)] if hasattr(signal, "SIGHUP") else [])])  # the terminal closed
def test_ctrl_c_or_sigterm_writes_the_estimate_so_far(tmp_path: Path, noisy_png: Path,
                                                      spawn_dip, slowness: float, signum: int,
                                                      code: int) -> None:
    """SIGTERM (kill, timeout, a SLURM time limit) stops a run like Ctrl-C: the estimate so far
    is written, marked interrupted, and the exit code is 128 + the signal."""
    out = tmp_path / "i.png"
    proc = spawn_dip("denoise", noisy_png, "-o", out, "--iters", 100000, "--stop", "fixed",
                     "--save-every", 5, "--device", "cpu")
    first_snapshot = tmp_path / ".i.png.steps.dip-new" / "step_000005.png"
    assert wait_until(first_snapshot.exists, 120 * slowness, proc), proc.stderr.read()
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60 * slowness)
    assert proc.returncode == code, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    record = json.loads((tmp_path / "i.png.json").read_text())
    assert record["stop_reason"] == "interrupted" and 5 <= record["iterations"] < 100000
    assert Image.open(out).size == (32, 32)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="a terminal's hangup")
def test_a_terminal_that_closes_mid_run_gets_the_estimate_written_and_exit_129(
        tmp_path: Path, noisy_png: Path, slowness: float) -> None:
    """A real terminal, not a pipe: once it has hung up, isatty() says no and every write to
    it fails (EIO), so the run's last message raised, exit 1 with a traceback."""
    import pty

    from conftest import dip_command

    out = tmp_path / "i.png"
    command = dip_command() + [str(a) for a in (
        "denoise", noisy_png, "-o", out, "--iters", 100000, "--stop", "fixed",
        "--save-every", 5, "--device", "cpu", "-q")]
    pid, terminal = pty.fork()
    if pid == 0:  # the child: dip on the terminal, its session's leader
        try:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            os.execv(command[0], command)
        finally:
            os._exit(127)  # never a second pytest
    try:
        first = tmp_path / ".i.png.steps.dip-new" / "step_000005.png"
        assert wait_until(first.exists, 120 * slowness)
        os.close(terminal)  # the window closed: the kernel hangs the terminal up
        terminal = None
        ended: list[int] = []

        def exited() -> bool:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                ended.append(os.waitstatus_to_exitcode(status))
            return bool(ended)

        assert wait_until(exited, 60 * slowness)
        assert ended == [129]
    finally:
        if terminal is not None:
            os.close(terminal)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    record = json.loads((tmp_path / "i.png.json").read_text())
    assert record["stop_reason"] == "interrupted"
    assert not list(tmp_path.glob(".*claim")) and not list(tmp_path.glob(".*.part"))


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_start_up_exits_cleanly_with_nothing_written(
        tmp_path: Path, noisy_png: Path, spawn_dip, slowness: float, signum: int,
        code: int) -> None:
    """A signal while Python is still importing torch (the first second or two) is answered
    like a later one: no traceback, nothing written, 128 + the signal (issue 19). The delays
    start after the interpreter's own start-up (before dip's first line runs, a signal is the
    interpreter's to handle)."""
    for i, delay in enumerate((0.25, 0.5, 1.0, 1.5)):
        out = tmp_path / f"s{i}.png"
        proc = spawn_dip("denoise", noisy_png, "-o", out, "--iters", 100000, "--device", "cpu",
                         "-q")
        time.sleep(delay * slowness)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=60 * slowness)
        assert proc.returncode == code, (delay, stderr)
        assert "Traceback" not in stderr and "interrupted" in stderr, (delay, stderr)
        if out.exists():  # only when the fit had begun: then with its record, interrupted
            record = json.loads(Path(f"{out}.json").read_text())
            assert record["stop_reason"] == "interrupted", delay
        assert not list(tmp_path.glob(".*.part"))


def test_preset_is_chosen_by_device_and_named_in_the_output(tmp_path: Path,
                                                          noisy_png: Path) -> None:
    out = tmp_path / "r.png"
    result = invoke("denoise", noisy_png, "-o", out, "--iters", "3", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "preset fast" in result.output  # auto on a CPU
    record = json.loads(out.with_name("r.png.json").read_text())
    assert record["preset"] == record["config"]["preset"] == "fast"
    assert record["perf"] == "kept-cpu-memory"


def test_paper_preset_runs_exactly_the_steps_asked(tmp_path: Path, noisy_png: Path) -> None:
    """`--preset paper` on a CPU runs the paper's network, not the fast preset's, and
    `--iters` sets its budget (7 steps: under the stop's 200-step window, it cannot end
    sooner)."""
    out = tmp_path / "r.png"
    result = invoke("denoise", noisy_png, "-o", out, "--preset", "paper", "--iters", "7",
                    "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    record = json.loads(out.with_name("r.png.json").read_text())
    assert (record["iterations"], record["preset"]) == (7, "paper")
    assert record["config"]["net"]["channels_down"] == [128] * 5
    assert record["config"]["stop"]["rule"] == "auto"


def test_out_of_memory_says_what_to_do(tmp_path: Path, noisy_png: Path, monkeypatch) -> None:
    import torch

    import dip.run

    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(dip.run, "fit_group", no_memory)
    out = tmp_path / "r.png"
    line = _one_line_error(invoke("denoise", noisy_png, "-o", out, *FAST, "--preset", "paper"),
                           code=1)
    assert "out of memory" in line and "--preset fast" in line and "smaller image" in line
    assert not out.exists() and not out.with_name("r.png.json").exists()
    # already the narrow network: only the advice that can still help
    line = _one_line_error(invoke("denoise", noisy_png, "-o", out, *FAST), code=1)
    assert "smaller image" in line and "--preset fast" not in line


def test_a_record_pins_its_preset(tmp_path: Path, noisy_png: Path) -> None:
    out = tmp_path / "r.png"
    assert invoke("denoise", noisy_png, "-o", out, *FAST).exit_code == 0  # fast on a CPU
    record = out.with_name("r.png.json")
    again = tmp_path / "again.png"
    result = invoke("denoise", noisy_png, "-o", again, "--config", record, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads(again.with_name("again.png.json").read_text())["config"] == \
        json.loads(record.read_text())["config"]
    line = _one_line_error(invoke("denoise", noisy_png, "-o", again, "--config", record,
                                  "--preset", "paper", "--overwrite"))
    assert "made with preset fast" in line


def test_a_grey_mask_is_one_warning_line_from_the_command(tmp_path: Path) -> None:
    """The library's DipWarning reaches the user of the real command as one ``dip: warning:``
    line on stderr (not Python's two-line warning with its source, not once per stage)."""
    import subprocess

    from conftest import dip_command

    src = save(synthetic(32), tmp_path / "in.png")
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (32, 1))  # a soft brush
    Image.fromarray(ramp).save(tmp_path / "soft.png")
    args = ["inpaint", str(src), "--mask", str(tmp_path / "soft.png"), "-o",
            str(tmp_path / "o.png"), *FAST, "--set", "net.channels_down=[8,8,8,8,8]",
            "--set", "net.channels_up=[8,8,8,8,8]"]
    done = subprocess.run(dip_command() + args, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dip: warning: mask "), done.stderr
    assert "grey pixels" in lines[0]


def test_warnings_before_a_refusal_are_not_shown_and_after_the_checks_they_are(
        tmp_path: Path) -> None:
    """A mistake is one line: the warnings of a run that is then refused (a 16-bit input
    written as JPEG, then a reference of another size) came before its error, two lines. A run
    that starts shows them, before its start line."""
    import subprocess

    from conftest import dip_command

    deep = tmp_path / "deep.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 65535, (32, 32), np.uint16)).save(deep)
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(tmp_path / "small.png")
    refused = subprocess.run(dip_command() + [
        "denoise", str(deep), "-o", str(tmp_path / "o.jpg"), "--reference",
        str(tmp_path / "small.png")], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "dip: error: reference " + str(tmp_path / "small.png") + " is 24x24 but the result "
        "will be 32x32"], refused.stderr
    assert not (tmp_path / "o.jpg").exists()
    ran = subprocess.run(dip_command() + [
        "denoise", str(deep), "-o", str(tmp_path / "o.jpg"), "--iters", "2", *TINY_NET],
        capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 2 and "16-bit samples are rounded to 8 bits" in lines[0], ran.stderr
    assert lines[1].startswith("dip: about "), ran.stderr


def test_an_output_folder_the_file_system_refuses_is_refused_before_the_fit(
        tmp_path: Path, monkeypatch) -> None:
    """The permission bits are root's to pass where NFS (root squashed) or /sys refuse a new
    file: the run said 'cannot write' after its fit. A file is made there first."""
    import tempfile

    from dip import run

    src = save(synthetic(32), tmp_path / "in.png")
    share = tmp_path / "share"
    share.mkdir()
    made = tempfile.NamedTemporaryFile

    def refusing(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == share:
            raise PermissionError(13, "Permission denied")
        return made(*args, dir=dir, **kwargs)

    monkeypatch.setattr(run.tempfile, "NamedTemporaryFile", refusing)
    fitted = []
    monkeypatch.setattr(run, "_run", lambda *a, **k: fitted.append(a))
    for output in (share / "o.png", share / "new" / "o.png"):
        line = _one_line_error(invoke("denoise", src, "-o", output, *FAST))
        assert line == f"dip: error: cannot write to the folder {share} (output {output})"
        assert not fitted and not output.exists() and not (share / "new").exists()
    monkeypatch.undo()  # a folder that takes files: the probe's is not left there
    assert invoke("denoise", src, "-o", tmp_path / "ok" / "o.png", *FAST).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["o.png", "o.png.json"]


@pytest.mark.parametrize("option", ["input", "--mask", "--reference", "--kernel", "--config"])
def test_a_loop_of_links_is_one_line_not_a_traceback(tmp_path: Path, option: str) -> None:
    # Path.resolve() raised RuntimeError (Python before 3.13) while the outputs were checked
    src = save(synthetic(32), tmp_path / "in.png")
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    task = {"--mask": "inpaint", "--kernel": "deblur"}.get(option, "denoise")
    given = [tmp_path / "a"] if option == "input" else [src, option, tmp_path / "a"]
    needs = ["--kernel", "box:3"] if task == "deblur" and option != "--kernel" else []
    line = _one_line_error(invoke(task, *given, *needs, "-o", tmp_path / "o.png", *FAST))
    assert line.endswith(f"path {tmp_path / 'a'}: Too many levels of symbolic links"), line


def test_a_kernel_that_is_neither_a_file_nor_a_spec_says_what_a_kernel_is(
        tmp_path: Path) -> None:
    src = save(synthetic(32), tmp_path / "in.png")
    line = _one_line_error(invoke("deblur", src, "--kernel", "gaussian1.6", "-o",
                                  tmp_path / "o.png", *FAST))
    assert line == ("dip: error: kernel not found: gaussian1.6 (a kernel is a file, .npy or an "
                    "image, or a spec: gaussian:SIGMA, box:SIZE or motion:LENGTH,ANGLE)")


def test_a_name_the_outputs_encoding_cannot_hold_is_escaped_not_a_traceback(
        tmp_path: Path) -> None:
    # a Latin-1 terminal, or Windows' code page with the output sent to a file: the run
    # wrote its result, then ended in UnicodeEncodeError at its 'wrote ...' line
    import os
    import subprocess

    from conftest import dip_command

    src = save(synthetic(24), tmp_path / "照片.png")
    args = ["denoise", str(src), "-o", str(tmp_path / "照片_x.png"), "--iters", "2",
            "--restarts", "1"]
    env = {**os.environ, "PYTHONIOENCODING": "latin-1"}
    done = subprocess.run(dip_command() + args, capture_output=True, timeout=600, env=env)
    out = done.stdout.decode("latin-1")
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
    assert f"wrote {tmp_path}/\\u7167\\u7247_x.png (" in out, out


@pytest.mark.parametrize("args", [("--noise", "nan"), ("--poisson", "inf")])
def test_corrupt_refuses_noise_of_no_finite_size(tmp_path: Path, clean_png: Path,
                                                 args: tuple) -> None:
    out = tmp_path / "x.png"
    result = invoke("corrupt", clean_png, "-o", out, *args)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_a_tiff_inputs_result_is_a_tiff_by_default() -> None:
    from dip.run import output_path

    assert output_path(Path("scan.TIFF"), "denoise", None, None) == Path("scan_denoise.tif")
    assert output_path(Path("scan.png"), "denoise", None, None) == Path("scan_denoise.png")
    assert output_path(Path("scan.tif"), "denoise", None, "png") == Path("scan_denoise.png")


@pytest.mark.parametrize("args, said", [
    (("--tile", "16"), "dip: error: --tile must be auto, off or a tile's side of at least 32"),
    (("--restarts", "200"), "dip: error: Invalid value for '--restarts': 200 is not in the "
                            "range 1<=x<=100"),
    (("--seed", "-1"), "dip: error: --seed must be in 0 .. 2**63-1"),
    # the same value given as a config key is named as one
    (("--set", "tile.size=16"), "dip: error: config key 'tile.size' must be auto, off"),
])
def test_a_bad_value_is_named_as_the_user_gave_it(tmp_path: Path, noisy_png: Path,
                                                   args: tuple, said: str) -> None:
    out = tmp_path / "x.png"
    line = _one_line_error(invoke("denoise", noisy_png, "-o", out, *args))
    assert line.startswith(said), line
    assert not out.exists()


def test_no_writable_temporary_folder_is_one_line_before_any_work(tmp_path: Path, noisy_png: Path,
                                                                 monkeypatch, capsys) -> None:
    """Without a temporary folder torch's optimiser could not be imported: every run failed
    with a traceback after its start."""
    import sys
    import tempfile
    import types

    from dip.cli import entry, signals

    blocked = tmp_path / "a file"
    blocked.write_text("")
    # as tempfile looks: TMPDIR, then /tmp, /var/tmp, /usr/tmp and the current folder
    monkeypatch.setenv("TMPDIR", str(tmp_path / "missing"))
    monkeypatch.setattr(tempfile, "_candidate_tempdir_list",
                        lambda: [str(tmp_path / "missing"), str(blocked / "tmp")])
    monkeypatch.setattr(tempfile, "tempdir", None)  # not the folder found before
    with pytest.raises(FileNotFoundError):
        tempfile.gettempdir()
    ran: list[str] = []
    monkeypatch.setitem(sys.modules, "dip.cli.main", types.SimpleNamespace(
        main=lambda: ran.append("the command")))
    monkeypatch.setattr(signals, "install", lambda: None)  # this process's handlers stay
    monkeypatch.setattr(signals, "finished", lambda: None)
    out = tmp_path / "o.png"
    monkeypatch.setattr(sys, "argv", ["dip", "denoise", str(noisy_png), "-o", str(out)])
    with pytest.raises(SystemExit) as stop:
        entry.main()
    assert stop.value.code == 2 and not ran and not out.exists()
    assert capsys.readouterr().err == ("dip: error: no writable temporary folder (TMPDIR, /tmp, "
                                       "/var/tmp, the current folder); set TMPDIR to one\n")
    for asks in (["denoise", "--help"], ["--version"]):  # they run nothing: no need of one
        monkeypatch.setattr(sys, "argv", ["dip", *asks])
        entry.main()
    assert ran == ["the command"] * 2
    ran.clear()
    # with one writable folder the command runs
    monkeypatch.setattr(tempfile, "_candidate_tempdir_list",
                        lambda: [str(tmp_path / "missing"), str(tmp_path)])
    entry.main()
    assert ran == ["the command"] and tempfile.gettempdir() == str(tmp_path)


def test_a_deleted_current_folder_and_a_library_that_cannot_load_are_one_line(
        tmp_path: Path, slowness: float) -> None:
    """torch's import failed: in a deleted folder with oneMKL's 'FATAL ERROR: Cannot load
    libtorch_cpu.so' (for --version too), and under ulimit -v with a traceback."""
    import subprocess
    import sys

    from conftest import dip_command

    gone = tmp_path / "gone"
    gone.mkdir()
    child = subprocess.Popen([*dip_command(), "--version"], cwd=gone, stdin=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: os.rmdir(gone))
    _, err = child.communicate(timeout=120 * slowness)
    assert child.returncode == 2 and err == (
        "dip: error: the current folder cannot be used (No such file or directory: deleted?); "
        "change to another folder\n"), err
    # torch whose load fails as it does under ulimit -v: its loader's OSError, numpy's
    # ImportError whose text starts with blank lines, or no module at all
    fake = tmp_path / "fake"
    fake.mkdir()
    for raised, said in (
            ("OSError('libgomp.so.1: failed to map segment from shared object')",
             "libgomp.so.1: failed to map segment from shared object"),
            ("ImportError('\\n\\nIMPORTANT: PLEASE READ THIS FOR ADVICE')",
             "IMPORTANT: PLEASE READ THIS FOR ADVICE"),
            (None, "import of torch halted; None in sys.modules")):
        (fake / "torch.py").write_text(f"raise {raised}\n" if raised else "")
        setup = "" if raised else "sys.modules['torch'] = None; "
        script = (f"import sys; sys.path.insert(0, {str(fake)!r}); {setup}"
                  f"sys.argv = ['dip', '--version']; from dip.cli.entry import main; main()")
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                timeout=120 * slowness)
        assert result.returncode == 1 and result.stderr == (
            f"dip: error: cannot load the libraries dip runs on: {said}\n"), result.stderr


def test_a_stop_signal_once_the_run_is_over_is_ignored(monkeypatch) -> None:
    """Ctrl-C pressed as a run ended interrupted torch's teardown at exit: 'Exception ignored
    in atexit callback' and a traceback on stderr, after the result was written."""
    import sys
    import types

    from dip.cli import entry, signals

    seen = {}
    monkeypatch.setitem(sys.modules, "dip.cli.main", types.SimpleNamespace(
        main=lambda: seen.update({s: signal.getsignal(s) for s in signals.EXIT_CODES})))
    saved = {s: signal.getsignal(s) for s in signals.EXIT_CODES}
    try:
        entry.main()
        assert all(handler is signals._raise for handler in seen.values())  # while it ran
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        # a shutdown that hangs can still be ended
        assert all(signal.getsignal(s) is signal.SIG_DFL for s in signals.EXIT_CODES
                   if s != signal.SIGINT)
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


TINY_NET = ["--set", "net.channels_down=[8,8,8,8,8]", "--set", "net.channels_up=[8,8,8,8,8]"]


def test_a_run_with_its_standard_error_closed_finishes(tmp_path: Path) -> None:
    # `2>&-`: Python's sys.stderr was None, the progress bar's first write raised in a fit's
    # thread holding tqdm's lock, and dip denoise hung for ever
    import subprocess

    from conftest import dip_command

    src = save(synthetic(32), tmp_path / "in.png")
    args = [*dip_command(), "denoise", str(src), "-o", str(tmp_path / "o.png"), "--iters",
            "5", "--device", "cpu", *TINY_NET]
    done = subprocess.run(["bash", "-c", 'exec 2>&-; exec "$@"', "dip", *args],
                          capture_output=False, stdout=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 0 and (tmp_path / "o.png").is_file()
    assert done.stdout.startswith("wrote ")


@pytest.mark.parametrize("command", ["denoise", "run"])
def test_a_reader_that_leaves_does_not_stop_the_run(tmp_path: Path, command: str) -> None:
    # `dip ... 2>&1 | head -1`: the first line after the reader left raised EPIPE; the run
    # stopped there (nothing written, exit 1, no message) or a finished one exited 1. In
    # dip run a worker's warning failed its job
    import subprocess

    from conftest import dip_command

    rgba = np.dstack([np.asarray(Image.open(save(synthetic(32), tmp_path / "in.png"))),
                      np.full((32, 32), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "in.png")  # a JPEG result warns
    if command == "denoise":
        args = ["denoise", str(tmp_path / "in.png"), "-o", str(tmp_path / "o.jpg"),
                "--iters", "5", "--device", "cpu", *TINY_NET]
        outputs = [tmp_path / "o.jpg"]
    else:
        outputs = [tmp_path / f"o{i}.jpg" for i in range(3)]
        (tmp_path / "b.yaml").write_text("defaults: {iters: 3, device: cpu}\njobs:\n" + "".join(
            f"  - {{task: denoise, input: in.png, output: {o.name}}}\n" for o in outputs))
        args = ["run", str(tmp_path / "b.yaml"), "--workers", "2"]
    child = subprocess.Popen(dip_command() + args, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    assert child.stdout.readline().startswith("dip: ")  # the estimate or the first warning
    child.stdout.close()  # the reader leaves
    assert child.wait(timeout=300) == 0
    assert all(o.is_file() for o in outputs)


def test_the_summary_says_every_file_as_the_result_is_said(tmp_path: Path, noisy_png: Path,
                                                           monkeypatch) -> None:
    # the result and its record relative, as given; the report and the GIF were absolute
    monkeypatch.chdir(tmp_path)
    result = invoke("denoise", noisy_png.name, "--iters", "4", "--device", "cpu", "--report",
                    "--gif", "--set", "optim.restarts=1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for said in ("wrote noisy_denoise.png (", "  record: noisy_denoise.png.json",
                 "  report: noisy_denoise_report.png", "  gif: noisy_denoise.gif"):
        assert any(line.startswith(said) for line in lines), (said, result.output)
    assert str(tmp_path) not in result.output


def test_a_warning_clears_the_progress_bar_before_its_line(capsys) -> None:
    """It was written onto the bar's line, and a stale bar stayed above it."""
    import re
    import sys

    from tqdm import tqdm

    from dip.cli.main import show_warning

    with tqdm(total=10, desc="denoise", file=sys.stderr) as bar:
        bar.update(3)
        show_warning("something to know", UserWarning, "x.py", 1)
    err = capsys.readouterr().err
    assert re.search(r"(^|[\r\n])dip: warning: something to know\n", err), repr(err)


@pytest.mark.parametrize("restarts, shown", [(1, True), (2, False)])
def test_the_bar_shows_the_psnr_of_a_run_of_one_fit_and_keeps_it(
        tmp_path: Path, noisy_png: Path, monkeypatch, restarts: int, shown: bool) -> None:
    """It came and went (measured every few steps), and with several fits it was one fit's
    own (a SURE fit's under the noisy input's, the result 9 dB over it)."""
    from dip.cli import main

    postfixes: list[dict] = []

    class Bar:  # the bar a terminal would show, its postfix kept
        def __init__(self, *args, **kwargs) -> None:
            pass

        def set_postfix(self, postfix: dict, refresh: bool = True) -> None:
            postfixes.append(dict(postfix))

        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    monkeypatch.setattr(main, "tqdm", Bar)
    result = invoke("denoise", noisy_png, "-o", tmp_path / "r.png", "--iters", "12",
                    "--device", "cpu", "--reference", noisy_png, "--restarts", restarts,
                    "--set", "output.metrics_every=5")
    assert result.exit_code == 0, result.output
    first = next((i for i, p in enumerate(postfixes) if "psnr" in p), None)
    assert (first is not None) == shown
    if shown:
        assert all("psnr" in p for p in postfixes[first:])


def test_control_characters_in_a_file_name_are_shown_not_acted_on(tmp_path: Path) -> None:
    """A name holding a newline split the one-line error (and the 'wrote' line) in two; one
    holding escape sequences set the terminal's title and cleared its screen."""
    escape = tmp_path / "\x1b]0;pwned\x07\x1b[2Jbad.png"
    escape.write_bytes(b"not an image")
    line = _one_line_error(invoke("denoise", escape, *FAST))
    assert "\x1b" not in line and line.endswith(r"\x1b]0;pwned\x07\x1b[2Jbad.png")
    assert _one_line_error(invoke("denoise", tmp_path / "miss\ning.png", *FAST)).endswith(
        r"miss\ning.png")
    src = save(synthetic(32), tmp_path / "new\nline.png")
    result = invoke("denoise", src, "--iters", 2, "--device", "cpu", "-o", tmp_path / "o\n.png")
    assert result.exit_code == 0, result.output
    assert f"\nwrote {tmp_path}/o\\n.png (" in result.output, result.output
    (tmp_path / "batch.yaml").write_text(f"jobs:\n  - {{task: denoise, input: {escape.name!r}, "
                                         f"output: out/, iters: 2}}\n".replace("'", '"'))
    failed = invoke("run", tmp_path / "batch.yaml", "--devices", "cpu")
    assert failed.exit_code == 1 and "\x1b" not in failed.output, failed.output
