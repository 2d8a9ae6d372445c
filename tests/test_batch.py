"""``dip run BATCH.yaml`` through the real click app: failures isolated, resumable, shards that
cover every job once, a dry run that runs nothing, and invalid batch files refused with exit 2."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dip import batch, image
from dip.cli.main import cli
from dip.image import DipWarning
from dip.request import FORMATS, RunRequest
from dip.tasks import TASKS

from conftest import _group_members, save, synthetic, wait_until

# A tiny network and a few steps: the batch machinery is under test, not the restoration.
TINY = ("set: {net.channels_down: [8, 8, 8, 8, 8], net.channels_up: [8, 8, 8, 8, 8]}\n"
        "  iters: 4\n  device: cpu\n  seed: 0\n")


def invoke(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def make_batch(tmp_path: Path, jobs: str, defaults: str = TINY) -> Path:
    photos = tmp_path / "photos"
    photos.mkdir(exist_ok=True)
    for i in range(3):
        save(synthetic(32), photos / f"p{i}.png")
    path = tmp_path / "batch.yaml"
    path.write_text(f"defaults:\n  {defaults}jobs:\n{jobs}")
    return path


GLOB_JOB = "  - task: denoise\n    input: photos/*.png\n    output: out/\n"


def test_a_broken_job_fails_alone(tmp_path: Path) -> None:
    path = make_batch(tmp_path, GLOB_JOB)
    (tmp_path / "photos" / "broken.png").write_bytes(b"not an image at all")
    result = invoke("run", path, "-q")
    assert result.exit_code == 1, result.output
    assert "broken.png" in result.output and "not an image" in result.output
    assert "Traceback" not in result.output
    for i in range(3):
        assert (tmp_path / "out" / f"p{i}_denoise.png").is_file()
        assert (tmp_path / "out" / f"p{i}_denoise.png.json").is_file()
    assert not (tmp_path / "out" / "broken_denoise.png").exists()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"] == {"done": 3, "skipped": 0, "failed": 1, "interrupted": 0,
                                 "pending": 0}
    with open(tmp_path / "out" / "summary.csv") as f:
        assert len(f.read().strip().splitlines()) == 1 + 4


def test_a_rerun_skips_finished_jobs_and_redoes_changed_ones(tmp_path: Path) -> None:
    path = make_batch(tmp_path, GLOB_JOB)
    assert invoke("run", path, "-q").exit_code == 0
    out = tmp_path / "out" / "p0_denoise.png"
    before = out.stat().st_mtime_ns
    again = invoke("run", path, "-q")
    assert again.exit_code == 0 and "0 done, 3 already done" in again.output
    assert out.stat().st_mtime_ns == before
    # another setting: dip's own earlier result is replaced, without --overwrite
    path.write_text(path.read_text().replace("iters: 4", "iters: 5"))
    changed = invoke("run", path, "-q")
    assert changed.exit_code == 0 and "3 done, 0 already done" in changed.output
    assert json.loads(Path(str(out) + ".json").read_text())["iterations"] == 5


def test_a_moved_batch_folder_skips_its_finished_jobs_and_replaces_its_own_results(
        tmp_path: Path) -> None:
    # records name absolute paths: after mv proj proj2 (or another mount of the same data)
    # every finished job failed: "a_denoise.png already exists; use --overwrite"
    (tmp_path / "proj").mkdir()
    make_batch(tmp_path / "proj", "  - {task: denoise, input: photos/, output: photos/, "
                                  "gif: true}\n")
    assert invoke("run", tmp_path / "proj" / "batch.yaml", "-q").exit_code == 0
    (tmp_path / "proj").rename(tmp_path / "proj2")
    path, photos = tmp_path / "proj2" / "batch.yaml", tmp_path / "proj2" / "photos"
    assert len(batch.load_batch(path)) == 3  # its results are still not inputs
    again = invoke("run", path, "-q")
    assert again.exit_code == 0 and "0 done, 3 already done" in again.output, again.output
    # other settings: dip's own result, and the GIF its record names, are replaced
    path.write_text(path.read_text().replace("iters: 4", "iters: 5"))
    changed = invoke("run", path, "-q")
    assert changed.exit_code == 0 and "3 done, 0 already done" in changed.output, changed.output
    rec = json.loads((photos / "p0_denoise.png.json").read_text())
    assert rec["iterations"] == 5 and rec["gif"] == str((photos / "p0_denoise.gif").resolve())
    (tmp_path / "proj2").rename(tmp_path / "proj3")
    path, photos = tmp_path / "proj3" / "batch.yaml", tmp_path / "proj3" / "photos"
    # no GIF asked for now: the replaced result's, which its record names, goes with it
    path.write_text(path.read_text().replace(", gif: true", "").replace("iters: 5", "iters: 4"))
    assert "3 done" in invoke("run", path, "-q").output
    assert not list(photos.glob("*.gif")) and len(batch.load_batch(path)) == 3


def test_a_folders_hidden_files_are_not_jobs(tmp_path: Path) -> None:
    # macOS writes ._IMG_0001.JPG beside each photo on a memory card, a USB stick or a share:
    # each was a job that failed (not an image), and the batch exited 1
    path = make_batch(tmp_path, "  - {task: denoise, input: photos/, output: out/}\n")
    (tmp_path / "photos" / "._p0.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    save(synthetic(32), tmp_path / "photos" / ".hidden.png")
    result = invoke("run", path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "3 job(s)" in result.output and "._p0" not in result.output
    assert ".hidden" not in result.output


def test_outputs_that_share_no_folder_ask_for_a_summary_path(tmp_path: Path,
                                                            monkeypatch) -> None:
    # on Windows, outputs on two drives: os.path.commonpath raised ValueError, a traceback
    import os

    path = make_batch(tmp_path, GLOB_JOB)

    def two_drives(paths):
        raise ValueError("Paths don't have the same drive")

    monkeypatch.setattr(os.path, "commonpath", two_drives)
    result = invoke("run", path, "-q")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines() == [
        "dip: error: the outputs share no folder for the summary (they are on two drives); "
        "give --summary"]
    assert not (tmp_path / "out").exists()


def test_a_job_whose_config_is_a_record_remakes_that_result(tmp_path: Path) -> None:
    # the batch derived a seed for it (7847983990935485957), and made another image
    make_batch(tmp_path, "")
    single = tmp_path / "single.png"
    result = invoke("denoise", tmp_path / "photos" / "p0.png", "-o", single, "--iters", 4,
                    "--restarts", 1, "--seed", 5, "--set", "net.channels_down=[8,8,8,8,8]",
                    "--set", "net.channels_up=[8,8,8,8,8]", "--set", "perf.threads=1", "-q")
    assert result.exit_code == 0, result.output
    path = tmp_path / "again.yaml"
    path.write_text("jobs:\n  - {task: denoise, input: photos/p0.png, config: single.png.json, "
                    "output: out/}\n  - {task: denoise, input: photos/p1.png, config: "
                    "single.png.json, seed: 5, output: out/}\n")
    assert invoke("run", path, "-q").exit_code == 0
    again = tmp_path / "out" / "p0_denoise.png"
    assert again.read_bytes() == single.read_bytes()
    assert json.loads(again.with_name("p0_denoise.png.json").read_text())["seed"] == 5
    # a seed the job names is the batch's, derived for each input as for any job
    other = json.loads((tmp_path / "out" / "p1_denoise.png.json").read_text())
    assert other["seed"] == batch.job_seed(5, "photos/p1.png")
    # and one set: gives beats the record's, as --set seed beats --config RESULT.json's
    path.write_text("jobs:\n  - {task: denoise, input: photos/p2.png, config: single.png.json, "
                    "set: {seed: 7}, output: out/}\n")
    assert batch.load_batch(path)[0].seed == batch.job_seed(7, "photos/p2.png")
    # and so does one a config file after the record gives, as --config twice does
    (tmp_path / "seven.yaml").write_text("seed: 7\n")
    path.write_text("jobs:\n  - {task: denoise, input: photos/p2.png, config: [single.png.json, "
                    "seven.yaml], output: out/}\n")
    assert batch.load_batch(path)[0].seed == batch.job_seed(7, "photos/p2.png")


def test_a_moved_record_does_not_make_a_users_file_dips(tmp_path: Path) -> None:
    (tmp_path / "proj").mkdir()
    make_batch(tmp_path / "proj", "  - {task: denoise, input: photos/p0.png, output: out/}\n")
    assert invoke("run", tmp_path / "proj" / "batch.yaml", "-q").exit_code == 0
    (tmp_path / "proj").rename(tmp_path / "proj2")
    path, out = tmp_path / "proj2" / "batch.yaml", tmp_path / "proj2" / "out" / "p0_denoise.png"
    record_file = Path(str(out) + ".json")
    old = record_file.read_text()
    # the photo the record was made from is not there any more (another one under its name):
    # the record may have come from anywhere, and the file beside it is kept
    save(synthetic(32).flip(-1), tmp_path / "proj2" / "photos" / "p0.png")
    before = out.read_bytes()
    refused = invoke("run", path, "-q")
    assert refused.exit_code == 1 and "already exists; use --overwrite" in refused.output
    assert out.read_bytes() == before
    # a record from before fingerprints is read as before: done where it was written, and not
    # known once moved
    save(synthetic(32), tmp_path / "proj2" / "photos" / "p0.png")
    rec = json.loads(old)
    del rec["fingerprints"]
    record_file.write_text(json.dumps(rec))
    refused = invoke("run", path, "-q")
    assert refused.exit_code == 1 and "already exists; use --overwrite" in refused.output
    assert out.read_bytes() == before
    (tmp_path / "proj2").rename(tmp_path / "proj")
    assert "0 done, 1 already done" in invoke("run", tmp_path / "proj" / "batch.yaml",
                                              "-q").output


def test_records_from_before_a_config_key_existed_still_count_as_done(tmp_path: Path) -> None:
    # Upgrading dip adds config keys (stop.noise_floor, stop.sigma) and task options (superres'
    # kernel); a finished job whose record lacks them ran with what they now default to, and
    # is not redone.
    path = make_batch(tmp_path, "  - task: superres\n    input: photos/*.png\n"
                                "    factor: 2\n    output: out/\n")
    assert invoke("run", path, "-q").exit_code == 0
    for record_file in (tmp_path / "out").glob("*.png.json"):
        record = json.loads(record_file.read_text())
        assert record["kernel"] == "lanczos"
        del record["config"]["stop"]["noise_floor"], record["config"]["stop"]["sigma"]
        del record["kernel"]
        record_file.write_text(json.dumps(record))
    again = invoke("run", path, "-q")
    assert again.exit_code == 0 and "0 done, 3 already done" in again.output


def test_a_superres_job_takes_its_kernel(tmp_path: Path) -> None:
    path = make_batch(tmp_path, "  - task: superres\n    input: photos/p0.png\n"
                                "    kernel: area\n    factor: 2\n    output: out/\n")
    assert invoke("run", path, "-q").exit_code == 0
    record = json.loads((tmp_path / "out" / "p0_superres.png.json").read_text())
    assert record["kernel"] == "area"
    bad = make_batch(tmp_path, "  - task: superres\n    input: photos/p0.png\n"
                               "    kernel: cubic\n    output: out2/\n")
    result = invoke("run", bad, "-q")
    assert result.exit_code != 0 and "unknown downsampling kernel 'cubic'" in result.output
    assert not (tmp_path / "out2" / "p0_superres.png").exists()


def test_a_run_killed_between_writes_is_finished_on_rerun(tmp_path: Path) -> None:
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/p0.png\n    output: out/\n")
    out = tmp_path / "out" / "p0_denoise.png"
    out.parent.mkdir()
    # What kill -9 can leave: a temporary file, and a record renamed before its image.
    (out.parent / f".{out.name}.abc123de.part").write_bytes(b"half")
    Path(str(out) + ".json").write_text(json.dumps({"config": {}, "stop_reason": "budget"}))
    result = invoke("run", path, "-q")
    assert result.exit_code == 0, result.output
    assert out.is_file() and not list(out.parent.glob("*.part"))
    assert batch.is_done(batch.load_batch(path)[0])


def test_an_interrupted_result_is_redone(tmp_path: Path) -> None:
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/p0.png\n    output: out/\n")
    assert invoke("run", path, "-q").exit_code == 0
    record = tmp_path / "out" / "p0_denoise.png.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "stop_reason": "interrupted"}))
    assert not batch.is_done(batch.load_batch(path)[0])
    assert "1 done" in invoke("run", path, "-q").output


def test_a_file_not_made_by_dip_is_kept_without_overwrite(tmp_path: Path) -> None:
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/p0.png\n    output: out/\n")
    (tmp_path / "out").mkdir()
    mine = tmp_path / "out" / "p0_denoise.png"
    mine.write_bytes(b"the user's own file")
    result = invoke("run", path, "-q")
    assert result.exit_code == 1 and "--overwrite" in result.output
    assert mine.read_bytes() == b"the user's own file"
    assert invoke("run", path, "-q", "--overwrite").exit_code == 0
    assert Image.open(mine).size == (32, 32)


def test_shards_cover_every_job_exactly_once(tmp_path: Path) -> None:
    path = make_batch(tmp_path, GLOB_JOB + "  - task: superres\n    input: photos/\n"
                                           "    factor: 2\n")
    jobs = batch.load_batch(path)
    assert len(jobs) == 6
    for n in (1, 2, 4):
        shards = [batch.select_shard(jobs, k, n) for k in range(1, n + 1)]
        outputs = [j.output for shard in shards for j in shard]
        assert sorted(outputs) == sorted(j.output for j in jobs)
    # Through the CLI, and from a SLURM array's environment: 2 shards write disjoint files.
    for k in (1, 2):
        env = {"SLURM_ARRAY_TASK_ID": str(k - 1), "SLURM_ARRAY_TASK_COUNT": "2",
               "SLURM_ARRAY_TASK_MIN": "0"}
        assert invoke("run", path, "-q", env=env).exit_code == 0
    written = sorted(p.name for p in tmp_path.rglob("*_*.png"))
    assert len(written) == 6
    assert (tmp_path / "summary.shard-1-of-2.csv").is_file()
    # each shard ran its own half: none of its jobs was already done by the other
    for k in (1, 2):
        counts = json.loads((tmp_path / f"summary.shard-{k}-of-2.json").read_text())["counts"]
        assert counts["done"] == 3 and counts["skipped"] == 0


def test_every_shards_summary_is_where_the_whole_batchs_would_be(tmp_path: Path) -> None:
    # one job a shard, each writing to its own folder: the summaries went one into each
    path = make_batch(tmp_path, "  - {task: denoise, input: photos/p0.png, output: out/a/}\n"
                                "  - {task: denoise, input: photos/p1.png, output: out/b/}\n")
    for k in (1, 2):
        assert invoke("run", path, "-q", "--shard", f"{k}/2").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("summary.*.csv")) == [
        "summary.shard-1-of-2.csv", "summary.shard-2-of-2.csv"]


def test_shard_option_and_its_mistakes(tmp_path: Path) -> None:
    path = make_batch(tmp_path, GLOB_JOB)
    listed = invoke("run", path, "--dry-run", "--shard", "2/2")
    assert listed.exit_code == 0 and "p1.png" in listed.output and "p0.png" not in listed.output
    for bad in ("3/2", "0/2", "two"):
        result = invoke("run", path, "--shard", bad)
        assert result.exit_code == 2 and "--shard expects K/N" in result.output


def test_dry_run_lists_the_expanded_jobs_without_running(tmp_path: Path) -> None:
    path = make_batch(tmp_path, GLOB_JOB + "  - task: superres\n    input: photos/p1.png\n")
    result = invoke("run", path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "4 job(s)" in result.output
    assert str(tmp_path / "results" / "p1_superres.png") in result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "results").exists()


def test_a_dry_run_lists_a_job_that_would_fail_with_why_and_goes_on(tmp_path: Path) -> None:
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/cut.png\n"
                                "  - task: inpaint\n    input: photos/p0.png\n"
                                "    mask_color: '#ff00ff'\n    mask_tolerance: 0\n"
                                "  - task: denoise\n    input: photos/p1.png\n")
    whole = (tmp_path / "photos" / "p2.png").read_bytes()
    (tmp_path / "photos" / "cut.png").write_bytes(whole[:len(whole) // 2])
    result = invoke("run", path, "--dry-run")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("fails") and "jobs[0]" in lines[0] and "truncated" in lines[0]
    # the job's error names the batch key, not the command line's flag
    assert lines[1].startswith("fails") and "'mask_tolerance'" in lines[1], lines[1]
    assert lines[2].startswith("to do") and "p1_denoise.png" in lines[2]
    assert lines[3].endswith("2 would fail"), lines[3]
    assert "Traceback" not in result.output and not (tmp_path / "results").exists()


def test_a_default_for_one_task_is_checked_for_its_jobs(tmp_path: Path) -> None:
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/p0.png\n")
    path.write_text("defaults:\n  mask_tolerance: lots\njobs:\n"
                    "  - {task: denoise, input: photos/p0.png}\n")
    assert batch.load_batch(path)[0].request.task_args == {}  # not denoise's key: unused
    path.write_text("defaults:\n  mask_tolerance: lots\njobs:\n"
                    "  - {task: inpaint, input: photos/p0.png, mask_color: black}\n")
    with pytest.raises(batch.BatchError, match="defaults: 'mask_tolerance' expects an integer"):
        batch.load_batch(path)


def test_seeds_come_from_the_input_not_the_order(tmp_path: Path) -> None:
    path = make_batch(tmp_path, GLOB_JOB)
    seeds = {j.input.name: j.seed for j in batch.load_batch(path)}
    assert len(set(seeds.values())) == 3
    reordered = tmp_path / "reordered.yaml"
    reordered.write_text(f"defaults:\n  {TINY}jobs:\n" + "".join(
        f"  - task: denoise\n    input: photos/p{i}.png\n    output: out/\n" for i in (2, 0, 1)))
    assert {j.input.name: j.seed for j in batch.load_batch(reordered)} == seeds


def test_a_seed_set_in_set_or_in_a_config_file_is_the_jobs_base_seed(tmp_path: Path) -> None:
    """'set' is --set's keys, and --set seed=7 sets one command's seed: in a batch it was
    ignored without a word (and never checked: seed: -5 in a config file ran)."""
    defaults = TINY.replace("  seed: 0\n", "")
    (tmp_path / "s7.yaml").write_text("seed: 7\n")
    (tmp_path / "bad.yaml").write_text("seed: -5\n")

    def seeds(extra: str) -> list[int]:
        path = make_batch(tmp_path, GLOB_JOB.rstrip("\n") + extra + "\n", defaults)
        return [j.seed for j in batch.load_batch(path)]

    none, keyed = seeds(""), seeds("\n    seed: 7")
    assert none != keyed and len(set(keyed)) == 3  # still one per picture
    assert seeds("\n    set: {seed: 7}") == keyed == seeds("\n    config: s7.yaml")
    with pytest.raises(batch.BatchError, match=r"config key 'seed' must be in 0 \.\. 2\*\*63-1, "
                                               r"got -5"):
        seeds("\n    config: bad.yaml")
    # a job's own seed key was hashed into its seed as it was: -1 ran, exit 0
    for wrong in ("-1", "99999999999999999999999"):
        with pytest.raises(batch.BatchError, match=rf"jobs\[0\] \(line \d+\): 'seed' must be in "
                                                   rf"0 \.\. 2\*\*63-1, got {wrong}$"):
            seeds(f"\n    seed: {wrong}")
    assert len(set(seeds(f"\n    seed: {2 ** 63 - 1}"))) == 3


@pytest.mark.parametrize("entry, message", [
    # a value JSON has no word for: a traceback ('date is not JSON serializable')
    ("set: {seed: 2026-12-06}", "config key 'seed' expects an integer, got '2026-12-06'"),
    # a list's items were not checked: a stray '-' was a TypeError in a path join
    ("config: [s.yaml, null]", "'config' item 2 expects a file name, got nothing"),
    ("config: [{optim: {lr: 0.1}}]", "'config' item 1 expects a file name, got a mapping "
                                     "(settings go under 'set')"),
    # an empty path was the batch file's folder: every picture beside it, or its own mask
    ("input: ''", "'input' is empty; give a path"),
    ("reference: ' '", "'reference' is empty; give a path"),
    # what YAML made of a word meant as text, said as YAML read it ('got False', 'got 2024')
    ("input: 2024", "'input' expects a string, but YAML read the value as the number 2024: "
                    "put it in quotes (input: '...')"),
    ("reference: no", "but YAML read the value as false (it reads yes, no, on and off as true "
                      "or false)"),
    ("reference: 2026-12-06", "but YAML read the value as a date (2026-12-06)"),
])
def test_a_jobs_value_yaml_read_otherwise_is_one_line(tmp_path: Path, entry: str,
                                                       message: str) -> None:
    path = make_batch(tmp_path, f"  - task: denoise\n    input: photos/p0.png\n    {entry}\n"
                      .replace("    input: photos/p0.png\n    input:", "    input:"),
                      TINY.replace("  seed: 0\n", ""))  # (a job's seed key beats set's)
    (tmp_path / "s.yaml").write_text("{}\n")
    result = invoke("run", path, "--dry-run")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_device_set_in_set_or_a_config_file_is_checked_before_any_job(tmp_path: Path) -> None:
    """The job key device: was, but one from set: or a config file failed every job at its
    turn ('1 would fail', exit 1)."""
    path = make_batch(tmp_path, GLOB_JOB.rstrip("\n") + "\n    set: {device: gpu}\n",
                      TINY.replace("  device: cpu\n", ""))
    result = invoke("run", path, "--dry-run")
    assert result.exit_code == 2, result.output
    assert "unknown device 'gpu': use auto, cpu, cuda, cuda:N or mps" in result.output
    # a device this machine may lack is --devices' to replace, not refused here
    (tmp_path / "gpu.yaml").write_text("device: cuda\n")
    path = make_batch(tmp_path, GLOB_JOB.rstrip("\n") + "\n    config: gpu.yaml\n",
                      TINY.replace("  device: cpu\n", ""))
    result = invoke("run", path, "--dry-run", "--devices", "cpu")
    assert result.exit_code == 0, result.output


def test_a_mask_color_written_as_a_comment_says_to_quote_it(tmp_path: Path) -> None:
    path = make_batch(tmp_path, "  - task: inpaint\n    input: photos/p0.png\n"
                                "    mask_color: #ff00ff\n")
    result = invoke("run", path, "--dry-run")
    assert result.exit_code == 2
    assert ("'mask_color' expects a string, but YAML read the value as nothing (a # starts a "
            "comment): put it in quotes (mask_color: '...')") in result.output


def test_two_workers_run_every_job(tmp_path: Path) -> None:
    path = make_batch(tmp_path, GLOB_JOB)
    result = invoke("run", path, "-q", "--workers", "2", "--devices", "cpu")
    assert result.exit_code == 0, result.output
    done = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.png.json")]
    assert len(done) == 3 and {r["seed"] for r in done} == {
        j.seed for j in batch.load_batch(path)}


def test_a_workers_warning_reaches_the_caller_as_a_warning(tmp_path: Path) -> None:
    """A worker's warnings are warned again in the batch's own process: they were written to
    the worker's stderr, onto the dip command's progress bar and past a Python caller's
    filters."""
    path = make_batch(tmp_path, GLOB_JOB, TINY.replace("}", ", noise.wiener: false, "
                                                       "stop.sigma: 20}\n  stop: fixed\n"
                                                       "  restarts: 1", 1))
    for i in range(3, 6):
        save(synthetic(32), tmp_path / "photos" / f"p{i}.png")
    with pytest.warns(DipWarning, match="stop.sigma is ignored") as said:
        rows = batch.run_jobs(batch.load_batch(path), workers=2, devices=["cpu"])
    assert [r.status for r in rows] == ["done"] * 6
    # each job's, though a worker runs three (its registry of warnings shown kept 2 of 3)
    assert sum(isinstance(w.message, DipWarning) and "stop.sigma is ignored" in str(w.message)
               for w in said) == 6


def test_workers_are_no_more_than_the_jobs_and_windows_pool_takes(tmp_path: Path,
                                                                   monkeypatch) -> None:
    # 2 jobs with --workers 8 started 8 processes, each loading torch, and gave each job an
    # eighth of the cores; --workers 64 on Windows was the pool's ValueError, a traceback
    assert batch.pool_size(8, 2) == 2 and batch.pool_size(8, 20) == 8
    assert batch.pool_size(64, 100, "nt") == 61 and batch.pool_size(64, 100, "posix") == 64
    assert batch.pool_size(4, 0) == 1
    started = []
    monkeypatch.setattr(batch, "usable_cores", lambda: 8)
    monkeypatch.setattr(batch, "_run_pool", lambda todo, workers, **pool: started.append(
        (len(todo), workers, pool["threads"])) or [])
    batch.run_jobs(batch.load_batch(make_batch(tmp_path, GLOB_JOB)), workers=8,
                   devices=["cpu"])
    assert started == [(3, 3, 2)]  # 3 workers of 2 threads: 8 cores less the 2 left over


def test_a_job_left_alone_runs_on_the_workers_first_device(tmp_path: Path,
                                                             monkeypatch) -> None:
    # --workers 2 --devices cuda:1 with one job to do ran it here, on the default GPU
    ran = []
    monkeypatch.setattr(batch, "resolve_device", lambda name: name)
    monkeypatch.setattr(batch, "_run_here", lambda todo, *args: ran.extend(
        job.request.device for job in todo) or [])
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/p0.png\n"
                                "    output: out/\n", defaults="iters: 4\n")
    batch.run_jobs(batch.load_batch(path), workers=2, devices=["cuda:1"])
    assert ran == ["cuda:1"]


def test_same_batch_gives_the_same_images(tmp_path: Path) -> None:
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/p0.png\n    output: out/\n")
    assert invoke("run", path, "-q").exit_code == 0
    first = np.asarray(Image.open(tmp_path / "out" / "p0_denoise.png"))
    assert invoke("run", path, "-q", "--overwrite").exit_code == 0
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "out" / "p0_denoise.png")))


@pytest.mark.parametrize("body, message", [
    ("jobs:\n  - task: denoise\n    inptu: a.png\n", "unknown key 'inptu'; did you mean 'input'"),
    ("jobs:\n  - task: denoise\n    input: [a.png\n", "invalid YAML"),
    ("jobs:\n  - task: denoise\n    input: nowhere/*.png\n", "matches no image"),
    ("jobs:\n  - task: denoise\n    input: missing.png\n", "input not found"),
    ("jobs:\n  - task: denoize\n    input: photos/p0.png\n", "unknown task 'denoize'"),
    ("jobs:\n  - task: denoise\n    input: photos/p0.png\n    iters: many\n",
     "'iters' expects an integer"),
    ("jobs:\n  - task: denoise\n    input: photos/p0.png\n    seed:\n",  # (got 'None')
     "'seed' expects an integer, but YAML read the value as nothing (leave the key out"),
    ("jobs:\n  - task: denoise\n    input: photos/p0.png\n    set: {optim.lrr: 0.1}\n",
     "unknown config key 'optim.lrr'; did you mean 'optim.lr'"),
    ("jobs:\n  - task: inpaint\n    input: photos/p0.png\n", "needs exactly one of 'mask'"),
    ("jobs:\n  - task: denoise\n    input: photos/\n    mask: photos/p0.png\n",
     "'mask' only applies to inpaint"),
    ("jobs:\n  - task: denoise\n    input: photos/p0.png\n    output: o.png\n"
     "  - task: denoise\n    input: photos/p1.png\n    output: o.png\n", "also writes"),
    ("jobs:\n  - task: denoise\n    input: photos/p0.png\n    format: xyz\n",
     "unknown format 'xyz'; use one of png"),
    ("jobs:\n  - task: denoise\n    input: photos/p0.png\n    set: {factor: 8}\n",
     "config key 'factor' applies to superres only, not denoise"),
    # an output dip cannot write: the batch is refused, not that job after the others ran
    ("jobs:\n  - task: denoise\n    input: photos/p0.png\n  - task: denoise\n"
     "    input: photos/p1.png\n    output: out/a.txt\n",
     "jobs[1] (line 4): cannot write images with extension '.txt'"),
    ("jobs:\n  - task: denoise\n    input: photos/p0.png\n    output: a.json\n",
     "cannot write images with extension '.json'"),
    ("defaults:\n  seed: 0\n", "no jobs"),
    ("- just a list\n", "a batch file is a mapping"),
    # defaults: take a task's own keys too, and say so (they were left out of the list)
    ("defaults:\n  factr: 4\njobs:\n  - task: superres\n    input: photos/p0.png\n",
     "unknown key 'factr'; did you mean 'factor'?"),
    ("defaults:\n  input: photos/p0.png\njobs:\n  - task: denoise\n",
     "'input' is each job's own, not a default"),
])
def test_an_invalid_batch_file_exits_2_naming_the_key_or_line(tmp_path: Path, body: str,
                                                             message: str) -> None:
    make_batch(tmp_path, "")
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    result = invoke("run", path)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert "Traceback" not in result.output
    if "jobs[" in lines[0] and "YAML" not in message:
        assert "(line " in lines[0]
    assert not list(tmp_path.rglob("*_denoise.png"))


def test_a_number_yaml_reads_as_a_string_is_a_number_in_a_job(tmp_path: Path) -> None:
    # YAML 1.1: 1e3 and 2.0e1 (no sign after the e) are strings; as for config keys, a job's
    # number option takes them
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/p0.png\n"
                                "    max_memory: 2.0e1\n")
    (job,) = batch.load_batch(path)
    assert job.request.max_memory == 20.0
    path.write_text("defaults:\n  max_memory: 1e3\njobs:\n"
                    "  - {task: denoise, input: photos/p0.png}\n")
    assert batch.load_batch(path)[0].request.max_memory == 1000.0
    path.write_text("jobs:\n  - {task: denoise, input: photos/p0.png, max_memory: lots}\n")
    with pytest.raises(batch.BatchError, match="'max_memory' expects"):
        batch.load_batch(path)
    # a tile's side is a number too ('expects a string' before)
    path.write_text("jobs:\n  - {task: denoise, input: photos/p0.png, tile: 32}\n")
    assert batch.load_batch(path)[0].request.tile == 32
    path.write_text("jobs:\n  - {task: denoise, input: photos/p0.png, tile: 1.5}\n")
    with pytest.raises(batch.BatchError, match="'tile' expects a string or an integer"):
        batch.load_batch(path)
    path.write_text("jobs:\n  - {task: denoise, input: photos/p0.png, tile: off}\n")
    assert batch.load_batch(path)[0].request.tile == "off"  # YAML 1.1's false


def test_results_in_the_input_folder_are_not_read_as_inputs(tmp_path: Path) -> None:
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/\n    output: photos/\n")
    assert invoke("run", path, "-q").exit_code == 0
    assert len(batch.load_batch(path)) == 3  # p*_denoise.png have records: not inputs


def _inputs(path: Path) -> list[str]:
    """The inputs of a batch file's jobs, relative to its folder."""
    return [job.input.relative_to(path.parent).as_posix() for job in batch.load_batch(path)]


