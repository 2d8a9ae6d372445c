"""dip run --pack: jobs with the same settings fitted side by side in one group, each keeping
its own seed, record, files, failure and resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from dip import batch
from dip.cli.main import cli

from conftest import save, synthetic

TINY = ("set: {net.channels_down: [8, 8, 8, 8, 8], net.channels_up: [8, 8, 8, 8, 8]}\n"
        "  iters: 4\n  device: cpu\n  seed: 0\n")


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _batch(tmp_path: Path, jobs: str) -> Path:
    (tmp_path / "photos").mkdir(exist_ok=True)
    for i in range(3):
        save(synthetic(32).roll(i * 5, -1), tmp_path / "photos" / f"p{i}.png")
    path = tmp_path / "batch.yaml"
    path.write_text(f"defaults:\n  {TINY}jobs:\n{jobs}")
    return path


def test_a_pack_writes_every_jobs_own_result_and_record(tmp_path: Path) -> None:
    path = _batch(tmp_path, "  - {task: denoise, input: photos/*.png, output: out/}\n")
    result = invoke("run", path, "--pack", "3", "-q")
    assert result.exit_code == 0, result.output
    records = [json.loads((tmp_path / "out" / f"p{i}_denoise.png.json").read_text())
               for i in range(3)]
    assert [r["iterations"] for r in records] == [4, 4, 4]
    assert len({r["seed"] for r in records}) == 3  # each job keeps its own derived seed
    images = [np.asarray(Image.open(tmp_path / "out" / f"p{i}_denoise.png")) for i in range(3)]
    assert not np.array_equal(images[0], images[1])
    # done means done: a rerun packs nothing and redoes nothing
    assert "0 done, 3 already done" in invoke("run", path, "--pack", "3", "-q").output


def test_a_job_that_fails_in_a_pack_fails_alone(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "small_mask.png")
    path = _batch(tmp_path, "  - {task: inpaint, input: photos/p0.png, mask: small_mask.png, "
                            "output: out/a.png}\n"
                            "  - {task: inpaint, input: photos/p1.png, mask_color: '#ff00ff', "
                            "output: out/b.png}\n")
    save(synthetic(32), tmp_path / "photos" / "p1.png")
    result = invoke("run", path, "--pack", "2", "-q")
    assert result.exit_code == 1, result.output
    assert "small_mask" in result.output or "mask" in result.output
    assert not (tmp_path / "out" / "a.png").exists()
    assert (tmp_path / "out" / "b.png").is_file() and (tmp_path / "out" / "b.png.json").is_file()


def test_an_unexpected_error_in_a_pack_runs_its_jobs_alone(tmp_path: Path,
                                                           monkeypatch) -> None:
    # a member's bug (an overflow, say) raised out of the group took the whole batch down,
    # with a traceback and no summary
    def broken(*args, **kwargs):
        raise OverflowError("one member's unexpected error")

    monkeypatch.setattr(batch, "restore_pack", broken)
    path = _batch(tmp_path, "  - {task: denoise, input: photos/*.png, output: out/}\n")
    result = invoke("run", path, "--pack", "3", "-q")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert all((tmp_path / "out" / f"p{i}_denoise.png").is_file() for i in range(3))


def test_only_jobs_with_the_same_step_settings_share_a_pack(tmp_path: Path) -> None:
    path = _batch(tmp_path, "  - {task: denoise, input: photos/p0.png, output: out/a.png}\n"
                            "  - {task: denoise, input: photos/p1.png, output: out/b.png}\n"
                            "  - {task: denoise, input: photos/p2.png, output: out/c.png, "
                            "iters: 5}\n")
    jobs = batch.load_batch(path)
    assert [len(p) for p in batch.packs(jobs, 4)] == [2, 1]
    assert [len(p) for p in batch.packs(jobs, 1)] == [1, 1, 1]


def test_pack_must_be_auto_or_a_positive_number(tmp_path: Path) -> None:
    path = _batch(tmp_path, "  - {task: denoise, input: photos/p0.png}\n")
    for pack in ("zero", "¹"):  # ('¹' is a digit to str.isdigit, and int() raised)
        result = invoke("run", path, "--pack", pack)
        assert result.exit_code == 2 and "--pack" in result.output, result.output


def test_a_packed_job_gives_the_image_it_gives_alone(tmp_path: Path) -> None:
    """Members are independent: on one thread each, a job's image does not depend on which
    jobs share its pack."""
    path = _batch(tmp_path, "  - {task: denoise, input: photos/*.png, output: out/}\n")
    path.write_text(path.read_text().replace("net.channels_down", "perf.threads: 1, "
                                                                   "net.channels_down"))
    images = {}
    for pack in ("1", "3"):
        assert invoke("run", path, "--pack", pack, "--overwrite", "-q").exit_code == 0
        images[pack] = [np.asarray(Image.open(tmp_path / "out" / f"p{i}_denoise.png"))
                        for i in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(images["1"], images["3"]))


def test_a_packed_job_of_one_fit_records_its_one_thread_and_reruns_to_its_image(
        tmp_path: Path) -> None:
    """A job of one fit runs on the free cores alone but on one thread in a pack: its record
    said auto, and a rerun from it on an idle machine gave another image (20 grey levels
    apart). (A job whose threads are fixed above one is not packed: test_a_single_fit_...)"""
    path = _batch(tmp_path, "  - {task: denoise, input: photos/*.png, output: out/, "
                            "restarts: 1}\n")
    assert invoke("run", path, "--pack", "2", "-q").exit_code == 0
    record_path = tmp_path / "out" / "p0_denoise.png.json"
    record = json.loads(record_path.read_text())
    assert record["config"]["perf"]["threads"] == "1"
    assert record["threads"] == {"fits_at_once": 1, "per_fit": 1}
    # the batch still asks perf.threads auto: the job is done all the same (threads are how
    # it ran, as the device is, not what was asked)
    assert "0 done, 3 already done" in invoke("run", path, "--pack", "2", "-q").output
    rerun = tmp_path / "rerun.png"
    result = invoke("denoise", tmp_path / "photos" / "p0.png", "--config", record_path,
                    "-o", rerun, "-q")
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(rerun)),
                          np.asarray(Image.open(tmp_path / "out" / "p0_denoise.png")))


def test_a_pack_is_split_where_its_jobs_together_would_not_fit_in_memory() -> None:
    from types import SimpleNamespace

    from dip import run

    base = 600 * 2 ** 20  # the process itself, fixed: its real RSS moves as the suite runs
    gb = 2 ** 30

    def job(peak_gb: float, budget_gb: float | None = 10, stacked_gb: float = 0):
        layout = SimpleNamespace(peak_bytes=base + int(peak_gb * gb),
                                 budget=None if budget_gb is None else int(budget_gb * gb),
                                 packed_bytes=base + int(stacked_gb * gb) if stacked_gb else 0)
        return (0, None, None, SimpleNamespace(layout=layout))

    assert [len(g) for g in run.by_memory([job(3), job(3), job(3), job(3)], base)] == [3, 1]
    assert [len(g) for g in run.by_memory([job(12), job(1), job(1)], base)] == [1, 2]
    assert [len(g) for g in run.by_memory([job(3, None)] * 4, base)] == [4]  # no budget known
    # on CUDA packed jobs share a stack, whose steps cost more (dip.layout.STACK_STEP_MEMORY)
    assert [len(g) for g in run.by_memory([job(3, stacked_gb=4)] * 4, base)] == [2, 2]


def test_a_packed_rerun_clears_the_old_snapshots_as_a_single_run_does(tmp_path: Path) -> None:
    path = _batch(tmp_path, "  - {task: denoise, input: photos/*.png, output: out/, "
                            "save_every: 2}\n")
    assert invoke("run", path, "--pack", "3", "-q").exit_code == 0
    steps = tmp_path / "out" / "p0_denoise_steps"
    stale = steps / "step_99999.png"
    stale.write_bytes(b"an earlier run's snapshot")
    (steps / ".step_00004.part").write_bytes(b"half")
    assert invoke("run", path, "--pack", "3", "--overwrite", "-q").exit_code == 0
    assert not stale.exists() and not (steps / ".step_00004.part").exists()
    assert any(steps.glob("step_*.png"))


def test_packed_jobs_with_different_noise_keep_their_own_budget(tmp_path: Path) -> None:
    """The fast preset grows the budget of a less noisy image (stop.budget_sigma): in a pack
    each job fits with its own budget and gives the image it gives alone."""
    import torch

    from dip import operators

    photos = tmp_path / "photos"
    photos.mkdir()
    for name, sigma in (("quiet", 5), ("loud", 60)):
        y = operators.add_noise(synthetic(32), sigma, torch.Generator().manual_seed(0))
        save(y, photos / f"{name}.png")
    path = tmp_path / "batch.yaml"
    path.write_text("defaults: {preset: fast, iters: 4, device: cpu, seed: 0, "
                    "set: {perf.threads: 1, stop.patience: 1000, stop.budget_sigma: 25}}\n"
                    "jobs:\n  - {task: denoise, input: photos/*.png, output: out/}\n")
    images = {}
    for pack in ("1", "2"):
        result = invoke("run", path, "--pack", pack, "--overwrite", "-q")
        assert result.exit_code == 0, result.output
        records = {n: json.loads((tmp_path / "out" / f"{n}_denoise.png.json").read_text())
                   for n in ("quiet", "loud")}
        assert records["quiet"]["budget"] == 8 and records["loud"]["budget"] == 4
        images[pack] = [np.asarray(Image.open(tmp_path / "out" / f"{n}_denoise.png"))
                        for n in ("quiet", "loud")]
    assert all(np.array_equal(a, b) for a, b in zip(images["1"], images["2"]))


def test_a_single_fit_on_threads_asked_for_is_not_packed(tmp_path: Path, monkeypatch) -> None:
    # packed, its fit ran on one thread, its record rewritten to say so: --set
    # perf.threads=2 gave another image than the same job alone (max 21 grey levels)
    one = ("  - {task: denoise, input: photos/p%d.png, output: out/%s.png, restarts: 1, "
           "set: {perf.threads: %s}}\n")
    path = _batch(tmp_path, one % (0, "a", 2) + one % (1, "b", 2) + one % (2, "c", 1))
    jobs = batch.load_batch(path)
    assert [len(p) for p in batch.packs(jobs, 4)] == [1, 1, 1]
    path = _batch(tmp_path, one % (0, "a", 1) + one % (1, "b", 1) + one % (2, "c", 1))
    assert [len(p) for p in batch.packs(batch.load_batch(path), 4)] == [3]  # one thread each
    # OMP_NUM_THREADS is the threads asked for, where perf.threads is auto
    path = _batch(tmp_path, one % (0, "a", "auto") + one % (1, "b", "auto"))
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert [len(p) for p in batch.packs(batch.load_batch(path), 4)] == [1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert [len(p) for p in batch.packs(batch.load_batch(path), 4)] == [2]
    # several fits a job run one thread each anyway: packed whatever the threads
    path = _batch(tmp_path, one.replace("restarts: 1", "restarts: 2") % (0, "a", 2)
                  + one.replace("restarts: 1", "restarts: 2") % (1, "b", 2))
    assert [len(p) for p in batch.packs(batch.load_batch(path), 4)] == [2]


def test_a_jobs_seed_key_keeps_a_path_above_the_batch_file(tmp_path: Path) -> None:
    # ../photos/a.png became the absolute path (the batch file's folder is resolved): its
    # seed was another, and a resumed batch redid the job
    (tmp_path / "batches").mkdir()
    _batch(tmp_path, "")
    path = tmp_path / "batches" / "b.yaml"
    path.write_text(f"defaults:\n  {TINY}jobs:\n"
                    "  - {task: denoise, input: ../photos/p0.png, output: ../out/}\n")
    (job,) = batch.load_batch(path)
    assert job.key == "../out/p0_denoise.png"
    assert job.seed == batch.job_seed(0, "../photos/p0.png")


def test_a_jobs_seed_does_not_depend_on_how_its_input_is_spelt(tmp_path: Path) -> None:
    path = _batch(tmp_path, "  - {task: denoise, input: photos/../photos/p0.png, output: a/}\n"
                            "  - {task: denoise, input: photos/p0.png, output: b/}\n"
                            "  - {task: denoise, input: ./photos/, output: c/}\n")
    path.write_text(path.read_text().replace("  seed: 0\n", ""))
    first, second, *folder = batch.load_batch(path)
    assert first.seed == second.seed == folder[0].seed
