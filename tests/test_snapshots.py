"""What a run that fails or is killed leaves: an earlier result's snapshots (--save-every,
--gif) as they were, nothing that blocks its rerun, and a message naming the file that
failed."""
from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from dip import image
from dip.cli.main import cli

RUN = ["--stop", "fixed", "--restarts", "1", "--device", "cpu", "-q"]


def invoke(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_failed_overwrite_keeps_the_earlier_results_snapshots(tmp_path: Path, noisy_png: Path,
                                                                monkeypatch) -> None:
    """They were deleted before the fit and replaced by the failed run's (a full disk when the
    result was written): the old result stood beside another run's snapshots."""
    out = tmp_path / "o" / "a.png"
    assert invoke("denoise", noisy_png, "-o", out, "--iters", 4, "--save-every", 2,
                  *RUN).exit_code == 0
    steps = tmp_path / "o" / "a_steps"
    before, result = _digests(steps), out.read_bytes()
    assert sorted(before) == ["step_000002.png", "step_000004.png"]

    def full(files, **_):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(image, "write_all_atomic", full)
    failed = invoke("denoise", noisy_png, "-o", out, "--iters", 6, "--save-every", 3,
                    "--seed", 5, "--overwrite", *RUN)
    assert failed.exit_code == 1 and "No space left" in failed.output
    assert _digests(steps) == before and out.read_bytes() == result
    assert sorted(p.name for p in out.parent.iterdir()) == ["a.png", "a.png.json", "a_steps"]
    monkeypatch.undo()
    # and a run that writes its result replaces them all
    assert invoke("denoise", noisy_png, "-o", out, "--iters", 6, "--save-every", 3,
                  "--seed", 5, "--overwrite", *RUN).exit_code == 0
    assert sorted(_digests(steps)) == ["step_000003.png", "step_000006.png"]


def test_a_killed_runs_snapshots_do_not_block_its_rerun(tmp_path: Path, noisy_png: Path) -> None:
    """A run killed mid-fit left a non-empty snapshot folder and no result: every rerun was
    refused ("snapshot folder is not empty; use --overwrite"), in dip run too."""
    out = tmp_path / "a.png"
    staged = tmp_path / ".a.png.steps.dip-new"  # where a killed run's snapshots now are
    image.save_image(image.load_image(noisy_png), staged / "step_000005.png", mark="snapshot")
    (staged / ".step_000010.png.x1y2.part").write_bytes(b"half")
    result = invoke("denoise", noisy_png, "-o", out, "--iters", 4, "--save-every", 2, *RUN)
    assert result.exit_code == 0, result.output
    assert not staged.exists()
    assert sorted(p.name for p in (tmp_path / "a_steps").iterdir()) == [
        "step_000002.png", "step_000004.png"]


def test_a_failed_fit_leaves_no_snapshot_folder(tmp_path: Path, noisy_png: Path) -> None:
    """Its folder stayed, beside a later result made without snapshots."""
    out = tmp_path / "new" / "a.png"
    result = invoke("denoise", noisy_png, "-o", out, "--iters", 200, "--save-every", 10,
                    "--set", "optim.lr=1e6", "--set", "optim.guard=0", *RUN)
    assert result.exit_code == 1, result.output
    assert not (tmp_path / "new").exists()


def test_a_write_that_fails_names_the_file_that_failed(tmp_path: Path, noisy_png: Path,
                                                       monkeypatch) -> None:
    """The report hit a file size limit and the message named the result (a.png), which
    would have fitted."""
    pytest.importorskip("matplotlib")
    original = image.write_all_atomic

    def limited(files, **kwargs):
        def too_large(f):
            raise OSError(errno.EFBIG, "File too large")
        return original([(path, too_large if path.name.endswith("_report.png") else write)
                         for path, write in files], **kwargs)

    monkeypatch.setattr(image, "write_all_atomic", limited)
    out = tmp_path / "o" / "a.png"
    result = invoke("denoise", noisy_png, "-o", out, "--iters", 3, "--report", *RUN)
    assert result.exit_code == 1
    assert result.output.strip() == f"dip: error: cannot write {out.parent / 'a_report.png'}: " \
                                    f"File too large"
    assert not (tmp_path / "o").exists()


def test_a_run_that_took_no_snapshot_leaves_no_snapshot_folder(tmp_path: Path,
                                                               noisy_png: Path) -> None:
    out = tmp_path / "o" / "r.png"
    assert invoke("denoise", noisy_png, "-o", out, "--iters", 4, "--save-every", 100,
                  *RUN).exit_code == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["r.png", "r.png.json"]


def test_results_that_share_a_stem_do_not_share_their_staged_snapshots(
        tmp_path: Path, noisy_png: Path) -> None:
    """x.png's and x.jpg's snapshots were both staged in .x_steps.dip-new, which neither run
    holds: a run writing x.jpg removed those of a live run writing x.png."""
    from dip import run
    from dip.request import RunRequest

    staged = {name: run.staged_snapshots(run.plan(RunRequest(
        task="denoise", input=noisy_png, output=tmp_path / name, save_every=2)))
        for name in ("x.png", "x.jpg")}
    assert staged["x.png"] != staged["x.jpg"]
    staged = staged["x.png"]  # a live run's, writing x.png
    image.save_image(image.load_image(noisy_png), staged / "step_000005.png", mark="snapshot")
    assert invoke("denoise", noisy_png, "-o", tmp_path / "x.jpg", "--iters", 4,
                  "--save-every", 2, *RUN).exit_code == 0
    assert (staged / "step_000005.png").is_file()


def test_a_snapshot_that_cannot_be_written_fails_the_run_not_one_restart(
        tmp_path: Path, noisy_png: Path, monkeypatch) -> None:
    """A full disk at restart 1's snapshot was taken for that restart's failure: the run
    wrote the other's result, "1 of 2 fits failed", and no snapshots, with exit 0."""
    original = image.save_image

    def full(picture, path, mark=None):
        if mark == "snapshot" and path.name == "step_000004.png":
            raise OSError(errno.EFBIG, "File too large")
        return original(picture, path, mark)

    monkeypatch.setattr(image, "save_image", full)
    out = tmp_path / "o" / "a.png"
    result = invoke("denoise", noisy_png, "-o", out, "--iters", 6, "--save-every", 2,
                    "--stop", "fixed", "--restarts", "2", "--device", "cpu", "-q")
    assert result.exit_code == 1, result.output
    assert result.output.strip().endswith("cannot write a snapshot into "
                                          f"{out.parent / '.a.png.steps.dip-new'}: "
                                          f"File too large"), result.output
    assert len(result.output.strip().splitlines()) == 1, result.output  # ("fits failed" too)
    assert not (tmp_path / "o").exists()