def test_a_name_with_glob_characters_is_that_file_not_a_pattern(tmp_path: Path) -> None:
    save(synthetic(32), tmp_path / "scan[1].png")
    path = tmp_path / "batch.yaml"
    path.write_text('jobs:\n  - {task: denoise, input: "scan[1].png", device: cpu}\n')
    assert _inputs(path) == ["scan[1].png"]  # was "matches no image"
    save(synthetic(32), tmp_path / "scan1.png")
    assert _inputs(path) == ["scan[1].png"]  # was scan1.png: another photo
    (job,) = batch.load_batch(path)
    assert not job.expanded and job.output.name == "scan[1]_denoise.png"
    # a folder named so
    (tmp_path / "photos [2020]").mkdir()
    save(synthetic(32), tmp_path / "photos [2020]" / "a.png")
    path.write_text('jobs:\n  - {task: denoise, input: "photos [2020]/", device: cpu}\n')
    assert _inputs(path) == ["photos [2020]/a.png"]
    # a pattern still matches
    path.write_text('jobs:\n  - {task: denoise, input: "scan[0-9].png", device: cpu}\n')
    assert _inputs(path) == ["scan1.png"]


def test_the_batch_files_folder_is_never_part_of_a_pattern(tmp_path: Path) -> None:
    # "Album [2020]" as a pattern matches "Album 2": its photos were planned instead
    for album, name in (("Album [2020]", "a.png"), ("Album 2", "other.png")):
        (tmp_path / album / "photos").mkdir(parents=True)
        save(synthetic(32), tmp_path / album / "photos" / name)
    path = tmp_path / "Album [2020]" / "batch.yaml"
    path.write_text('jobs:\n  - {task: denoise, input: "photos/*.png", device: cpu}\n')
    assert _inputs(path) == ["photos/a.png"]
    (tmp_path / "Album [2020]" / "photos" / "a.png").unlink()
    with pytest.raises(batch.BatchError, match="matches no image"):
        batch.load_batch(path)


