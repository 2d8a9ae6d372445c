"""``dip run`` and the single commands never lose a user's file (issue 17): each case drives the
real command on real files and checks afterwards that every input's bytes are unchanged."""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from dip import batch, run
from dip.cli.main import cli

from conftest import save, synthetic, wait_until

TINY = ("set: {net.channels_down: [8, 8, 8, 8, 8], net.channels_up: [8, 8, 8, 8, 8]}\n"
        "  iters: 3\n  device: cpu\n")


def claim_path(output: Path) -> Path:
    """Where a run holds its output (dip.run.claim_path)."""
    return output.with_name(f".{output.name}.dip-claim")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` and its bytes' hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def photos(tmp_path: Path, n: int = 2) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir(exist_ok=True)
    for i in range(n):
        save(synthetic(32), folder / f"p{i}.png")
    return folder


def batch_file(tmp_path: Path, jobs: str) -> Path:
    path = tmp_path / "batch.yaml"
    path.write_text(f"defaults:\n  {TINY}jobs:\n{jobs}")
    return path


def _refused(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    for word in words:
        assert word in result.output, result.output


# --- 1. summaries: never over a user's file, never an input ---------------------------------------

@pytest.mark.parametrize("name", ["summary.png", "summary.csv", "summary.json"])
def test_a_users_file_named_like_the_summary_is_kept(tmp_path: Path, name: str) -> None:
    folder = photos(tmp_path)
    if name.endswith(".png"):
        save(synthetic(32), folder / name)  # a photo of the user's called summary.png
    else:
        (folder / name).write_text("the user's own notes\n")
    before = digest(folder)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: photos/}\n")
    for args in (["-q"], ["--dry-run"]):  # the dry run said nothing of it (exit 0)
        result = invoke("run", path, *args)
        # the photo is an input too, and the other files are not dip's: refused either way
        _refused(result, name)
        assert "dip did not write it" in result.output or "a file the batch reads" in \
            result.output
    assert digest(folder) == before  # nothing written, nothing replaced


def test_the_summary_is_never_a_file_the_batch_reads(tmp_path: Path) -> None:
    folder = photos(tmp_path)
    before = digest(folder)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, output: out/}\n")
    for args in (["-q"], ["--dry-run"]):
        _refused(invoke("run", path, *args, "--summary", folder / "p0.csv"),
                 "a file the batch reads")
    assert digest(folder) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("job, summary", [
    ("output: out/summary.png", None),  # the contact sheet took the job's result
    ("output: out/", "out/p0_denoise.csv"),  # ... and with it
    ("output: out/", "out/p0_denoise.png.csv"),  # the JSON took the job's record
])
def test_the_summary_is_never_where_a_job_writes(tmp_path: Path, job: str,
                                                 summary: str | None) -> None:
    photos(tmp_path)
    path = batch_file(tmp_path, f"  - {{task: denoise, input: photos/p0.png, {job}}}\n")
    where = ["--summary", tmp_path / summary] if summary else []
    _refused(invoke("run", path, "-q", *where), "where a job writes")
    assert not (tmp_path / "out").exists()


def test_a_rerun_does_not_take_dips_own_files_for_photos(tmp_path: Path) -> None:
    folder = photos(tmp_path)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: photos/, "
                                "report: true}\n")
    assert invoke("run", path, "-q").exit_code == 0
    assert (folder / "summary.png").exists() and (folder / "p0_denoise_report.png").exists()
    result = invoke("run", path, "-q", "--summary", folder / "report.csv")
    assert result.exit_code == 0 and "0 done, 2 already done" in result.output, result.output
    assert len(batch.load_batch(path)) == 2  # summaries, sheets and reports are not inputs
    assert not list(folder.glob("summary_denoise*")) and not list(folder.glob("report_*"))


# --- 2, 4, 11, 14: what jobs write against what they read ---------------------------------------

@pytest.mark.parametrize("key", ["mask", "reference"])
def test_overwrite_never_deletes_a_jobs_mask_or_reference(tmp_path: Path, key: str) -> None:
    folder = photos(tmp_path)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 4:12] = 255
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask).save(tmp_path / "masks" / "p0.png")
    if key == "mask":
        job = ("  - {task: inpaint, input: photos/p0.png, mask: masks/p0.png, "
               "output: masks/p0.png}\n")
    else:
        job = ("  - {task: denoise, input: photos/p0.png, reference: masks/p0.png, "
               "output: masks/p0.png}\n")
    before = digest(tmp_path / "masks"), digest(folder)
    _refused(invoke("run", batch_file(tmp_path, job), "-q", "--overwrite"), "which it reads")
    assert (digest(tmp_path / "masks"), digest(folder)) == before


def test_a_job_writing_its_own_input_is_refused(tmp_path: Path) -> None:
    folder = photos(tmp_path)
    before = digest(folder)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, "
                                "output: photos/p0.png}\n")
    _refused(invoke("run", path, "-q", "--overwrite"), "which it reads")
    _refused(invoke("run", path, "--dry-run"), "which it reads")
    assert digest(folder) == before


@pytest.mark.parametrize("reader", ["another job", "itself"])
def test_a_result_named_as_a_hard_link_to_a_photo_the_batch_reads_is_refused(
        tmp_path: Path, reader: str) -> None:
    """A hard link is the photo under another name (the single command refused it as its
    own input; a batch let one job's result name another job's photo)."""
    folder = photos(tmp_path)
    os.link(folder / "p1.png", tmp_path / "linked.png")
    job = "p1" if reader == "itself" else "p0"
    path = batch_file(tmp_path, f"  - {{task: denoise, input: photos/{job}.png, "
                                f"output: linked.png}}\n"
                                f"  - {{task: denoise, input: photos/p1.png, output: out/}}\n")
    _refused(invoke("run", path, "--dry-run"),
             "which it reads" if reader == "itself" else "is a file")


def test_one_output_spelled_two_ways_is_two_jobs_writing_one_file(tmp_path: Path) -> None:
    photos(tmp_path)
    (tmp_path / "sub").mkdir()
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, output: out/r.png}\n"
                                "  - {task: denoise, input: photos/p1.png, "
                                "output: sub/../out/r.png}\n")
    _refused(invoke("run", path, "-q"), "also writes")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("first", ["result", "map"])
def test_one_jobs_uncertainty_map_on_another_jobs_result_is_refused(tmp_path: Path,
                                                                    first: str) -> None:
    photos(tmp_path)
    result = "  - {task: denoise, input: photos/p0.png, output: out/p1_denoise_uncertainty.png}\n"
    mapped = "  - {task: denoise, input: photos/p1.png, output: out/p1_denoise.png, " \
             "restarts: 2, uncertainty: true}\n"
    path = batch_file(tmp_path, result + mapped if first == "result" else mapped + result)
    before = digest(tmp_path)
    _refused(invoke("run", path, "-q"), "also writes", "p1_denoise_uncertainty.png")
    assert digest(tmp_path) == before and not (tmp_path / "out").exists()


def test_same_stem_results_that_ask_for_no_pictures_beside_may_share_a_folder(
        tmp_path: Path) -> None:
    photos(tmp_path)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, output: out/r.png}\n"
                                "  - {task: denoise, input: photos/p1.png, output: out/r.jpg}\n")
    result = invoke("run", path, "--dry-run")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("snapshots", ["save_every: 1", "set: {output.save_every: 1}"])
def test_same_stem_results_that_keep_snapshots_are_two_jobs_writing_one_folder(
        tmp_path: Path, snapshots: str) -> None:
    # r.png and r.jpg both keep their snapshots in r_steps/: the second's replaced the first's
    # (with --gif, their GIF r.gif was already refused)
    photos(tmp_path)
    path = batch_file(tmp_path, f"  - {{task: denoise, input: photos/p0.png, output: out/r.png, "
                                f"{snapshots}}}\n"
                                f"  - {{task: denoise, input: photos/p1.png, output: out/r.jpg, "
                                f"{snapshots}}}\n")
    _refused(invoke("run", path, "--dry-run"), "also writes", "r_steps")


@pytest.mark.parametrize("order, snapshots, folder", [
    (0, ", save_every: 1", "d_steps"), (1, ", save_every: 1", "d_steps"), (0, "", "d_steps"),
    (0, ", save_every: 1", ".d.png.steps.dip-new")])
def test_a_result_named_like_a_snapshot_in_another_jobs_snapshot_folder_is_refused(
        tmp_path: Path, order: int, snapshots: str, folder: str) -> None:
    # it was replaced by the other job's snapshot, its record naming its own input, "2 done"
    # (and a run of the other job without snapshots removes its folder's step_*.png); in
    # the hidden folder a run stages its snapshots in, it was cleared away
    photos(tmp_path)
    jobs = [f"  - {{task: denoise, input: photos/p0.png, output: out/{folder}/step_000002.png}}\n",
            f"  - {{task: denoise, input: photos/p1.png, output: out/d.png{snapshots}}}\n"]
    path = batch_file(tmp_path, "".join(jobs[::1 - 2 * order]))
    _refused(invoke("run", path, "--dry-run"), "p0.png would write",
             "inside the snapshot folder of", "(p1.png)")
    assert not (tmp_path / "out").exists()


def test_another_file_in_a_jobs_snapshot_folder_is_no_snapshot_and_allowed(
        tmp_path: Path) -> None:
    photos(tmp_path)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, "
                                "output: out/d_steps/notes.png}\n"
                                "  - {task: denoise, input: photos/p1.png, save_every: 1, "
                                "output: out/d.png}\n")
    result = invoke("run", path, "-q")
    assert result.exit_code == 0 and "2 done" in result.output, result.output
    assert (tmp_path / "out" / "d_steps" / "notes.png").is_file()
    assert len(list((tmp_path / "out" / "d_steps").glob("step_*.png"))) == 3


def test_a_job_reading_another_jobs_result_is_refused_not_dropped(tmp_path: Path) -> None:
    photos(tmp_path)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, output: out/d.png}\n"
                                "  - {task: superres, input: out/d.png, factor: 2, "
                                "output: out/s.png}\n")
    (tmp_path / "out").mkdir()
    save(synthetic(32), tmp_path / "out" / "d.png")  # from an earlier run, say
    _refused(invoke("run", path, "--dry-run"), "out/d.png", "second batch")


def test_same_named_photos_of_two_folders_into_one_are_refused(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        save(synthetic(32), tmp_path / name / "p.png")
    path = batch_file(tmp_path, "  - {task: denoise, input: a/*, output: out/}\n"
                                "  - {task: denoise, input: b/*, output: out/}\n")
    before = digest(tmp_path)
    _refused(invoke("run", path, "-q"), "also writes", "p_denoise.png")
    assert digest(tmp_path) == before and not (tmp_path / "out").exists()


def test_one_folders_photos_of_one_stem_are_said_to_share_it(tmp_path: Path) -> None:
    """IMG_1.png and IMG_1.jpg in one folder (an iPhone's .heic beside its .jpg): the batch
    said to 'give the jobs different outputs', and both were one job's."""
    (tmp_path / "x" / "[2020]").mkdir(parents=True)
    folder = photos(tmp_path / "x" / "[2020]", 1)
    Image.open(folder / "p0.png").save(folder / "p0.jpg")
    path = batch_file(tmp_path, "  - {task: denoise, input: 'x/[2020]/photos/', output: out/}\n")
    result = invoke("run", path, "--dry-run")
    _refused(result, "p0.jpg and ", "p0.png would both write",
             "a result is named after its input's stem", "give each extension a job")
    # the globs it gives match those photos (the folder's [2020] escaped), wherever they are
    said = result.output.split("e.g. input: ")[1].strip()
    first, second = said.split(" and input: ")
    assert [Path(p).name for p in glob.glob(first) + glob.glob(second)] == ["p0.jpg", "p0.png"]
    # one name in two folders of one glob: a job per folder
    (tmp_path / "x" / "two").mkdir()
    save(synthetic(32), tmp_path / "x" / "two" / "p0.png")
    path = batch_file(tmp_path, "  - {task: denoise, input: 'x/**/p0.png', output: out/}\n")
    _refused(invoke("run", path, "--dry-run"), "would both write",
             "give each folder a job and an output of its own")


# --- 3: changed contents are redone ----------------------------------------------------------

@pytest.mark.parametrize("what", ["input", "mask"])
def test_a_file_replaced_under_the_same_name_is_redone(tmp_path: Path, what: str) -> None:
    photos(tmp_path)
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    path = batch_file(tmp_path, "  - {task: inpaint, input: photos/p0.png, mask: m.png, "
                                "output: out/}\n")
    assert invoke("run", path, "-q").exit_code == 0
    job = batch.load_batch(path)[0]
    assert batch.is_done(job)
    if what == "input":
        save(synthetic(32).flip(-1), tmp_path / "photos" / "p0.png")  # another picture
    else:
        mask[20:28, 20:28] = 255
        Image.fromarray(mask).save(tmp_path / "m.png")
    assert not batch.is_done(job)
    assert "1 done, 0 already done" in invoke("run", path, "-q").output


def test_an_input_replaced_during_the_fit_is_redone(tmp_path: Path, monkeypatch) -> None:
    """The record's fingerprint is of the file as it was read, not as it is after the fit: a
    photo swapped while the fit ran leaves a result of the old one, which is not done."""
    photos(tmp_path)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, output: out/}\n")
    real = run.fit_group

    def swapped_during_the_fit(*args, **kwargs):
        save(synthetic(32).flip(-1), tmp_path / "photos" / "p0.png")
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "fit_group", swapped_during_the_fit)
    assert invoke("run", path, "-q").exit_code == 0
    monkeypatch.setattr(run, "fit_group", real)
    assert not batch.is_done(batch.load_batch(path)[0])
    assert "1 done, 0 already done" in invoke("run", path, "-q").output

def test_a_reference_replaced_under_the_same_name_is_redone(tmp_path: Path) -> None:
    photos(tmp_path)
    save(synthetic(32), tmp_path / "clean.png")
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, reference: clean.png, "
                                "output: out/}\n")
    assert invoke("run", path, "-q").exit_code == 0
    job = batch.load_batch(path)[0]
    assert batch.is_done(job)
    save(synthetic(32).flip(-2), tmp_path / "clean.png")
    assert not batch.is_done(job)
    assert "1 done, 0 already done" in invoke("run", path, "-q").output

# --- 6: one writer per output ---------------------------------------------------------------------

@pytest.fixture
def other_pid():
    """The pid of a live process that is not this one (a second dip, as a claim sees it)."""
    import subprocess

    proc = subprocess.Popen(["sleep", "600"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_live_claim_refuses_a_second_writer_and_a_stale_one_is_taken_over(
        tmp_path: Path, other_pid: int) -> None:
    src = save(synthetic(32), tmp_path / "in.png")
    out = tmp_path / "out.png"
    claim_path(out).write_text(f"{other_pid} {os.uname().nodename}")  # alive
    _refused(invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu", "-q"),
             "another dip run", str(other_pid))
    assert not out.exists()
    claim_path(out).write_text(f"{2 ** 22 + 12345} {os.uname().nodename}")  # no such process
    assert invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu",
                  "-q").exit_code == 0
    assert out.exists() and not claim_path(out).exists()


@pytest.mark.parametrize("holder", ["this pid", "another host"])
def test_a_claim_no_live_run_can_hold_is_taken_over(tmp_path: Path, holder: str) -> None:
    """A claim with this process's own pid that it does not hold (a pid used again: a
    container's dip is often pid 1), or one from another machine not refreshed for
    CLAIM_STALE (a node restarted, a container replaced: its host name is new), refused
    every run for ever, --overwrite included."""
    src = save(synthetic(32), tmp_path / "in.png")
    out = tmp_path / "out.png"
    claim = claim_path(out)
    claim.write_text(f"{os.getpid()} {os.uname().nodename}" if holder == "this pid"
                     else "4242 othernode")
    if holder == "another host":
        _refused(invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu", "-q"),
                 "another dip run (pid 4242 on othernode)", ".out.png.dip-claim",
                 "15 minutes old")
        old = time.time() - run.CLAIM_STALE - 60
        os.utime(claim, (old, old))
    assert invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu",
                  "-q").exit_code == 0
    assert out.exists() and not claim.exists()


def test_a_claim_held_in_this_process_is_refused_however_the_output_is_spelled(
        tmp_path: Path, monkeypatch) -> None:
    """out.png and /abs/out.png: the second took the first's claim over as a pid used again,
    and removed it when it ended, while the first still ran."""
    monkeypatch.chdir(tmp_path)
    with run.claimed(Path("out.png")):
        with pytest.raises(run.InputError, match="another dip run"):
            with run.claimed(tmp_path / "out.png"):
                pass
        assert claim_path(tmp_path / "out.png").exists()
    assert not claim_path(tmp_path / "out.png").exists()


def test_a_live_claim_on_this_machine_is_kept_however_old(tmp_path: Path, other_pid: int) -> None:
    """A run stopped with Ctrl-Z for an hour, or an older dip that does not refresh its
    claims: its process lives, so its claim holds (the age rule is for other machines')."""
    src = save(synthetic(32), tmp_path / "in.png")
    out = tmp_path / "out.png"
    claim_path(out).write_text(f"{other_pid} {os.uname().nodename}")
    old = time.time() - 3600
    os.utime(claim_path(out), (old, old))
    result = invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu", "-q")
    _refused(result, "another dip run", str(other_pid), "(its claim: .out.png.dip-claim)")
    assert "another machine" not in result.output and not out.exists()


def test_a_job_another_run_finished_meanwhile_is_not_called_failed(tmp_path: Path,
                                                                    other_pid: int,
                                                                    monkeypatch) -> None:
    """Two runs of one batch at once: the second failed the jobs the first held, and its
    summary, written last, called them failed though the first had finished them."""
    photos(tmp_path, 1)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, output: out/}\n")
    (tmp_path / "out").mkdir()
    claim = claim_path(tmp_path / "out" / "p0_denoise.png")
    claim.write_text(f"{other_pid} {os.uname().nodename}")  # the first run's
    real = batch._run_jobs

    def first_run_finishes(jobs, *args):
        rows = real(jobs, *args)  # (this one: held by the first run)
        assert [row.status for row in rows] == ["failed"]
        claim.unlink()
        assert batch.run_job(jobs[0]).status == "done"  # the first run, ending
        return rows

    monkeypatch.setattr(batch, "_run_jobs", first_run_finishes)
    result = invoke("run", path, "-q")
    assert result.exit_code == 0 and "0 done, 1 already done, 0 failed" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [job["status"] for job in summary["jobs"]] == ["skipped"]


def test_a_claim_whose_pid_another_program_took_since_is_taken_over(tmp_path: Path,
                                                                    other_pid: int) -> None:
    """A run killed with kill -9, its pid then given to another program (a container's
    pids are few): the claim held that job on every run, saying another dip was writing. A
    claim keeps its holder's start (Linux: clock ticks after boot, no clock read), and one
    whose pid started at another time is taken over; its live holder's is kept."""
    started = run._process_started(other_pid)
    if started is None:
        pytest.skip("needs Linux's /proc to tell when a process started")
    src = save(synthetic(32), tmp_path / "in.png")
    out = tmp_path / "out.png"
    claim_path(out).write_text(f"{other_pid} {os.uname().nodename} {started}")
    _refused(invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu", "-q"),
             "another dip run", str(other_pid))
    claim_path(out).write_text(f"{other_pid} {os.uname().nodename} {started - 1}")
    assert invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu",
                  "-q").exit_code == 0
    assert out.exists() and not claim_path(out).exists()
    with run.claimed(tmp_path / "mine.png"):  # and this process's own claims say its start
        assert claim_path(tmp_path / "mine.png").read_text().split(" ")[2] == str(
            run._process_started(os.getpid()))


def test_a_live_runs_claims_are_kept_fresh(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run, "CLAIM_REFRESH", 0.05)
    out = tmp_path / "out.png"
    held = run._HeldClaims()  # its own thread, at the patched pace
    monkeypatch.setattr(run, "_HELD", held)
    with run.claimed(out):
        old = time.time() - 3600
        os.utime(claim_path(out), (old, old))
        assert wait_until(lambda: time.time() - claim_path(out).stat().st_mtime < 60, 10)


def test_a_run_holds_every_file_it_writes_not_only_its_result(tmp_path: Path,
                                                               other_pid: int) -> None:
    """A run writing out_report.png as its result, beside one writing out.png with a
    report: both exited 0, and the report replaced the other's result."""
    src = save(synthetic(32), tmp_path / "in.png")
    report = tmp_path / "out_report.png"
    claim_path(report).write_text(f"{other_pid} {os.uname().nodename}")  # its result's
    _refused(invoke("denoise", src, "-o", tmp_path / "out.png", "--report", "--iters", 3,
                    "--device", "cpu", "-q"), "another dip run", "out_report.png")
    assert not (tmp_path / "out.png").exists() and not report.exists()
    assert claim_path(report).exists()  # the other run's, kept
    assert not claim_path(tmp_path / "out.png").exists()  # this run's own, let go


def test_a_folder_removed_by_a_failed_run_as_this_one_claims_is_made_again(
        tmp_path: Path, monkeypatch) -> None:
    """Two runs make out/ at once; one fails and removes it (empty: a run leaves no empty
    folders behind) before the other's claim is in it. The other made it again instead of
    failing with 'No such file or directory'."""
    real, removed = run.writable_folder, []

    def other_run_cleans_up(folder: Path, what: str, create: bool = True) -> None:
        real(folder, what, create)
        if create and folder.name == "out" and not removed:
            folder.rmdir()
            removed.append(folder)

    monkeypatch.setattr(run, "writable_folder", other_run_cleans_up)
    src = save(synthetic(32), tmp_path / "in.png")
    result = invoke("denoise", src, "-o", tmp_path / "out" / "r.png", "--iters", 3,
                    "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    assert removed and (tmp_path / "out" / "r.png").is_file()


def test_two_runs_taking_over_one_stale_claim_one_of_them_wins(tmp_path: Path,
                                                               monkeypatch) -> None:
    """Both find the claim of a killed run stale; the second must not delete the claim the
    first has just made in its place (both would then write the output). Run B finds the
    claim stale, then pauses while run A takes it over (or waits for B: it may not decide
    while B is deciding); exactly one of them may hold the output."""
    import threading

    out = tmp_path / "out.png"
    claim_path(out).write_text(f"{2 ** 22 + 12345} {os.uname().nodename}")  # a killed run's
    b_found_it_stale, a_decided, b_holds = (threading.Event() for _ in range(3))
    real = run._claim_holder

    def holder(path: Path) -> str | None:
        found = real(path)
        if threading.current_thread().name == "B" and found is None:
            b_found_it_stale.set()
            a_decided.wait(5)  # A takes the claim over now, unless it must wait for B
        return found

    monkeypatch.setattr(run, "_claim_holder", holder)
    held, refused = [], []

    def take(name: str) -> None:
        if name == "A":
            b_found_it_stale.wait(10)
        try:
            with run.claimed(out):
                held.append(name)
                (a_decided if name == "A" else b_holds).set()
                b_holds.wait(10) if name == "A" else a_decided.wait(10)
        except run.InputError as exc:
            refused.append((name, str(exc)))
            a_decided.set()

    threads = [threading.Thread(target=take, args=(n,), name=n) for n in "BA"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(held) == 1, (held, refused)
    assert [name for name, _ in refused] == [n for n in "AB" if n not in held]
    assert "another dip run" in refused[0][1]
    assert not claim_path(out).exists()

@pytest.mark.parametrize("fails", ["open", "write"])
def test_a_full_disk_at_the_claim_is_one_line_and_leaves_no_claim(tmp_path: Path, monkeypatch,
                                                                 fails: str) -> None:
    # it was a 40-line OSError traceback and an empty claim left behind
    src = save(synthetic(32), tmp_path / "in.png")
    out = tmp_path / "out.png"
    real_open, real_fdopen = os.open, os.fdopen

    def full_open(path, *args, **kwargs):
        if fails == "open" and str(path).endswith(".dip-claim"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, *args, **kwargs)

    class Full:
        def __init__(self, fd: int) -> None:
            self.file = real_fdopen(fd, "w")

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self.file.close()

        def write(self, text: str) -> None:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "open", full_open)
    if fails == "write":
        monkeypatch.setattr(os, "fdopen", lambda fd, mode="r": Full(fd))
    before = digest(tmp_path)
    result = invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu", "-q")
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert digest(tmp_path) == before and not claim_path(out).exists()


@pytest.mark.parametrize("read", ["input", "mask"])
def test_a_file_read_from_the_snapshot_folder_is_never_a_snapshot(tmp_path: Path,
                                                                   read: str) -> None:
    # --overwrite clears and rewrites the folder's step_*.png: the input named
    # step_000002.png was replaced by the run's own second snapshot
    steps = tmp_path / "s_steps"
    steps.mkdir()
    src = save(synthetic(32), (steps if read == "input" else tmp_path) / "step_000002.png")
    mask = tmp_path / "step_000002_mask.png"
    Image.fromarray(np.pad(np.full((8, 8), 255, np.uint8), 12)).save(
        steps / mask.name if read == "mask" else mask)
    mask = steps / mask.name if read == "mask" else mask
    before = digest(tmp_path)
    _refused(invoke("inpaint", src, "--mask", mask, "-o", tmp_path / "s.png", "--iters", 3,
                    "--save-every", 1, "--overwrite", "--device", "cpu", "-q"),
             "is in the snapshot folder")
    assert digest(tmp_path) == before


def test_two_dips_writing_one_output_the_second_fails_with_one_line(
        tmp_path: Path, spawn_dip, slowness: float) -> None:
    src = save(synthetic(32), tmp_path / "in.png")
    out = tmp_path / "out.png"
    first = spawn_dip("denoise", src, "-o", out, "--iters", 100000, "--stop", "fixed",
                      "--device", "cpu", "-q", "--save-every", 5)
    staged = tmp_path / ".out.png.steps.dip-new"
    assert wait_until(staged.is_dir, 120 * slowness, first)
    _refused(invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu", "-q"),
             "another dip run")
    first.terminate()
    first.communicate(timeout=60 * slowness)
    assert json.loads(Path(f"{out}.json").read_text())["stop_reason"] == "interrupted"


# --- 10: leftovers of a kill ------------------------------------------------------------------

def test_leftover_part_files_are_cleaned_by_a_single_run(tmp_path: Path) -> None:
    src = save(synthetic(32), tmp_path / "in.png")
    out = tmp_path / "out.png"
    for stale in (".out.png.x1y2z3w4.part", ".out.png.json.a8b9c0d_.part"):
        (tmp_path / stale).write_bytes(b"half a file")
    assert invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu",
                  "-q").exit_code == 0
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*.part"))


def test_an_input_named_like_a_leftover_is_never_cleaned_away(tmp_path: Path) -> None:
    """Only mkstemp's own names (8 random letters) are a killed run's leftovers."""
    # (8 letters, as mkstemp's own: kept as the run's input)
    src = save(synthetic(32), tmp_path / "in.png").rename(tmp_path / ".out.png.original.part")
    assert invoke("denoise", src, "-o", tmp_path / "out.png", "--iters", 3, "--device", "cpu",
                  "-q").exit_code == 0
    assert src.is_file() and (tmp_path / "out.png").is_file()


def test_a_kill_between_the_renames_with_overwrite_never_leaves_the_old_image(
        tmp_path: Path, monkeypatch) -> None:
    src = save(synthetic(32), tmp_path / "in.png")
    out = tmp_path / "out.png"
    out.write_bytes(b"an old result")
    real = os.replace

    def killed_before_the_image(a, b):
        if str(b).endswith(".png"):
            raise OSError("killed")
        return real(a, b)

    monkeypatch.setattr(os, "replace", killed_before_the_image)
    invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu", "-q", "--overwrite")
    assert not out.exists()  # a new record may stand alone (redone later), never beside it


#: ``dip`` that kills itself (SIGKILL, as ``kill -9`` would) right after renaming a file whose
#: name ends with $KILL_AFTER into place (a script file: a batch's worker processes run it too)
_KILLED_AFTER = """
import os, signal, sys
real = os.replace
def replace(a, b, *args, **kwargs):
    real(a, b, *args, **kwargs)
    if str(b).endswith(os.environ["KILL_AFTER"]):
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from dip.cli.entry import main
if __name__ == "__main__":
    sys.argv[0] = "dip"
    sys.exit(main())
"""


@pytest.mark.parametrize("renamed, extra", [
    ("_report.png", ", save_every: 1"),  # pictures before their record: a stranger's files
    ("_steps/step_000002.png", ", save_every: 1"),  # snapshots half moved: lost, "done"
    ("p0_denoise.png", ""),  # the result in place, its claims not let go: never removed
])
def test_a_batch_killed_between_two_renames_finishes_on_its_rerun(tmp_path: Path, renamed: str,
                                                                  extra: str) -> None:
    import subprocess
    import sys

    photos(tmp_path)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: out/, "
                                f"report: true{extra}}}\n")
    script = tmp_path / "killed_dip.py"
    script.write_text(_KILLED_AFTER)
    killed = subprocess.run([sys.executable, script, "run", path, "-q"], capture_output=True,
                            env={**os.environ, "KILL_AFTER": renamed})
    assert killed.returncode != 0 and not (tmp_path / "out" / "summary.csv").exists()
    result = invoke("run", path, "-q", "--workers", "1")
    assert result.exit_code == 0 and "0 failed" in result.output, result.output
    out = tmp_path / "out"
    left = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert not left  # no claim, no staged snapshots, no temporary file
    for stem in ("p0", "p1"):
        assert (out / f"{stem}_denoise_report.png").is_file()
        if extra:
            assert len(list((out / f"{stem}_denoise_steps").glob("step_*.png"))) == 3


@pytest.mark.parametrize("left", ["a later run's snapshot", "a file of the system's"])
def test_a_staged_folder_not_of_the_results_own_fit_leaves_it_done(tmp_path: Path,
                                                                    left: str) -> None:
    """A run with --overwrite killed while it fitted leaves its staged snapshots, newer than
    the result's record; a file manager leaves its own files (.DS_Store). Neither is a
    move cut short: the job is done (such a folder redid it, once or on every rerun)."""
    photos(tmp_path, 1)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: out/, "
                                "save_every: 1}\n")
    assert invoke("run", path, "-q").exit_code == 0
    staged = tmp_path / "out" / ".p0_denoise.png.steps.dip-new"
    staged.mkdir()
    if left == "a later run's snapshot":
        later = time.time() + 5
        (staged / "step_000001.png").write_bytes(b"x")
        os.utime(staged / "step_000001.png", (later, later))
    else:
        (staged / ".DS_Store").write_bytes(b"x")
    result = invoke("run", path, "-q")
    assert result.exit_code == 0 and "0 done, 1 already done" in result.output, result.output


# --- the summary's place is checked before any job runs --------------------------------------

def _ran_nothing(tmp_path: Path) -> bool:
    return not list(tmp_path.glob("out/*_denoise.png*"))


def test_a_summary_name_with_no_room_for_its_temporary_name_is_refused_before_any_job(
        tmp_path: Path) -> None:
    """A name of 249 bytes is valid, but not the 265 of the temporary name of its .json (before:
    every job ran, then 'could not write the summary ... File name too long', and an empty
    folder of the summary's was left)."""
    photos(tmp_path)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: out/}\n")
    for name in ("s" * 245, "s" * 300):
        result = invoke("run", path, "-q", "--summary", tmp_path / "sum" / f"{name}.csv")
        _refused(result, "is too long", "--summary", "at most 239 bytes")
        assert not (tmp_path / "sum").exists() and _ran_nothing(tmp_path)
    fits = tmp_path / "sum" / f"{'s' * 235}.csv"
    result = invoke("run", path, "-q", "--summary", fits)
    assert result.exit_code == 0 and fits.is_file(), result.output


@pytest.mark.parametrize("summary", ["/proc/dip-summary.csv", "/sys/kernel/dip-summary.csv"])
def test_a_summary_folder_that_takes_no_file_is_refused_before_any_job(tmp_path: Path,
                                                                      summary: str) -> None:
    """os.access says root may write in /proc and /sys; creating a file there fails."""
    if not Path(summary).parent.is_dir():
        pytest.skip(f"no {Path(summary).parent} here")
    photos(tmp_path)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: out/}\n")
    result = invoke("run", path, "-q", "--summary", summary)
    _refused(result, str(Path(summary).parent))
    assert _ran_nothing(tmp_path)


def test_a_refused_summary_folder_is_not_left_behind(tmp_path: Path, monkeypatch) -> None:
    summary = tmp_path / "kept" / "a" / "b" / "s.csv"
    monkeypatch.setattr(run, "_refused_file", lambda folder: PermissionError(
        13, "Permission denied") if folder == summary.parent else None)
    (tmp_path / "kept").mkdir()
    photos(tmp_path)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: out/}\n")
    result = invoke("run", path, "-q", "--summary", summary)
    _refused(result, f"cannot write to the folder {summary.parent}")
    assert list((tmp_path / "kept").iterdir()) == [] and _ran_nothing(tmp_path)


# --- 16: a full disk at the summary ---------------------------------------------------------------

@pytest.mark.parametrize("error, said", [
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
    (MemoryError(), "out of memory"),  # (under ulimit -v: a traceback from the csv module)
])
def test_a_full_disk_at_the_summary_is_one_line_and_the_results_stay(
        tmp_path: Path, monkeypatch, error: BaseException, said: str) -> None:
    folder = photos(tmp_path)
    before = digest(folder)

    def full(*args, **kwargs):
        raise error

    monkeypatch.setattr(batch, "write_summary", full)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: out/}\n")
    result = invoke("run", path, "-q")
    assert result.exit_code == 1 and said in result.output
    assert "Traceback" not in result.output
    assert len(list((tmp_path / "out").glob("*_denoise.png"))) == 2
    assert digest(folder) == before


@pytest.mark.parametrize("error", [OSError(errno.EFBIG, "File too large"),
                                   ValueError("encoder error -2")])
def test_a_summary_that_cannot_be_written_whole_leaves_the_last_one_whole(
        tmp_path: Path, monkeypatch, error: Exception) -> None:
    """The contact sheet fails (a file size limit, Pillow's encoder): the table and its JSON
    are not replaced either, and the last line names no summary (before: a new table beside
    the last run's sheet, and 'summary: ...csv, ...json, ...png' under the error)."""
    from dip import report

    folder = photos(tmp_path)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: out/}\n")
    assert invoke("run", path, "-q").exit_code == 0
    out = tmp_path / "out"
    before = digest(out)
    save(synthetic(32), folder / "p9.png")  # a new photo: the summary would change

    class TooLarge:  # the sheet drawn, its PNG not written
        def save(self, *args, **kwargs):
            raise error

    monkeypatch.setattr(report, "contact_sheet", lambda rows: TooLarge())
    result = invoke("run", path, "-q")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert f"could not write the summary beside {out / 'summary.csv'}: {error.args[-1]}" \
        in result.output
    assert "1 done, 2 already done, 0 failed\n" in result.output  # and no "summary: ..."
    assert "summary.csv," not in result.output
    now = digest(out)
    assert {name: now[name] for name in ("summary.csv", "summary.json", "summary.png")} == {
        name: before[name] for name in ("summary.csv", "summary.json", "summary.png")}
    assert not list(out.glob(".summary*"))  # no temporary file left


# --- 5: Ctrl-C while the report is drawn ------------------------------------------------------

def test_ctrl_c_while_the_report_is_drawn_keeps_the_finished_result(tmp_path: Path,
                                                                    monkeypatch) -> None:
    """The result was complete: it is written with its record and report, then the run stops
    with 130 (before: exit 130 and nothing at all)."""
    import signal

    from dip import report

    real = report.render_report

    def interrupted_while_drawing(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C arrives mid-drawing
        return real(*args, **kwargs)

    monkeypatch.setattr(report, "render_report", interrupted_while_drawing)
    src = save(synthetic(32), tmp_path / "in.png")
    out = tmp_path / "out.png"
    # Ctrl-C as a terminal delivers it, even when the tests run as a script's background job
    # (which starts with SIGINT ignored: the command then rightly ran on and exited 0)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu", "-q",
                        "--report")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 130, result.output
    # ... and says so (it said only "interrupted", as if nothing were written)
    assert f"interrupted after the finished result was written: {out}" in result.output
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["stop_reason"] == "budget" and record["iterations"] == 3
    assert out.is_file() and (tmp_path / "out_report.png").is_file()


# --- strict JSON in the summary too ----------------------------------------------------------

def test_the_summary_json_is_strict_with_a_reason_for_each_null(tmp_path: Path) -> None:
    """A result identical to its reference has an infinite PSNR: the summary says null and
    why, as the records do (strict parsers reject NaN and Infinity)."""
    rows = [batch.Row("batch.yaml:3", "denoise", "a.png", "a_denoise.png", "done",
                      psnr=float("inf"), ssim=1.0),
            batch.Row("batch.yaml:3", "denoise", "b.png", "b_denoise.png", "done",
                      psnr=float("nan"))]
    csv_path, json_path = tmp_path / "summary.csv", tmp_path / "summary.json"
    batch.write_summary(rows, csv_path, json_path)
    data = json.loads(json_path.read_text(),
                      parse_constant=lambda c: pytest.fail(f"{c} in the summary"))
    assert [job["psnr"] for job in data["jobs"]] == [None, None]
    assert "identical" in data["null_because"]["jobs[0].psnr"]
    assert "jobs[1].psnr" in data["null_because"]
    assert data["counts"]["done"] == 2


# --- batch files are YAML without aliases -----------------------------------------------------

def test_a_batch_file_with_aliases_is_refused_in_one_line(tmp_path: Path) -> None:
    photos(tmp_path)
    path = tmp_path / "batch.yaml"
    path.write_text("defaults: &d {task: denoise, iters: 3}\n"
                    "jobs:\n  - {<<: *d, input: photos/p0.png, output: out/}\n"
                    "  - {task: denoise, input: photos/p1.png, output: out/, set: *d}\n")
    result = invoke("run", path, "--dry-run")
    _refused(result, "aliases")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("job", ["{task: denoise, input: photos/p0.png, output: out/LONG.png}",
                                 "{task: denoise, input: photos/LONG.png}",
                                 "{task: denoise, input: LONG/*.png}",
                                 "{task: denoise, input: photos/p0.png, config: LONG.yaml}"])
def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path: Path, job: str) -> None:
    """A 5000-character name in a job: one short line naming it (cut in the middle), not an
    OSError's traceback; nothing written."""
    folder = photos(tmp_path)
    before = digest(folder)
    path = batch_file(tmp_path, "  - " + job.replace("LONG", "x" * 5000) + "\n")
    result = invoke("run", path, "-q")
    assert result.exit_code in (1, 2) and not isinstance(result.exception, OSError), \
        repr(result.exception)[:2000]
    lines = [line for line in result.output.splitlines() if line.startswith("dip:")]
    assert lines and all(len(line) < 600 for line in lines), result.output[:3000]
    # a glob of a name too long matches nothing, which is what it says
    assert any("too long" in line or "matches no image" in line for line in lines), lines
    assert digest(folder) == before and not (tmp_path / "out").exists()


def test_a_folders_photo_whose_result_name_is_too_long_fails_alone(tmp_path: Path) -> None:
    """A photo's name that fits, whose result's does not (the stem and ``_denoise.png``
    over 255 bytes): once the output folder existed, asking whether that job was done
    raised the file system's 'File name too long' with a traceback, in --dry-run and in the
    run, and no job ran."""
    folder = photos(tmp_path, 1)
    long = folder / ("写" * 82 + ".png")  # 246 bytes; its result's name 258
    long.write_bytes((folder / "p0.png").read_bytes())
    (tmp_path / "out").mkdir()
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/, output: out/}\n")
    for args in (["--dry-run"], ["-q"]):
        result = invoke("run", path, *args)
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert not isinstance(result.exception, OSError), repr(result.exception)
        assert "is too long (258 bytes)" in result.output
    assert (tmp_path / "out" / "p0_denoise.png").exists()


def test_a_jobs_paths_starting_with_a_tilde_are_in_the_home_folder(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """Nothing expands a YAML file's ``~`` as the shell does a command's: ``output: ~/res/``
    made a folder named ``~`` beside the batch file (which a later ``rm -rf ~`` meant for it
    would take as the home folder), and ``input: ~/photos/`` was not found."""
    home = tmp_path / "home [1]"  # a glob's home is not part of its pattern
    monkeypatch.setenv("HOME", str(home))
    home.mkdir()
    photos(home)
    (home / "c.yaml").write_text("optim: {lr: 0.005}\n")
    work = tmp_path / "work"
    work.mkdir()
    path = batch_file(work, "  - {task: denoise, input: ~/photos/, output: ~/res/, "
                            "config: [~/c.yaml]}\n  - {task: denoise, input: '~/photos/p0.png', "
                            "reference: ~/photos/p1.png, output: ~/one.png}\n"
                            "  - {task: denoise, input: '~/photos/p*.png', output: ~/glob/}\n")
    result = invoke("run", path, "-q")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (home / "res").glob("*.png")) == ["p0_denoise.png",
                                                                     "p1_denoise.png"]
    assert (home / "one.png").exists() and not (work / "~").exists()
    assert len(list((home / "glob").glob("p*_denoise.png"))) == 2
    rec = json.loads((home / "res" / "p0_denoise.png.json").read_text())
    assert rec["config"]["optim"]["lr"] == 0.005


def test_a_job_never_writes_over_a_users_file_beside_a_result_not_yet_made(
        tmp_path: Path) -> None:
    """A job whose result did not exist yet ran as with --overwrite: a user's picture where
    its report, uncertainty map or GIF goes, or their JSON where its record goes, was
    replaced without a word (exit 0)."""
    folder = photos(tmp_path, 3)
    out = tmp_path / "out"
    out.mkdir()
    theirs = {out / "p0_denoise_report.png": b"their report", out / "p1_denoise.gif": b"gif",
              out / "p2_denoise.png.json": b'{"mine": 1}'}
    for path, data in theirs.items():
        path.write_bytes(data)
    jobs = ("  - {task: denoise, input: photos/p0.png, output: out/, report: true}\n"
            "  - {task: denoise, input: photos/p1.png, output: out/, gif: true}\n"
            "  - {task: denoise, input: photos/p2.png, output: out/}\n")
    before = digest(folder)
    # the dry run says so first
    dry = invoke("run", batch_file(tmp_path, jobs), "--dry-run")
    assert dry.exit_code == 1 and dry.output.count("already exists") == 3, dry.output
    assert dry.output.strip().endswith("3 would fail")
    result = invoke("run", batch_file(tmp_path, jobs), "-q", "--pack", 1)
    assert result.exit_code == 1, result.output
    assert result.output.count("already exists") == 3, result.output
    assert all(path.read_bytes() == data for path, data in theirs.items())
    assert not list(out.glob("p?_denoise.png")) and digest(folder) == before
    # --overwrite is the user's word that they may go
    again = invoke("run", batch_file(tmp_path, jobs), "-q", "--pack", 1, "--overwrite")
    assert again.exit_code == 0, again.output
    assert len(list(out.glob("p?_denoise.png"))) == 3


def test_a_users_file_beside_dips_earlier_result_is_kept(tmp_path: Path) -> None:
    """dip's earlier result for other settings is redone without --overwrite; a picture of
    the user's where the new run's report goes is not that result's, and stays."""
    photos(tmp_path, 1)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, output: out/}\n")
    assert invoke("run", path, "-q").exit_code == 0
    (tmp_path / "out" / "p0_denoise_report.png").write_bytes(b"their report")
    path.write_text(path.read_text().replace("iters: 3", "iters: 4").replace(
        "output: out/}", "output: out/, report: true}"))
    result = invoke("run", path, "-q")
    assert result.exit_code == 1 and "is not dip's earlier result's" in result.output
    assert (tmp_path / "out" / "p0_denoise_report.png").read_bytes() == b"their report"


def test_a_job_whose_input_link_now_points_at_another_picture_is_redone(
        tmp_path: Path) -> None:
    """The record names the link's target; repointed, the picture under the job's name is
    another one, which redoes the job (it was refused as a result of another picture)."""
    folder = photos(tmp_path)
    save(synthetic(32).flip(-1), folder / "p1.png")
    (tmp_path / "latest.png").symlink_to(folder / "p0.png")
    path = batch_file(tmp_path, "  - {task: denoise, input: latest.png, output: out/}\n")
    assert invoke("run", path, "-q").exit_code == 0
    (tmp_path / "latest.png").unlink()
    (tmp_path / "latest.png").symlink_to(folder / "p1.png")
    result = invoke("run", path, "-q")
    assert result.exit_code == 0 and "1 done" in result.output, result.output
    rec = json.loads((tmp_path / "out" / "latest_denoise.png.json").read_text())
    assert rec["input"] == str(folder / "p1.png")


def test_a_redo_without_snapshots_keeps_those_of_a_result_of_the_same_stem(
        tmp_path: Path) -> None:
    """r.png and r.jpg share r_steps/: r.jpg's redo (other settings), which takes no
    snapshots and whose earlier run took none, deleted r.png's, and the batch then took
    r.png for done without them; a user's own step_*.png there went the same way."""
    photos(tmp_path)
    jobs = ("  - {task: denoise, input: photos/p0.png, output: out/r.png, save_every: 1}\n"
            "  - {task: denoise, input: photos/p1.png, output: out/r.jpg}\n")
    path = batch_file(tmp_path, jobs)
    assert invoke("run", path, "-q").exit_code == 0
    steps = tmp_path / "out" / "r_steps"
    before = digest(steps)
    assert len(before) == 3
    path.write_text(path.read_text().replace("output: out/r.jpg}", "output: out/r.jpg, "
                                                                   "iters: 4}"))
    result = invoke("run", path, "-q")
    assert result.exit_code == 0 and "1 done, 1 already done" in result.output, result.output
    assert digest(steps) == before


def test_a_result_of_another_picture_is_not_replaced_without_overwrite(
        tmp_path: Path) -> None:
    """A result the user made by one command from another photo, where a job's goes: its
    record said dip made it, and the job replaced it without a word (the command itself
    refuses that); a result of the job's own photo is still redone."""
    save(synthetic(32).flip(-1), photos(tmp_path) / "p1.png")  # (not p0's bytes)
    out = tmp_path / "results" / "p0_denoise.png"
    made = invoke("denoise", tmp_path / "photos" / "p1.png", "-o", out, "--iters", 3,
                  "--device", "cpu", "-q", "--set", "stop.sigma=5")
    assert made.exit_code == 0, made.output
    before = digest(tmp_path / "results")
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png}\n")
    for dry in (["--dry-run"], []):
        result = invoke("run", path, "-q", *dry)
        assert result.exit_code == 1, result.output
        assert "already exists: dip's result of another picture" in result.output
        assert "p1.png; move it, or use --overwrite to replace it" in result.output
    assert {k: v for k, v in digest(tmp_path / "results").items()
            if not k.startswith("summary")} == before
    assert invoke("run", path, "-q", "--overwrite").exit_code == 0
    path.write_text(path.read_text().replace("iters: 3", "iters: 4"))  # its own: redone
    result = invoke("run", path, "-q")
    assert result.exit_code == 0 and "1 done" in result.output, result.output


def test_a_result_whose_record_was_cut_short_is_said_so(tmp_path: Path) -> None:
    """Its job said only "already exists; use --overwrite", as of a user's picture."""
    photos(tmp_path, 1)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, output: out/}\n")
    assert invoke("run", path, "-q").exit_code == 0
    rec = tmp_path / "out" / "p0_denoise.png.json"
    rec.write_text(rec.read_text()[:100])
    path.write_text(path.read_text().replace("iters: 3", "iters: 4"))
    result = invoke("run", path, "-q")
    assert result.exit_code == 1
    assert ("p0_denoise.png already exists (its record p0_denoise.png.json cannot be read as "
            "one: cut short?); use --overwrite to replace it") in result.output
    rec.write_text('{"title": "a photo service\'s sidecar"}')  # JSON, and no record
    result = invoke("run", path, "-q")
    assert result.exit_code == 1 and "p0_denoise.png already exists; use --overwrite to " \
        "replace it" in result.output


def test_an_overwrite_that_cannot_write_keeps_the_old_result(tmp_path: Path,
                                                              monkeypatch) -> None:
    """The old image was removed before the new files were written: a full disk left its
    record, report and GIF beside no image."""
    src = save(synthetic(32), tmp_path / "in.png")
    out = tmp_path / "out.png"
    assert invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu",
                  "-q").exit_code == 0
    before = digest(tmp_path)
    real = run.image.image_writer

    def full(picture, path):
        write = real(picture, path)

        def writer(f) -> None:
            write(f)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return writer

    monkeypatch.setattr(run.image, "image_writer", full)
    result = invoke("denoise", src, "-o", out, "--iters", 4, "--device", "cpu", "-q",
                    "--overwrite")
    assert result.exit_code == 1 and "No space left on device" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert digest(tmp_path) == before  # the old image and record, and no leftover


def test_a_result_too_wide_for_its_format_is_refused_before_the_fit(tmp_path: Path) -> None:
    """It was a traceback from the WebP encoder, after the whole fit."""
    src = tmp_path / "wide.png"
    Image.fromarray(np.zeros((8, 16400, 3), np.uint8)).save(src)
    result = invoke("denoise", src, "-o", tmp_path / "r.webp", "--iters", 1, "--device", "cpu")
    _refused(result, "WEBP holds images up to 16383 pixels a side", "16400x8", ".png")
    assert not (tmp_path / "r.webp").exists()


@pytest.mark.parametrize("command", ["denoise", "corrupt", "run"])
def test_a_loop_of_symbolic_links_where_the_output_goes_is_one_line(tmp_path: Path,
                                                                    command: str) -> None:
    """Python 3.11's resolve() raises RuntimeError for it: a traceback, exit 1."""
    src = save(synthetic(32), tmp_path / "in.png")
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    out = tmp_path / "l1" / "r.png"
    if command == "run":
        result = invoke("run", batch_file(tmp_path, f"  - {{task: denoise, input: in.png, "
                                                    f"output: {out}}}\n"), "-q")
    else:
        damage = ["--noise", 5] if command == "corrupt" else ["--iters", 3, "--device", "cpu"]
        result = invoke(command, src, "-o", out, *damage)
    _refused(result, "a loop of symbolic links")


def test_an_empty_output_is_refused(tmp_path: Path) -> None:
    src = save(synthetic(32), tmp_path / "in.png")
    _refused(invoke("denoise", src, "-o", "", "--iters", 3), "names no file")
    path = batch_file(tmp_path, "  - {task: denoise, input: in.png, output: ''}\n")
    _refused(invoke("run", path, "-q"), "'output' is empty")
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".png"] == ["in.png"]


def test_an_output_ending_with_a_separator_is_a_folders_name_not_a_file(tmp_path: Path) -> None:
    """-o out.png/ wrote out.png: Path() drops the slash."""
    src = save(synthetic(32), tmp_path / "in.png")
    _refused(invoke("denoise", src, "-o", f"{tmp_path / 'out.png'}/", "--iters", 3),
             "ends with a separator, as a folder's name does; give a file name such as")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]


def test_an_output_that_is_the_input_under_another_name_is_refused(tmp_path: Path) -> None:
    """The same file by another name: a hard link here, as Photo.png is photo.png where
    names ignore case (macOS, Windows), which the names' comparison let through."""
    src = save(synthetic(32), tmp_path / "in.png")
    os.link(src, tmp_path / "same.png")
    before = src.read_bytes()
    _refused(invoke("denoise", src, "-o", tmp_path / "same.png", "--overwrite", "--iters", 3,
                    "--device", "cpu"), "one of the run's input files")
    assert src.read_bytes() == before


def test_symbolic_links_to_nothing_where_the_output_goes(tmp_path: Path) -> None:
    src = save(synthetic(32), tmp_path / "in.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    (tmp_path / "dangdir").symlink_to(tmp_path / "nofolder")
    cpu = ["--iters", 3, "--device", "cpu"]
    # a link is a file of the user's: kept without --overwrite
    _refused(invoke("denoise", src, "-o", tmp_path / "dangling.png", *cpu), "already exists")
    assert (tmp_path / "dangling.png").is_symlink()
    # a folder that cannot be made is found before the fit, not after it
    _refused(invoke("denoise", src, "-o", tmp_path / "dangdir" / "r.png", *cpu),
             "is a symbolic link to nothing")


@pytest.mark.parametrize("name", ["out.png", "out.png.json"])
def test_a_file_that_appears_beside_the_result_while_dip_runs_is_kept(tmp_path: Path,
                                                                      name: str) -> None:
    """Only the result's own path was looked at again before the renames: a record of the
    user's made meanwhile was replaced without --overwrite."""
    import dip
    from dip.errors import RunError

    src = save(synthetic(16), tmp_path / "in.png")
    out = tmp_path / "out.png"
    theirs = tmp_path / name

    def meanwhile(progress) -> None:
        theirs.write_text("mine")

    with pytest.raises(RunError, match=f"{name} appeared while dip was running"):
        dip.restore("denoise", src, output=out, iters=2, device="cpu", progress=meanwhile,
                    overrides=("optim.restarts=1",))
    assert theirs.read_text() == "mine"
    assert not (tmp_path / "out.png.json").exists() or name == "out.png.json"
    assert out.read_text() == "mine" if name == "out.png" else not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_a_link_to_nothing_beside_dips_earlier_result_is_the_users(tmp_path: Path) -> None:
    photos(tmp_path, 1)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, output: out/}\n")
    assert invoke("run", path, "-q").exit_code == 0
    link = tmp_path / "out" / "p0_denoise_report.png"
    link.symlink_to(tmp_path / "nowhere.png")
    path.write_text(path.read_text().replace("iters: 3", "iters: 4").replace(
        "output: out/}", "output: out/, report: true}"))
    result = invoke("run", path, "-q")
    assert result.exit_code == 1 and "is not dip's earlier result's" in result.output
    assert link.is_symlink() and not link.exists()


def test_a_job_refused_in_a_pack_fails_alone(tmp_path: Path) -> None:
    photos(tmp_path, 2)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: out/}\n")
    assert invoke("run", path, "-q", "--pack", 2).exit_code == 0
    (tmp_path / "out" / "p0_denoise_report.png").write_bytes(b"their report")
    path.write_text(path.read_text().replace("iters: 3", "iters: 4").replace(
        "output: out/}", "output: out/, report: true}"))
    result = invoke("run", path, "-q", "--pack", 2)
    assert result.exit_code == 1 and result.output.count("is not dip's earlier") == 1
    assert json.loads((tmp_path / "out" / "p1_denoise.png.json").read_text())[
        "iterations"] == 4  # the other job, redone
    assert (tmp_path / "out" / "p0_denoise_report.png").read_bytes() == b"their report"


# --- workers that cannot be started ------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="resource limits of a child (POSIX)")
def test_workers_that_cannot_be_started_are_one_line_and_the_jobs_not_run_fail(
        tmp_path: Path, slowness: float) -> None:
    """Too few file descriptors for the pool's processes (ulimit -n 12): before, a traceback
    and no summary. Now one line says why and what to do, the summary lists every job, the
    jobs that did not run failed, exit 1; a rerun with the limit raised runs them."""
    files = 12
    import resource
    import subprocess

    from conftest import dip_command

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (files, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    photos(tmp_path, 3)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: out/}\n")
    args = dip_command() + ["run", str(path), "-q", "--workers", "2", "--devices", "cpu"]
    result = subprocess.run(args, preexec_fn=few_files, capture_output=True, text=True,
                            timeout=300 * slowness)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines() == [
        "dip: error: could not start the worker processes: Too many open files; raise the "
        "limit of open files (ulimit -n) or use fewer --workers"], result.stderr
    jobs = json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]
    assert len(jobs) == 3
    assert all(job["status"] == "failed" and job["error"].startswith("not run")
               for job in jobs if job["status"] != "done")
    not_run = [job for job in jobs if job["status"] == "failed"]
    assert not_run and not any(Path(job["output"]).exists() for job in not_run)
    again = invoke("run", path, "-q", "--workers", "2", "--devices", "cpu")
    assert again.exit_code == 0 and f"{len(not_run)} done" in again.output, again.output


def test_a_second_worker_that_cannot_be_started_runs_no_job_of_the_pool(tmp_path: Path,
                                                                        monkeypatch) -> None:
    """The first worker started, the second did not (what ulimit -n 20 did): before, a
    traceback from pool.submit, the two jobs handed to the pool (the one whose worker failed
    was queued all the same) ran in the first worker, the third never, and no summary. Now
    no job of the pool starts, and each is in the summary as not run."""
    from concurrent.futures import ProcessPoolExecutor

    real, started = ProcessPoolExecutor._spawn_process, []

    def spawn(pool) -> None:
        if started:
            raise OSError(errno.EMFILE, "Too many open files")
        started.append(real(pool))

    monkeypatch.setattr(ProcessPoolExecutor, "_spawn_process", spawn)
    photos(tmp_path, 3)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: out/}\n")
    result = invoke("run", path, "-q", "--workers", "2", "--devices", "cpu")
    assert result.exit_code == 1 and started, result.output
    assert "Traceback" not in result.output
    assert result.output.count("could not start the worker processes: Too many open files; "
                               "raise the limit of open files (ulimit -n) or use fewer "
                               "--workers") == 1
    jobs = json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]
    assert [job["status"] for job in jobs] == ["failed"] * 3
    assert all(job["error"].startswith("not run") for job in jobs)
    assert _ran_nothing(tmp_path)


@pytest.mark.parametrize("fails", ["add_call_item_to_queue", "start"])
def test_a_pool_whose_own_thread_cannot_run_ends_the_batch_in_one_line(
        tmp_path: Path, monkeypatch, slowness: float, fails: str) -> None:
    """Under a limit on threads or memory the pool's thread died starting another ("can't
    start new thread", a traceback on stderr) and the batch waited for ever, SIGTERM too; or
    it could not start itself, and the pool's shutdown raised 'cannot join thread before it
    is started', a traceback, with a worker left running."""
    import threading
    from concurrent.futures import process

    def no_thread(self) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(process._ExecutorManagerThread, fails, no_thread)
    photos(tmp_path, 2)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: out/}\n")
    ended: list = []
    runner = threading.Thread(target=lambda: ended.append(
        invoke("run", path, "-q", "--workers", "2", "--devices", "cpu")), daemon=True)
    runner.start()
    runner.join(120 * slowness)
    assert ended, "the batch never ended"
    result = ended[0]
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "0 done, 0 already done, 2 failed" in \
        result.output
    assert result.output.count("dip: error: could not start the worker processes: can't start "
                               "new thread; use fewer --workers") == 1, result.output
    jobs = json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]
    assert [job["status"] for job in jobs] == ["failed"] * 2


# --- a pipe or a device where a file is written ---------------------------------------------------

def _special(path: Path, kind: str) -> None:
    if kind == "pipe":
        os.mkfifo(path)
        return
    if not hasattr(os, "mknod"):
        pytest.skip("device nodes")
    try:  # a copy of /dev/null under the output's name
        os.mknod(path, stat.S_IFCHR | 0o644, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("making a device node needs root")


def _dip(slowness: float, *args: Any) -> subprocess.CompletedProcess:
    """A dip process (a hang ends the test, where a run in this process would end the suite)."""
    from conftest import dip_command

    return subprocess.run(dip_command() + [str(a) for a in args], capture_output=True,
                          text=True, timeout=120 * slowness)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
@pytest.mark.parametrize("kind", ["pipe", "device"])
@pytest.mark.parametrize("name", ["out.png", "out.png.json"])
def test_a_pipe_or_a_device_where_a_file_goes_is_refused_not_replaced(
        tmp_path: Path, slowness: float, kind: str, name: str) -> None:
    """Each file is written anew and renamed into its place: --overwrite replaced a pipe, or a
    device node named out.png, with a regular file; a pipe named as the record hung the run
    (reading it, to see whether it was dip's, waited for a writer for ever)."""
    src = save(synthetic(32), tmp_path / "in.png")
    special = tmp_path / name
    _special(special, kind)
    commands = [["denoise", src, "--iters", 2, "--device", "cpu"], ["corrupt", src, "--noise", 5]]
    for command in commands[:1 if name.endswith(".json") else 2]:  # (corrupt writes no record)
        result = _dip(slowness, *command, "-o", tmp_path / "out.png", "--overwrite")
        assert result.returncode == 2, result.stderr
        assert result.stderr.splitlines() == [
            f"dip: error: {special} is not a regular file (a pipe or a device?); choose "
            f"another output"], result.stderr
        assert not stat.S_ISREG(special.lstat().st_mode)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_pipe_named_as_the_summary_is_kept_and_said(tmp_path: Path, slowness: float) -> None:
    photos(tmp_path, 1)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/*, output: out/}\n")
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out" / "summary.csv")
    result = _dip(slowness, "run", path, "-q")
    assert result.returncode == 2, result.stderr
    assert "summary.csv exists and dip did not write it; it is kept" in result.stderr
    assert stat.S_ISFIFO((tmp_path / "out" / "summary.csv").lstat().st_mode)


# --- 11: a result the user changed, and files the run reads beside the one it replaces ----------

def test_a_result_retouched_by_hand_is_not_replaced_by_a_rerun_with_other_settings(
        tmp_path: Path) -> None:
    """Its record alone said it was dip's: a batch whose settings changed replaced the
    user's edit of it without a word."""
    photos(tmp_path, 1)
    path = batch_file(tmp_path, "  - {task: denoise, input: photos/p0.png, output: out/x.png}\n")
    assert invoke("run", path, "-q").exit_code == 0
    out = tmp_path / "out" / "x.png"
    written = json.loads((tmp_path / "out" / "x.png.json").read_text())["fingerprints"]
    assert written["output"] == "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    save(1 - synthetic(32), out)  # retouched, saved in place
    edited = out.read_bytes()
    path.write_text(path.read_text().replace("iters: 3", "iters: 4"))
    result = invoke("run", path, "-q")
    assert result.exit_code == 1 and "was changed since dip wrote it" in result.output
    assert out.read_bytes() == edited
    assert invoke("run", path, "-q", "--overwrite").exit_code == 0  # as asked
    assert out.read_bytes() != edited


def test_a_retouched_report_of_the_replaced_result_is_kept(tmp_path: Path) -> None:
    """A rerun without a report deletes the replaced result's own, not one edited since."""
    pytest.importorskip("matplotlib")
    src = save(synthetic(32), tmp_path / "in.png")
    out, report = tmp_path / "out.png", tmp_path / "out_report.png"
    run_it = ("denoise", src, "-o", out, "--iters", 2, "--device", "cpu", "-q", "--overwrite")
    assert invoke(*run_it, "--report").exit_code == 0
    report.write_bytes(report.read_bytes() + b" annotated")
    assert invoke(*run_it).exit_code == 0
    assert report.read_bytes().endswith(b" annotated")


@pytest.mark.filterwarnings("ignore:mask .* grey pixels")
def test_overwrite_never_deletes_the_old_results_uncertainty_map_read_as_the_mask(
        tmp_path: Path) -> None:
    src = save(synthetic(32), tmp_path / "in.png")
    out, spread = tmp_path / "out.png", tmp_path / "out_uncertainty.png"
    assert invoke("denoise", src, "-o", out, "--iters", 2, "--restarts", 2, "--uncertainty",
                  "--device", "cpu", "-q").exit_code == 0
    before = spread.read_bytes()
    result = invoke("inpaint", src, "--mask", spread, "-o", out, "--iters", 2, "--device",
                    "cpu", "-q", "--overwrite")
    assert result.exit_code == 0, result.output
    assert spread.read_bytes() == before


def test_a_record_that_cannot_take_its_place_leaves_the_earlier_result_whole(
        tmp_path: Path, monkeypatch) -> None:
    """The old image was deleted before the new record's rename, which failed (an immutable
    record, EPERM): neither result was left."""
    src = save(synthetic(32), tmp_path / "in.png")
    out = tmp_path / "out.png"
    assert invoke("denoise", src, "-o", out, "--iters", 2, "--device", "cpu", "-q").exit_code == 0
    before = digest(tmp_path)
    real = os.replace

    def immutable_record(a, b):
        if str(b).endswith(".json"):
            raise PermissionError(errno.EPERM, "Operation not permitted")
        return real(a, b)

    monkeypatch.setattr(os, "replace", immutable_record)
    result = invoke("denoise", src, "-o", out, "--iters", 3, "--device", "cpu", "-q",
                    "--overwrite")
    assert result.exit_code == 1 and "Operation not permitted" in result.output
    assert digest(tmp_path) == before  # and nothing set aside is left


def test_an_input_in_the_staged_snapshot_folder_is_never_cleared_away(tmp_path: Path) -> None:
    staged = tmp_path / ".r.png.steps.dip-new"
    staged.mkdir()
    src = save(synthetic(32), staged / "step_000010.png")
    assert invoke("denoise", src, "-o", tmp_path / "r.png", "--iters", 2, "--device", "cpu",
                  "-q").exit_code == 0
    assert src.is_file()


def test_a_result_a_killed_run_set_aside_is_cleared_by_the_next_run(tmp_path: Path) -> None:
    src = save(synthetic(32), tmp_path / "in.png")
    aside = tmp_path / ".out.png.dip-old"
    aside.write_bytes(b"the result a run killed between its renames had replaced")
    assert invoke("denoise", src, "-o", tmp_path / "out.png", "--iters", 2, "--device", "cpu",
                  "-q").exit_code == 0
    assert not aside.exists() and (tmp_path / "out.png").is_file()


def test_a_result_another_user_owns_in_a_sticky_folder_is_refused_before_the_fit(
        tmp_path: Path, monkeypatch) -> None:
    """Only its owner may remove or rename over it there (as in /tmp): the fit ran to its
    end, then 'cannot write r.png: Operation not permitted'."""
    src = save(synthetic(32), tmp_path / "in.png")
    shared = tmp_path / "shared"
    shared.mkdir()
    out = shared / "r.png"
    out.write_bytes(b"another user's result")
    shared.chmod(0o1777)
    owner = out.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1000)  # this user is someone else
    _refused(invoke("denoise", src, "-o", out, "--iters", 2, "--device", "cpu", "-q",
                    "--overwrite"), "cannot replace", "another user's")
    monkeypatch.setattr(os, "geteuid", lambda: owner)  # the owner may
    assert invoke("denoise", src, "-o", out, "--iters", 2, "--device", "cpu", "-q",
                  "--overwrite").exit_code == 0