def test_gifs_and_snapshots_of_an_earlier_run_are_never_inputs(tmp_path: Path) -> None:
    first = make_batch(tmp_path, "  - {task: denoise, input: photos/p0.png, output: photos/, "
                                 "gif: true}\n")
    assert invoke("run", first, "-q").exit_code == 0
    gif, steps = tmp_path / "photos" / "p0_denoise.gif", tmp_path / "photos" / "p0_denoise_steps"
    snapshots = sorted(steps.glob("step_*.png"))
    assert gif.is_file() and snapshots
    assert image.dip_marker(gif) == "gif"
    assert {image.dip_marker(path) for path in snapshots} == {"snapshot"}
    second = tmp_path / "second.yaml"
    second.write_text("jobs:\n  - {task: denoise, input: 'photos/**', output: out/, "
                      "device: cpu}\n")
    photos = ["photos/p0.png", "photos/p1.png", "photos/p2.png"]
    assert _inputs(second) == photos  # (the GIF and snapshots were jobs)
    # written by a dip from before the marks: the record of the result beside names them
    Image.new("RGB", (8, 8)).save(gif, save_all=True, append_images=[Image.new("RGB", (8, 8),
                                                                               "red")])
    for path in snapshots:
        save(synthetic(32), path)
    assert image.dip_marker(gif) is None and image.dip_marker(snapshots[0]) is None
    assert _inputs(second) == photos
    # a user's GIF named like another result's stem is the user's: X.gif beside X.v2.png
    folder = tmp_path / "photos"
    (folder / "holiday.gif").write_bytes(gif.read_bytes())
    (folder / "p0_denoise.png").rename(folder / "holiday.v2.png")
    (folder / "p0_denoise.png.json").rename(folder / "holiday.v2.png.json")
    assert "photos/holiday.gif" in _inputs(second)
    (folder / "holiday.gif").unlink()
    (folder / "holiday.v2.png").rename(folder / "p0_denoise.png")
    (folder / "holiday.v2.png.json").rename(folder / "p0_denoise.png.json")
    # without that result and its record they are a user's files
    (tmp_path / "photos" / "p0_denoise.png.json").unlink()
    (tmp_path / "photos" / "p0_denoise.png").unlink()
    assert {"photos/p0_denoise.gif", "photos/p0_denoise_steps/step_000001.png"} \
        <= set(_inputs(second))


def test_a_snapshot_restored_on_its_own_gives_an_unmarked_result(tmp_path: Path) -> None:
    # the mark says "a snapshot"; a result made from one is not one
    snap = tmp_path / "step_000001.png"
    image.save_image(image.load_image(save(synthetic(32), tmp_path / "p.png")), snap,
                     mark="snapshot")
    assert image.dip_marker(snap) == "snapshot"
    out = image.save_image(image.load_image(snap), tmp_path / "out.png")
    assert image.dip_marker(out) is None


@pytest.mark.parametrize("given", ["photos/*.png", "photos/", "photos/p0.*"])
def test_several_inputs_into_a_file_named_output_are_refused(tmp_path: Path,
                                                             given: str) -> None:
    # it made a folder named best.jpg/ holding the results; a glob matching one photo today
    # is refused too: what the batch file means does not depend on what the folder holds
    path = make_batch(tmp_path, f"  - task: denoise\n    input: {given}\n"
                                f"    output: best.jpg\n")
    result = invoke("run", path, "-q")
    assert result.exit_code == 2, result.output
    line, = result.output.strip().splitlines()
    assert "jobs[0] (line 7)" in line and "'output' is a folder, not the file 'best.jpg'" \
        in line and "'format: jpg'" in line, line
    assert not (tmp_path / "best.jpg").exists()
    # a folder it is, said so by its slash (or there already)
    path.write_text(path.read_text().replace("best.jpg", "best.jpg/"))
    assert {job.output.parent.name for job in batch.load_batch(path)} == {"best.jpg"}
    (tmp_path / "restored.tif").mkdir()
    path.write_text(path.read_text().replace("best.jpg/", "restored.tif"))
    assert {job.output.parent.name for job in batch.load_batch(path)} == {"restored.tif"}
    # a folder named with another dot than a photo's is still a folder (.bw: Pillow reads
    # SGI images so named, but nobody names a photo that)
    for name in ("results.v2", "scans.bw"):
        path.write_text(re.sub(r"output: .*", f"output: {name}", path.read_text()))
        assert {job.output.parent.name for job in batch.load_batch(path)} == {name}


def _every_key(tmp_path: Path) -> tuple[dict, dict]:
    """A job holding every key a denoising job takes, each away from its default, and what
    the job's request should hold for each field."""
    for name in ("in.png", "ref.png"):
        save(synthetic(32), tmp_path / name)
    (tmp_path / "c.yaml").write_text("seed: 1\n")
    derived = {  # the fields a job derives: (the key's value, the request's)
        "task": ("denoise", "denoise"), "input": ("in.png", tmp_path / "in.png"),
        "config": ("c.yaml", (tmp_path / "c.yaml",)),
        "overrides": ({"optim.lr": 0.005}, ("optim.lr=0.005",)),
        "seed": (5, batch.job_seed(5, "in.png"))}
    spec, expected = {}, {}
    for key, opt in batch.common_keys().items():
        if opt.name in derived:
            given, held = derived[opt.name]
        elif opt.kind == "path":
            given, held = "ref.png", tmp_path / "ref.png"
        elif opt.kind == "flag":
            given = held = not opt.default
        elif opt.choices is not None:
            given = held = opt.choices[-1]
        elif opt.kind in ("int", "float"):
            given = held = (opt.minimum or 0) + 3
        else:
            given = held = "sample"
        spec[key], expected[opt.name] = given, held
    spec["output"] = "out/"
    expected["output"] = tmp_path / "out" / f"in_denoise{FORMATS[spec['format']]}"
    return spec, expected


def _job_request(tmp_path: Path, spec: dict) -> RunRequest:
    overrides = batch._overrides(spec["set"], "test")
    return batch._request(spec, TASKS["denoise"], tmp_path / "in.png", False, tmp_path,
                          overrides, "test", batch.job_seed(spec["seed"], "in.png"))


def test_every_batch_key_reaches_the_jobs_request(tmp_path: Path) -> None:
    spec, expected = _every_key(tmp_path)
    request = _job_request(tmp_path, spec)
    defaults = RunRequest()
    for name, value in expected.items():
        assert getattr(request, name) == value, name
        if name not in ("task", "input", "output"):  # those have no default worth the name
            assert value != getattr(defaults, name), f"{name}'s sample is its default"


def test_a_new_request_field_is_a_batch_key_with_no_batch_code(tmp_path: Path,
                                                                monkeypatch) -> None:
    """One field in RunRequest: ``dip run`` accepts its key and the job's request holds it."""
    import dip.request

    @dataclasses.dataclass(frozen=True)
    class Wider(RunRequest):
        tiles: int | None = dip.request.option(kind="int", minimum=1, help="A later option.")

    monkeypatch.setattr(dip.request, "RunRequest", Wider)
    monkeypatch.setattr(batch, "RunRequest", Wider)
    assert "tiles" in batch.job_keys(TASKS["denoise"])
    spec, expected = _every_key(tmp_path)
    assert spec["tiles"] == 4
    assert _job_request(tmp_path, spec).tiles == 4


def test_devices_that_mix_the_cpu_and_gpus_are_refused(monkeypatch) -> None:
    from dip.cli.main import flag_spelling

    monkeypatch.setattr(batch, "resolve_device", lambda name: None)  # no GPU needed here
    with pytest.raises(batch.BatchError) as caught:
        batch.assign_device([], ["cpu", "cuda:0"], 2)
    assert str(caught.value) == "devices mixes the CPU and GPUs; give one kind"
    assert caught.value.render(flag_spelling).startswith("--devices mixes")


@pytest.mark.parametrize("dry", [[], ["--dry-run"]])
def test_a_device_not_here_is_advised_with_dip_runs_own_option(tmp_path: Path, monkeypatch,
                                                               dry: list[str]) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    path = make_batch(tmp_path, GLOB_JOB)
    result = invoke("run", path, "--devices", "cuda", *dry)
    assert result.exit_code == 2, result.output
    line, = result.output.strip().splitlines()
    assert line.endswith("CUDA is not available here; use --devices cpu"), line  # not --device
    assert not (tmp_path / "out").exists()  # the summary's folder was made before the check


def test_a_file_where_the_results_folder_goes_is_named(tmp_path: Path) -> None:
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/p0.png\n")
    (tmp_path / "results").write_text("a file of the user's")
    result = invoke("run", path, "-q")
    assert result.exit_code == 2, result.output
    line, = result.output.strip().splitlines()
    assert line.endswith(f"{tmp_path / 'results'} is a file"), line  # was "File exists"
    assert (tmp_path / "results").read_text() == "a file of the user's"


def test_slurm_environment_gives_the_shard() -> None:
    assert batch.shard_from_env({}) is None
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "4",
           "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_STEP": "2"}
    assert batch.shard_from_env(env) == (4, 4)
    with pytest.raises(batch.BatchError, match="a step of 1 or more"):  # ZeroDivisionError
        batch.shard_from_env({**env, "SLURM_ARRAY_TASK_STEP": "0"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_a_jobs_set_names_is_not_replaced_by_the_default_one(tmp_path: Path) -> None:
    """``set: {device: cuda}`` on a machine without one: the run gave it the batch's default
    device and ran it on the CPU, its record then said the fast preset where its config
    resolved the paper's, and every run redid it, where the dry run said it fails. It fails,
    as the dry run says; ``--devices cpu`` replaces it, and its rerun finds it done."""
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/p0.png\n"
                                "    set: {device: cuda}\n",
                      defaults=TINY.replace("  device: cpu\n", ""))
    told = "device cuda requested but CUDA is not available"
    for dry in (["--dry-run"], []):
        result = invoke("run", path, "-q", *dry)
        assert result.exit_code == 1 and told in result.output, result.output
    assert not (tmp_path / "results" / "p0_denoise.png").exists()
    assert invoke("run", path, "-q", "--devices", "cpu").exit_code == 0
    again = invoke("run", path, "-q", "--devices", "cpu")
    assert again.exit_code == 0 and "0 done, 1 already done" in again.output


def test_an_output_under_a_top_folder_not_made_yet_is_listed(tmp_path: Path) -> None:
    """The case test walked up to the root and asked it for its name's other case: a
    ValueError's traceback, for a dry run as for a run (and for --summary there)."""
    top = Path("/") / f"dip-test-absent-{os.getpid()}-{tmp_path.name}"
    assert not top.exists()
    path = make_batch(tmp_path, f"  - task: denoise\n    input: photos/p0.png\n"
                                f"    output: {top}/results/\n")
    result = invoke("run", path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "to do" in result.output
    assert not top.exists()


def test_record_is_renamed_before_its_image(tmp_path: Path, monkeypatch) -> None:
    """A kill between the two renames must leave a record without an image (redone by the
    next run), never an image without its record."""
    renamed = []
    real = os.replace

    def replace(src, dst):
        renamed.append(Path(dst).name)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    out = tmp_path / "r.png"
    image.write_all_atomic([(out, lambda f: f.write(b"img")),
                            (Path(str(out) + ".json"), lambda f: f.write(b"{}"))])
    assert renamed == ["r.png.json", "r.png"]


def test_kill_9_then_a_rerun_finishes_only_what_is_left(tmp_path: Path, spawn_dip,
                                                       slowness: float) -> None:
    path = make_batch(tmp_path, GLOB_JOB, defaults=TINY.replace("iters: 4", "iters: 400"))
    proc = spawn_dip("run", path, "-q", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = tmp_path / "out" / "p0_denoise.png"
    # the image is renamed in last
    assert wait_until(first.exists, 120 * slowness, proc), "the first job did not finish"
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    for result in (tmp_path / "out").glob("*_denoise.png"):  # whatever is there is whole
        assert Path(str(result) + ".json").is_file()
        Image.open(result).load()
    done_at = first.stat().st_mtime_ns
    again = invoke("run", path, "-q")
    assert again.exit_code == 0, again.output
    assert first.stat().st_mtime_ns == done_at
    assert len(list((tmp_path / "out").glob("*_denoise.png"))) == 3
    assert not list((tmp_path / "out").glob(".*.part"))


def test_a_kill_while_replacing_a_result_never_leaves_the_old_image_as_done(
        tmp_path: Path, monkeypatch) -> None:
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/p0.png\n    output: out/\n")
    assert invoke("run", path, "-q").exit_code == 0
    path.write_text(path.read_text().replace("iters: 4", "iters: 6"))
    real = os.replace

    def killed_before_the_image(src, dst):
        if str(dst).endswith(".png"):
            raise OSError("killed")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_the_image)
    assert invoke("run", path, "-q").exit_code == 1
    monkeypatch.setattr(os, "replace", real)
    job = batch.load_batch(path)[0]
    assert not job.output.exists() and not batch.is_done(job)  # the old image is gone
    assert invoke("run", path, "-q").exit_code == 0
    assert json.loads(Path(str(job.output) + ".json").read_text())["iterations"] == 6


def test_a_changed_mask_convention_redoes_the_job(tmp_path: Path) -> None:
    path = make_batch(tmp_path, "  - task: inpaint\n    input: photos/p0.png\n"
                                "    mask: m.png\n    output: out/\n")
    mask = np.zeros((32, 32), np.uint8)
    mask[4:12, 4:12] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    assert invoke("run", path, "-q").exit_code == 0
    assert batch.is_done(batch.load_batch(path)[0])
    path.write_text(path.read_text().replace("mask: m.png", "mask: m.png\n    mask_keeps: true"))
    assert not batch.is_done(batch.load_batch(path)[0])


def test_only_images_are_inputs_and_a_contact_sheet_is_written(tmp_path: Path) -> None:
    path = make_batch(tmp_path, "  - task: denoise\n    input: photos/*\n    output: photos/\n"
                                "    gif: true\n    save_every: 2\n")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    assert invoke("run", path, "-q").exit_code == 0
    # results, records, GIFs, snapshots, the summary and its contact sheet now share the
    # folder: the same 3 jobs remain
    assert len(batch.load_batch(path)) == 3
    # 4 cells a row (two 128 px thumbnails + 12 px), 1 row of 128 px + 40 px text, 8 px margins
    assert Image.open(tmp_path / "photos" / "summary.png").size == (4 * 268 + 8, 168 + 8)
    assert "0 done, 3 already done" in invoke("run", path, "-q").output


LONG = TINY.replace("iters: 4", "iters: 100000\n  stop: fixed\n  save_every: 5")


def _two_workers_running(tmp_path: Path, spawn_dip, slowness: float):
    """``dip run --workers 2`` on three endless jobs, once both workers are fitting."""
    path = make_batch(tmp_path, GLOB_JOB, defaults=LONG)
    proc = spawn_dip("run", path, "-q", "--workers", 2)
    steps = [tmp_path / "out" / f".p{i}_denoise.png.steps.dip-new" for i in (0, 1)]  # staged
    assert wait_until(lambda: all(s.exists() and any(s.iterdir()) for s in steps),
                      120 * slowness, proc), proc.stderr.read()
    return proc


def _interrupted_batch_state(tmp_path: Path) -> None:
    for i in (0, 1):  # the running jobs kept their estimate
        record = json.loads((tmp_path / "out" / f"p{i}_denoise.png.json").read_text())
        assert record["stop_reason"] == "interrupted"
    assert not (tmp_path / "out" / "p2_denoise.png").exists()  # queued: never started
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"]["interrupted"] == 2 and summary["counts"]["pending"] == 1


def test_ctrl_c_in_one_process_lists_the_jobs_that_never_started(tmp_path: Path,
                                                                  monkeypatch) -> None:
    # without --workers the summary held only the jobs that had started
    path = make_batch(tmp_path, GLOB_JOB)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "run_pack", interrupted)
    result = invoke("run", path, "-q", "--pack", "1")
    assert result.exit_code == 130, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # the jobs never started are pending, not interrupted (52 "interrupted" lines for 2 jobs
    # that were running), and the table leaves them to the line of counts
    assert [row["status"] for row in summary["jobs"]] == ["interrupted", "pending", "pending"]
    assert json.dumps(summary).count(batch.NOT_STARTED) == 2
    assert "pending" not in result.output.split("\n", 1)[1].rsplit("\n", 2)[0]
    assert "interrupted (1 stopped, 2 not started)" in result.output


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a process group")
def test_ctrl_c_with_workers_keeps_estimates_starts_nothing_new_and_exits_130(
        tmp_path: Path, spawn_dip, slowness: float) -> None:
    proc = _two_workers_running(tmp_path, spawn_dip, slowness)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    _, err = proc.communicate(timeout=60 * slowness)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    _interrupted_batch_state(tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")
def test_sigterm_to_the_batch_stops_its_workers_like_ctrl_c(tmp_path: Path, spawn_dip,
                                                           slowness: float) -> None:
    """kill, timeout and a SLURM time limit send SIGTERM to the parent alone: it passes it on,
    the running jobs keep their estimate (resumable), and no worker outlives it."""
    proc = _two_workers_running(tmp_path, spawn_dip, slowness)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60 * slowness)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "interrupted" in err
    _interrupted_batch_state(tmp_path)
    assert wait_until(lambda: not _group_members(proc.pid), 30 * slowness)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="SIGHUP")
def test_a_closed_terminal_stops_the_batch_and_its_workers_like_ctrl_c(
        tmp_path: Path, spawn_dip, slowness: float) -> None:
    """A terminal that closes sends SIGHUP to its whole foreground group: the workers died of
    it at once, their estimates lost and their claims left behind."""
    proc = _two_workers_running(tmp_path, spawn_dip, slowness)
    os.killpg(proc.pid, signal.SIGHUP)
    _, err = proc.communicate(timeout=60 * slowness)
    assert proc.returncode == 129, err
    assert "Traceback" not in err  # the resource tracker died of it, relaunched, and failed
    _interrupted_batch_state(tmp_path)
    assert wait_until(lambda: not _group_members(proc.pid), 30 * slowness)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="SIGHUP")
def test_a_batch_started_with_nohup_runs_on_when_the_terminal_closes(tmp_path: Path,
                                                                     slowness: float) -> None:
    """nohup ignores SIGHUP for the batch, and its workers inherit that: they must not turn
    it into a stop of their job as they turn Ctrl-C."""
    import subprocess

    from conftest import _kill_group, dip_command

    def nohup() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    path = make_batch(tmp_path, GLOB_JOB, defaults=LONG)
    proc = subprocess.Popen(dip_command() + ["run", str(path), "-q", "--workers", "2"],
                            start_new_session=True, preexec_fn=nohup, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        steps = [tmp_path / "out" / f".p{i}_denoise.png.steps.dip-new" for i in (0, 1)]  # staged
        assert wait_until(lambda: all(s.exists() and any(s.iterdir()) for s in steps),
                          120 * slowness, proc)
        os.killpg(proc.pid, signal.SIGHUP)
        time.sleep(3 * slowness)
        assert proc.poll() is None  # the batch runs on
        assert not list((tmp_path / "out").glob("*.json"))  # and no job stopped
    finally:
        _kill_group(proc.pid)
        proc.communicate(timeout=60 * slowness)


@pytest.mark.skipif(sys.platform == "win32", reason="process groups")
def test_workers_of_a_killed_batch_stop_instead_of_running_on(tmp_path: Path, spawn_dip,
                                                             slowness: float) -> None:
    """After ``kill -9`` of the parent, each worker notices, keeps its job's estimate and
    exits (before: they ran their 100000 steps on as orphans)."""
    proc = _two_workers_running(tmp_path, spawn_dip, slowness)
    proc.kill()
    proc.wait()
    assert wait_until(lambda: not _group_members(proc.pid), 60 * slowness), \
        "workers outlived their killed parent"
    for i in (0, 1):
        record = json.loads((tmp_path / "out" / f"p{i}_denoise.png.json").read_text())
        assert record["stop_reason"] == "interrupted"


def test_a_file_name_that_is_not_utf8_runs_and_resumes_like_any_other(tmp_path: Path) -> None:
    path = make_batch(tmp_path, GLOB_JOB)
    odd = tmp_path / "photos" / os.fsdecode(b"x\xff.png")  # "x\udcff.png"
    try:
        save(synthetic(32), odd)
    except (OSError, UnicodeError):
        pytest.skip("this file system takes only UTF-8 names")
    result = invoke("run", path, "-q")
    assert result.exit_code == 0, result.output
    assert "4 done" in result.output
    # the summary names the file the job read: its bytes in the table, an escape in the JSON
    out = tmp_path / "out"
    assert os.fsencode(odd) in (out / "summary.csv").read_bytes()
    data = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert str(odd) in {job["input"] for job in data["jobs"]}
    # the next run takes the summary for dip's own and skips every job
    again = invoke("run", path, "-q")
    assert again.exit_code == 0 and "0 done, 4 already done" in again.output, again.output


def test_a_seed_is_the_same_as_before_for_a_utf8_name() -> None:
    # the seeds of UTF-8 names never change (a rerun's results stay as they were)
    assert batch.job_seed(0, "photos/p0.png") == 4805299697481278698
    assert batch.job_seed(7, "Été/café ☕.png") == 7366903787533744362
    assert batch.job_seed(0, os.fsdecode(b"x\xff.png")) != batch.job_seed(0, "x\ufffd.png")


def test_a_jobs_warning_names_the_batch_key_not_the_flag(tmp_path: Path, monkeypatch) -> None:
    import warnings

    from dip.cli.main import show_warning

    monkeypatch.setattr(warnings, "showwarning", show_warning)  # as dip's main() does
    mask = np.full((32, 32), 255, np.uint8)
    mask[4:8, 4:8] = 0  # the holes drawn black: 98 % to fill
    Image.fromarray(mask).save(tmp_path / "m.png")
    path = make_batch(tmp_path, "  - {task: inpaint, input: photos/p0.png, mask: m.png}\n")
    for args in (["-q"], ["--dry-run", "--overwrite"]):  # (the dry run said --mask-keeps)
        result = invoke("run", path, *args)
        assert result.exit_code == 0, result.output
        assert "is it inverted? (white marks the holes; 'mask_keeps' reads white" in \
            result.output


def test_a_resumed_batch_lists_its_jobs_in_order_with_the_earlier_runs_figures(
        tmp_path: Path) -> None:
    # a job done by an earlier run was a blank 'skipped' row (no steps, no stop, no PSNR)
    # listed before the others
    path = make_batch(tmp_path, GLOB_JOB)
    assert invoke("run", path, "-q").exit_code == 0
    first = json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]
    (tmp_path / "out" / "p0_denoise.png").unlink()
    assert invoke("run", path, "-q").exit_code == 0
    again = json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"]
    assert [Path(r["input"]).name for r in again] == ["p0.png", "p1.png", "p2.png"]
    assert [r["status"] for r in again] == ["done", "skipped", "skipped"]
    for before, after in zip(first[1:], again[1:]):
        assert after["steps"] == before["steps"] and after["steps"] is not None
        for key in ("returned_step", "stop_reason", "device", "psnr", "ssim"):
            assert after[key] == before[key], key


def test_a_shard_that_found_another_list_than_its_arrays_others_says_so(
        tmp_path: Path) -> None:
    # a photo added between two shards' starts moved the slices: 8 of 25 jobs were in no
    # shard's, every shard exiting 0, not a word
    path = make_batch(tmp_path, GLOB_JOB)

    def shard(k: int, array: str | None = "77"):
        env = {"SLURM_ARRAY_TASK_ID": str(k - 1), "SLURM_ARRAY_TASK_COUNT": "2",
               "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_JOB_ID": array}
        return invoke("run", path, "-q", env=env)

    assert "files were added or removed" not in shard(1).output
    save(synthetic(32), tmp_path / "photos" / "p0b.png")
    moved = shard(2)
    assert moved.exit_code == 0
    assert ("summary.shard-1-of-2.json is of a shard that found 3 jobs, this one 4: files "
            "were added or removed between their starts") in moved.output
    summary = json.loads((tmp_path / "out" / "summary.shard-2-of-2.json").read_text())
    assert summary["batch"]["jobs"] == 4 and summary["batch"]["array"] == "77"
    # the same list: nothing to say; another array's summaries (last week's run) are not
    # compared
    assert "added or removed" not in shard(1).output
    assert "added or removed" not in shard(2, "78").output


def test_a_users_picture_where_a_result_would_go_refuses_the_batch(tmp_path: Path) -> None:
    # it was dropped from the inputs without a word, its producer failed "already exists",
    # and --overwrite replaced it, never restored itself
    path = make_batch(tmp_path, "  - {task: denoise, input: photos/, output: photos/}\n")
    mine = save(synthetic(32), tmp_path / "photos" / "p0_denoise.png")
    before = mine.read_bytes()
    for extra in ([], ["--overwrite"]):
        result = invoke("run", path, "-q", *extra)
        assert result.exit_code == 2
        assert ("p0_denoise.png is where the result of p0.png goes, and dip did not write it "
                "(no record beside it)") in result.output
    assert mine.read_bytes() == before
    # with a record beside it, it is dip's (one its record no longer knows, after a move
    # and an edit of the photo, say): left to the job's own check, as before
    Path(str(mine) + ".json").write_text("{}")
    assert "is where the result" not in invoke("run", path, "-q").output
    Path(str(mine) + ".json").unlink()
    mine.unlink()  # dip's own results there are left out, as before
    assert invoke("run", path, "-q").exit_code == 0
    assert invoke("run", path, "-q").exit_code == 0
    # a picture where a report would go, none asked for: no refusal
    save(synthetic(32), tmp_path / "photos" / "p1_denoise_report.png")
    assert invoke("run", path, "-q", "--dry-run").exit_code == 0


def test_a_refused_jobs_set_up_warnings_are_dropped_and_a_running_jobs_are_shown(
        tmp_path: Path, recwarn) -> None:
    """A job refused after a warning of its set-up (a 16-bit input written as JPEG, then a
    reference of another size) showed that warning before its one 'failed' line, the
    warning of a run that did not happen; a job that runs still shows it."""
    deep = np.random.default_rng(0).integers(0, 65535, (32, 32), np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    Image.fromarray(np.zeros((24, 24), np.uint8)).save(tmp_path / "small.png")
    path = tmp_path / "batch.yaml"
    path.write_text(f"defaults:\n  {TINY}jobs:\n"
                    "  - {task: denoise, input: deep.png, output: refused.jpg, "
                    "reference: small.png}\n"
                    "  - {task: denoise, input: deep.png, output: runs.jpg}\n")
    refused, runs = batch.load_batch(path)
    row = batch.run_job(refused)
    assert row.status == "failed" and "is 24x24 but the result will be 32x32" in row.error
    assert [str(w.message) for w in recwarn if issubclass(w.category, DipWarning)] == []
    assert not (tmp_path / "refused.jpg").exists()
    assert batch.run_job(runs).status == "done"
    said = [str(w.message) for w in recwarn if issubclass(w.category, DipWarning)]
    assert any("16-bit samples are rounded to 8 bits" in text for text in said), said


def test_a_summary_name_keeps_what_is_not_its_extension(tmp_path: Path) -> None:
    """--summary nightly.2024-12-07 wrote nightly.csv (the date taken for an extension), and
    two nights' summaries were one file."""
    path = make_batch(tmp_path, GLOB_JOB)
    jobs = batch.load_batch(path)
    for given, csv in (("nightly.2024-12-07", "nightly.2024-12-07.csv"), ("s.csv", "s.csv"),
                       ("s.JSON", "s.csv"), ("s.png", "s.csv"), ("s", "s.csv"),
                       ("run.v2.csv", "run.v2.csv")):
        csv_path, json_path = batch.summary_paths(jobs, tmp_path / given, None)
        assert (csv_path.name, json_path.name) == (csv, csv[:-4] + ".json"), given


def test_an_empty_devices_or_shard_is_refused_not_taken_for_none_given(tmp_path: Path) -> None:
    """--shard "$SHARD" with SHARD unset ran the shard SLURM's variables named (or every
    job), and --devices '' the default devices, without a word."""
    path = make_batch(tmp_path, GLOB_JOB)
    slurm = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3"}
    result = invoke("run", path, "--dry-run", "--shard", "", env=slurm)
    assert result.exit_code == 2 and "--shard expects K/N with 1 <= K <= N, got ''" in \
        result.output, result.output
    result = invoke("run", path, "--dry-run", "--devices", "")
    assert result.exit_code == 2 and "unknown device ''" in result.output, result.output
    assert not (tmp_path / "out").exists()
