"""The stages of :func:`dip.run.restore`, each called alone on tiny images: plan decides without
reading or writing, load reads and checks sizes, build makes the seeded setup, make_record
describes a fit (here a made-up one: no step runs in this file)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dip import image, run
from dip.errors import InputError
from dip.fitting import FitResult
from dip.request import RunRequest

from conftest import save, synthetic

TINY = ("net.channels_down=[8,8,8,8,8]", "net.channels_up=[8,8,8,8,8]",
        "net.channels_skip=[2,2,2,2,2]", "input.channels=4")


def _request(tmp_path: Path, task: str = "superres", **fields) -> RunRequest:
    fields.setdefault("input", save(synthetic(32), tmp_path / "small.png"))
    return RunRequest(task=task, device="cpu", overrides=TINY, **fields)


@pytest.fixture
def no_reads(monkeypatch):
    """Fail the test if a stage decodes an image."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"an image was read: {args}")
    monkeypatch.setattr(image, "load_image", refuse)
    monkeypatch.setattr(image, "load_mask", refuse)


def _tree(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def test_plan_without_an_input_is_an_input_error_and_reads_nothing(tmp_path: Path,
                                                                   no_reads) -> None:
    with pytest.raises(InputError, match="no input image given"):
        run.plan(RunRequest(task="denoise", output=tmp_path / "out.png"))
    assert not _tree(tmp_path)


def test_plan_decides_every_path_and_writes_nothing(tmp_path: Path, no_reads) -> None:
    out = tmp_path / "new" / "folder" / "big.png"
    request = _request(tmp_path, output=out, iters=100, gif=True, task_args={"factor": 2})
    before = _tree(tmp_path)  # the input
    p = run.plan(request)
    assert p.output == out and p.task.name == "superres"
    assert p.files["record"] == out.with_name("big.png.json")
    assert p.files["gif"] == out.with_name("big.gif")
    assert p.files["steps"] == out.with_name("big_steps")
    assert p.snapshot_every == 2  # a GIF of about 50 frames over the 100-step budget
    assert (p.cfg.factor, p.cfg.optim.iters, p.cfg.device) == (2, 100, "cpu")
    assert p.args["factor"] == 2 and p.reads == [tmp_path / "small.png"]
    assert _tree(tmp_path) == before  # not even the output's folder


def test_plan_refuses_a_result_that_exists_before_reading_anything(tmp_path: Path,
                                                                  no_reads) -> None:
    out = tmp_path / "taken.png"
    out.write_bytes(b"someone's file")
    with pytest.raises(InputError, match="already exists; use overwrite=True"):
        run.plan(_request(tmp_path, output=out))
    assert out.read_bytes() == b"someone's file"


def test_load_reads_the_pixels_and_sizes_the_result(tmp_path: Path) -> None:
    ref = save(synthetic(64), tmp_path / "ref.png")
    p = run.plan(_request(tmp_path, reference=ref, task_args={"factor": 2}, write=False))
    loaded = run.load(p)
    assert loaded.inputs.picture.pixels.shape == (1, 3, 32, 32)
    assert loaded.out_size == (64, 64)
    assert loaded.reference.shape == (1, 3, 64, 64)
    assert p.task.report_mask(loaded.inputs) is None  # nothing to black out

    wrong = save(synthetic(32), tmp_path / "wrong.png")
    p = run.plan(_request(tmp_path, reference=wrong, task_args={"factor": 2}, write=False))
    with pytest.raises(InputError, match="is 32x32 but the result will be 64x64"):
        run.load(p)


def test_load_gives_inpaintings_report_its_mask(tmp_path: Path) -> None:
    holes = torch.zeros(1, 1, 32, 32)
    holes[..., 8:16, 8:24] = 1
    mask = save(holes, tmp_path / "mask.png")
    p = run.plan(_request(tmp_path, task="inpaint", task_args={"mask": mask}, write=False))
    known = p.task.report_mask(run.load(p).inputs)
    assert known.shape == (1, 1, 32, 32)
    assert known.sum().item() == 32 * 32 - 8 * 16  # white in the mask = a hole


def test_build_makes_a_seeded_setup_and_leaves_the_callers_rng_alone(tmp_path: Path) -> None:
    p = run.plan(_request(tmp_path, task_args={"factor": 2}, write=False, seed=3))
    loaded = run.load(p)
    state = torch.random.get_rng_state()
    setup = run.build(p, loaded)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert setup.device == torch.device("cpu")
    assert setup.problem.observation.shape == (1, 3, 32, 32)
    assert setup.problem.out_size == (64, 64)
    assert setup.layout.tiles is None and len(setup.layout.parts) == 1  # one fit, whole
    first = setup.member(0)
    assert first.code.shape == (1, 4, 64, 64)  # input.channels at the result's size
    again = run.build(p, loaded).member(0)  # the same seed, the same weights and code
    assert torch.equal(again.code, first.code)
    assert all(torch.equal(a, b) for a, b in zip(again.net.state_dict().values(),
                                                  first.net.state_dict().values()))
    with torch.no_grad():
        estimate = first.net(first.code)
        assert estimate.shape == (1, 3, 64, 64)
        assert first.operator(estimate).shape == (1, 3, 32, 32)


def test_make_record_describes_the_fit_it_is_given(tmp_path: Path) -> None:
    ref = save(synthetic(64), tmp_path / "ref.png")
    out = tmp_path / "big.png"
    p = run.plan(_request(tmp_path, output=out, reference=ref, task_args={"factor": 2}))
    loaded = run.load(p)
    setup = run.build(p, loaded)
    estimate = loaded.reference.clone()
    result = FitResult(image=estimate, iterations=7, returned_iteration=5, stop_reason="auto",
                       peak_psnr=31.5, peak_iteration=4,
                       history={"step": [0, 5], "loss": [0.1234567891, 0.01],
                                "restores": [3]})
    restored = image.Picture(estimate, None, 8)
    record = run.make_record(p, loaded, setup, result, restored, 1.23456)
    assert (record.task, record.iterations, record.returned_iteration,
            record.stop_reason) == ("superres", 7, 5, "auto")
    assert record.input == str((tmp_path / "small.png").resolve())
    assert record.output == str(out.resolve())
    assert record.reference == str(ref.resolve())
    assert record.size == {"input": [32, 32], "output": [64, 64]}
    assert record.seconds == 1.235 and record.device == "cpu" and record.seed == p.cfg.seed
    assert record.config == p.cfg.to_dict() and record.config["factor"] == 2
    assert record.guard_restores == [3]
    assert record.history == {"step": [0, 5], "loss": [0.123457, 0.01]}
    # the factor is in the config
    assert record.task_args == {"kernel": "lanczos", "no_back_projection": False}
    assert set(record.fingerprints) == {"input", "reference"}
    m = record.metrics
    assert m["ssim"] == pytest.approx(1.0) and m["peak_psnr"] == 31.5
    assert {"psnr_y", "bicubic_psnr", "bicubic_psnr_y"} <= m.keys()  # the task's protocol
    assert not _tree(tmp_path) - {tmp_path / "small.png", ref}  # the record stage wrote nothing
    # the record serialises (a result equal to its reference: PSNR inf is written as null)
    data = json.loads(record.to_json())
    assert data["metrics"]["psnr"] is None and "metrics.psnr" in data["null_because"]


def test_library_misuse_is_a_clear_error_not_silence_or_a_deep_traceback(tmp_path: Path) -> None:
    import numpy as np

    import dip

    path = save(synthetic(16), tmp_path / "in.png")
    request = RunRequest(task="denoise", input=path, iters=2, write=False, device="cpu")
    # keyword arguments beside a RunRequest were dropped: write=False ignored wrote a file
    with pytest.raises(TypeError, match=r"takes no other arguments \(got iters, seed\)"):
        dip.restore(request, iters=5, seed=7)
    with pytest.raises(InputError, match="overrides takes 'key=value' strings.*config="):
        dip.restore("denoise", path, overrides={"optim.lr": 0.01}, write=False)
    with pytest.raises(InputError, match="overrides takes 'key=value' strings"):
        dip.restore("denoise", path, overrides=[("optim.lr", 0.01)], write=False)
    with pytest.raises(InputError, match="input must be a path to an image file, got ndarray"):
        dip.restore("denoise", np.zeros((16, 16, 3)), write=False)
    assert not list(tmp_path.glob("*_denoise*"))


def test_a_network_too_wide_for_the_machine_is_one_line_not_a_traceback(tmp_path: Path,
                                                                         monkeypatch) -> None:
    # net.channels_down=[100000, ...] failed in the layout's measuring net, before the fit's
    # own out-of-memory advice, with torch's allocator traceback
    from click.testing import CliRunner

    from dip import layout
    from dip.cli.main import cli

    def too_wide(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                           "allocate memory: you tried to allocate 360000000000 bytes.")

    monkeypatch.setattr(layout, "build_net", too_wide)
    path = save(synthetic(16), tmp_path / "in.png")
    out = tmp_path / "out.png"
    result = CliRunner().invoke(cli, ["denoise", str(path), "-o", str(out), "--iters", "2",
                                      "--device", "cpu"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("dip: error: out of memory on cpu building the network")
    assert "Traceback" not in result.output and not out.exists()


def test_a_record_reruns_with_the_tasks_own_settings_too(tmp_path: Path) -> None:
    """The kernel and the back-projection are the record's top-level keys, not its config:
    a rerun from the record (a file, or the mapping) makes the same image."""
    import dip

    small = save(synthetic(16), tmp_path / "small.png")
    fixed = (*TINY, "perf.threads=1")  # auto's threads follow the load, and the last bits too
    first = dip.restore("superres", small, factor=2, kernel="bicubic", no_back_projection=True,
                        iters=3, overrides=fixed, output=tmp_path / "a.png", device="cpu")
    plain = dip.restore("superres", small, factor=2, iters=3, overrides=fixed, write=False,
                        device="cpu")
    again = dip.restore("superres", small, config=tmp_path / "a.png.json", write=False)
    from_mapping = dip.restore("superres", small, config=[first.record], write=False)
    assert again.record["kernel"] == "bicubic" and again.record["no_back_projection"]
    assert torch.equal(again.picture.pixels, first.picture.pixels)
    assert torch.equal(from_mapping.picture.pixels, first.picture.pixels)
    assert not torch.equal(plain.picture.pixels, first.picture.pixels)
    # what the user gives wins over the record
    other = dip.restore("superres", small, config=tmp_path / "a.png.json", kernel="area",
                        write=False)
    assert other.record["kernel"] == "area"


def test_a_record_reruns_on_the_threads_its_fit_ran_on(tmp_path: Path, monkeypatch) -> None:
    """perf.threads auto follows the machine's load, and a thread count changes a fit's
    rounding: a record that said auto, made on a busy machine (1 thread), reran on a freer one
    (2 threads) as another image (40-55 dB apart in short runs). The record now names
    the threads of a fit that ran on one count; one whose count followed the load, and a
    group's (one thread per member whatever the count), keep auto."""
    import dip
    from dip import threads

    small = save(synthetic(24), tmp_path / "small.png")
    args = dict(factor=2, iters=60, overrides=TINY, device="cpu", write=False)
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    monkeypatch.setattr(threads.Neighbours, "free", lambda self: 1)
    busy = dip.restore("superres", small, **args)
    assert busy.record["config"]["perf"]["threads"] == "1"
    monkeypatch.setattr(threads, "free_cores", lambda: 2)
    monkeypatch.setattr(threads.Neighbours, "free", lambda self: 2)
    free = dip.restore("superres", small, **args)
    assert free.record["config"]["perf"]["threads"] == "2"
    assert not torch.equal(free.picture.pixels, busy.picture.pixels)  # what a rerun risked
    again = dip.restore("superres", small, config=[busy.record], write=False)
    assert torch.equal(again.picture.pixels, busy.picture.pixels)
    # another process took a core mid-fit: no one count replays it
    monkeypatch.setattr(threads.Neighbours, "free", lambda self: 1)
    monkeypatch.setattr(threads, "LOOK_SECONDS", 0.0)
    moved = dip.restore("superres", small, **args)
    assert moved.record["threads"]["changes"]
    assert moved.record["config"]["perf"]["threads"] == "auto"
    group = dip.restore("superres", small, **{**args, "restarts": 2})
    assert group.record["config"]["perf"]["threads"] == "auto"


@pytest.mark.parametrize("fields, message", [
    ({"task_args": {"factr": 2}}, "superres takes no option 'factr'"),
    ({"config": "missing.yaml"}, "config file not found: missing.yaml"),
    ({"overrides": "optim.lr"}, "expects key.path=value, got 'optim.lr'"),
    ({"max_pixels": 0}, "max_pixels must be >= 1, got 0"),
    ({"restarts": 101}, "restarts must be 100 or less, got 101"),
    ({"max_pixels": "100"}, "max_pixels must be a whole number, got str '100'"),
    ({"task_args": {"kernel": 3}}, "kernel must be a string, got int"),
    ({"config": [5]}, "config takes YAML files' paths and mappings"),
])
def test_a_request_built_by_hand_is_checked_as_restore_checks_its_arguments(
        tmp_path: Path, fields: dict, message: str) -> None:
    import dip

    small = save(synthetic(16), tmp_path / "small.png")
    with pytest.raises(InputError, match=re.escape(message)):
        dip.restore(RunRequest(task="superres", input=small, write=False, **fields))


def test_none_for_an_option_with_a_default_of_its_own_is_an_input_error(tmp_path: Path) -> None:
    """write=None wrote nothing without a word, max_pixels=None failed as a TypeError deep in
    the image reader, and a mapping given as the task as 'unhashable type' (a Python API
    sweep). None still means "from the config" where an option has no default of its own."""
    import dip

    small = save(synthetic(16), tmp_path / "small.png")
    for kwargs, message in (({"write": None}, "write must be True or False, got None"),
                            ({"max_pixels": None}, "max_pixels must be a whole number, got None"),
                            ({"overwrite": None}, "overwrite must be True or False, got None")):
        with pytest.raises(InputError, match=re.escape(message)):
            dip.restore("superres", small, **{"write": False, **kwargs})
    with pytest.raises(InputError, match="unknown task"):
        dip.restore({"task": "superres"}, small, write=False)
    result = dip.restore("superres", small, write=False, iters=None, seed=None, device="cpu",
                         overrides=(*TINY, "optim.iters=3"))
    assert result.record["iterations"] == 3 and result.record["seed"] == 0
    assert not list(tmp_path.glob("small_*"))


def test_a_restoration_and_its_progress_print_in_a_line(tmp_path: Path) -> None:
    """In a notebook `result` printed the record's curves, the first fit's image and every
    member's (thousands of numbers for one run); it says what it holds."""
    import dip

    small = save(synthetic(16), tmp_path / "small.png")
    said = []
    result = dip.restore("superres", small, write=False, iters=3, device="cpu",
                         overrides=TINY, progress=lambda p: said.append(repr(p)))
    shown = repr(result)
    assert shown.startswith("Restoration(task='superres', output=None, pixels=(1, 3, 64, 64), "
                            "stop_reason='budget', iterations=3")
    assert said[-1].startswith("Progress(step=3/3, loss=0.0")
    for text in (shown, repr(result.fit), *said):
        assert "tensor" not in text and len(text) < 300, text


@pytest.mark.parametrize("kwargs, message", [
    ({"mask_color": (0, 255, 0)}, "mask_color must be a string"),
    ({"mask_color": "green", "mask_tolerance": "x"}, "mask_tolerance must be a whole number"),
    ({"mask": 3}, "mask must be a path"),
    ({"mask": np.zeros((40, 40))}, "mask must be a path (str or pathlib.Path), got ndarray"),
    # restore's own: "no" was taken as true, 5 failed as 'not callable' after the set-up
    ({"keep_on_interrupt": "no"}, "keep_on_interrupt must be True or False, got str 'no'"),
    ({"progress": 5}, "progress must be a function (or None), got int"),
    ({"on_start": "print"}, "on_start must be a function (or None), got str"),
    # the type first: its message said "uncertainty=True is a file beside the result"
    ({"uncertainty": "no", "restarts": 2}, "uncertainty must be True or False, got str 'no'"),
])
def test_a_python_argument_of_the_wrong_type_is_an_input_error(tmp_path: Path, kwargs: dict,
                                                               message: str) -> None:
    import dip

    small = save(synthetic(16), tmp_path / "small.png")
    with pytest.raises(InputError, match=re.escape(message)) as caught:
        dip.restore("inpaint", small, write=False, **kwargs)
    assert "[[" not in str(caught.value)  # an array's contents are not shown


@pytest.mark.parametrize("args, kwargs, message", [
    # the named input replaced the positional one without a word
    (("denoise", "a.png"), {"input": "b.png"}, "restore() got input twice: 'a.png' and "
                                               "input='b.png'"),
    (("denoise",), {"task": "inpaint"}, "restore() got task twice"),
    ((), {}, "restore() needs a task"),
])
def test_restores_task_and_input_are_given_once(args: tuple, kwargs: dict,
                                                message: str) -> None:
    import dip

    with pytest.raises(TypeError, match=re.escape(message)):
        dip.restore(*args, write=False, **kwargs)


def test_restores_task_and_input_may_be_given_by_name(tmp_path: Path) -> None:
    """restore(task="denoise", ...) was 'missing 1 required positional argument: request'."""
    import dip

    small = save(synthetic(16), tmp_path / "small.png")
    result = dip.restore(task="denoise", input=small, write=False, iters=2, device="cpu",
                         overrides=("optim.restarts=1", *TINY))
    assert result.record["input"] == str(small.resolve())


@pytest.mark.parametrize("kwargs, message", [
    ({"noise": "25"}, "noise must be a number, got str"),
    ({"noise": 5, "seed": 2 ** 70}, "seed must be a whole number in 0 .. 2**63-1"),
    ({"noise": 5, "seed": "1"}, "seed must be a whole number"),
    ({"noise": 5, "seed": np.float64(1.5)}, "seed must be a whole number in 0 .. 2**63-1, got 1.5"),
    ({"noise": 5, "overwrite": "no"}, "overwrite must be True or False, got str 'no'"),
])
def test_corrupt_checks_its_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    import dip

    small = save(synthetic(16), tmp_path / "small.png")
    theirs = (tmp_path / "n.png")
    theirs.write_bytes(b"the user's")  # overwrite="no" replaced it
    with pytest.raises(InputError, match=re.escape(message)):
        dip.corrupt(small, theirs, **kwargs)
    assert theirs.read_bytes() == b"the user's"


def test_a_names_length_is_counted_as_its_file_system_counts_it(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """In bytes of UTF-8 on Linux and macOS, in UTF-16 units on Windows: 100 Chinese
    characters (300 bytes) were refused there as over 255."""
    assert run.name_length("写" * 100, windows=False) == 300
    assert run.name_length("写" * 100, windows=True) == 100
    assert run.name_length("😀.png", windows=True) == 6  # a surrogate pair counts two
    monkeypatch.setattr(run, "WINDOWS", True)
    monkeypatch.setattr(run, "name_limit", lambda folder: 255)
    ok = tmp_path / ("写" * 200 + ".png")
    run.check_name_length(ok, [ok.with_name(ok.name + ".json")])
    long = tmp_path / ("写" * 240 + ".png")
    with pytest.raises(InputError, match=r"is too long \(244 characters\).*at most 235 "
                                         r"characters"):
        run.check_name_length(long, [long.with_name(long.name + ".json")])


def test_the_meshgrid_input_is_the_pictures_coordinates(tmp_path: Path) -> None:
    """The paper's Fig. 6 input (``input.kind: meshgrid``, 2 channels): x and y in [0, 1]
    at the result's size; a run with it."""
    import dip
    from dip.inputs import make_code

    code = make_code("meshgrid", 2, (3, 5), 0.1, torch.Generator())
    assert code.shape == (1, 2, 3, 5)
    assert torch.equal(code[0, 0, 0], torch.linspace(0, 1, 5))  # x along a row
    assert torch.equal(code[0, 1, :, 0], torch.linspace(0, 1, 3))  # y down a column
    small = save(synthetic(16), tmp_path / "small.png")
    r = dip.restore("superres", small, factor=2, iters=3, write=False, device="cpu",
                    overrides=(*TINY[:3], "input.kind=meshgrid", "input.channels=2"))
    assert r.picture.pixels.shape == (1, 3, 32, 32)
    assert (r.record["config"]["input"]["kind"], r.record["config"]["input"]["channels"]) == \
        ("meshgrid", 2)


@pytest.mark.parametrize("name", ["cuda:01", "cuda:99999999999999999999", "cuda:\u0661"])
def test_a_device_torch_cannot_parse_is_unknown(name: str) -> None:
    with pytest.raises(InputError, match="unknown device"):
        run.resolve_device(name)


def test_a_fit_that_diverges_with_the_guard_off_writes_nothing(tmp_path: Path) -> None:
    """Not even the folders the result would have gone into (created for its claim)."""
    import dip
    from dip.errors import RunError

    path = save(synthetic(16), tmp_path / "in.png")
    (tmp_path / "kept").mkdir()  # a folder that was there before stays
    before = _tree(tmp_path)
    with pytest.raises(RunError, match="the fit diverged"):
        dip.restore("denoise", path, iters=20, device="cpu",
                    output=tmp_path / "kept" / "new" / "deeper" / "o.png", report=True,
                    overrides=(*TINY, "optim.lr=1e300", "optim.guard=0", "optim.restarts=1"))
    assert _tree(tmp_path) == before


def test_auto_tiles_shrink_to_an_explicit_memory_budget(tmp_path: Path, monkeypatch) -> None:
    from dip import estimate

    # the process's own memory held still: it grows as tests run, by more than tiles differ
    monkeypatch.setattr(estimate, "process_bytes", lambda: 300 * 2 ** 20)
    path = save(synthetic(400), tmp_path / "in.png")
    peaks = {side: run.forecast(_request(tmp_path, "denoise", input=path, tile=str(side)))
             .layout.peak_bytes for side in (256, 128)}
    assert peaks[128] < peaks[256]
    budget = (peaks[128] + peaks[256]) / 2 / 2 ** 30
    start = run.forecast(_request(tmp_path, "denoise", input=path, max_memory=budget))
    assert start.layout.side == 128 and start.layout.peak_bytes <= budget * 2 ** 30
    with pytest.raises(InputError, match="max_memory of 1e-06 GB is less than the run needs"):
        run.forecast(_request(tmp_path, "denoise", input=path, max_memory=1e-6))
    # a smaller tile is advised only where there is one
    with pytest.raises(InputError, match=r"in tiles of 64 px .*give a smaller tile, 32 or more"):
        run.forecast(_request(tmp_path, "denoise", input=path, max_memory=1e-6, tile="64"))
    with pytest.raises(InputError, match=r"in tiles of 32 px \(.* GB, the smallest dip uses\)"):
        run.forecast(_request(tmp_path, "denoise", input=path, max_memory=1e-6, tile="32"))


@pytest.mark.parametrize("picture", ["report", "gif", "uncertainty"])
def test_a_picture_asked_for_without_writing_is_refused(tmp_path: Path, picture: str) -> None:
    """It was silently not made."""
    import dip
    from dip.errors import InputError

    path = save(synthetic(16), tmp_path / "in.png")
    with pytest.raises(InputError, match=f"{picture}=True is a file beside the result"):
        dip.restore("denoise", path, write=False, iters=2, device="cpu",
                    **{picture: True, "restarts": 2})


def test_numpys_numbers_are_taken_as_pythons(tmp_path: Path) -> None:
    import dip

    path = save(synthetic(16), tmp_path / "in.png")
    # numpy's True too: write=np.bool_(False) was 'must be True or False, got bool'
    result = dip.restore("denoise", path, write=np.bool_(False), iters=np.int64(2),
                         seed=np.int32(3), device="cpu", overrides=("optim.restarts=1", *TINY),
                         keep_on_interrupt=np.bool_(True))
    assert (result.record["iterations"], result.record["seed"]) == (2, 3)
    assert not (tmp_path / "in_denoise.png").exists()
    # dip.corrupt too: its seed=np.int64(0) was 'must be a whole number'
    dip.corrupt(path, tmp_path / "n.png", noise=np.float32(25), seed=np.int64(0))
    dip.corrupt(path, tmp_path / "n.png", noise=25, overwrite=np.bool_(True))
    assert (tmp_path / "n.png").exists()
    with pytest.raises(InputError, match="iters must be a whole number, got float"):
        dip.restore("denoise", path, write=False, iters=np.float64(2.5))


def test_a_restart_that_failed_is_said_not_only_recorded(tmp_path: Path, monkeypatch) -> None:
    """The others' average is the result; the failure was in the record's members only."""
    import dip
    from dip import fitting
    from dip.errors import RunError

    real = fitting._Fit.outcome

    def second_fails(self):
        return RunError("the fit diverged (made up)") if self.index == 1 else real(self)

    monkeypatch.setattr(fitting._Fit, "outcome", second_fails)
    path = save(synthetic(16), tmp_path / "in.png")
    with pytest.warns(image.DipWarning, match=r"1 of 2 fits failed and are left out of the "
                                              r"result \(restart \d: the fit diverged"):
        result = dip.restore("denoise", path, write=False, iters=2, device="cpu",
                             restarts=2, overrides=TINY)
    assert result.picture.pixels.shape == (1, 3, 16, 16)


def test_a_switch_of_the_wrong_type_is_named_not_switched_on(tmp_path: Path) -> None:
    import dip

    path = save(synthetic(16), tmp_path / "in.png")
    with pytest.raises(InputError, match=r"^overwrite must be True or False, got int '1'$"):
        dip.restore("denoise", path, write=False, overwrite=1)  # was 'overwrite=True must be'


def test_the_psnr_curve_of_a_fit_in_progress_warns_nothing(tmp_path: Path) -> None:
    """The curve's samples are back-projected as the result is; a kernel too wide for it
    warns once, for the result, not at every sample of the curve."""
    import warnings

    clean = save(synthetic(32), tmp_path / "clean.png")
    small = save(image.resize(synthetic(32), (8, 8), "bicubic"), tmp_path / "small.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run.restore("superres", small, reference=clean, iters=4, write=False, device="cpu",
                    kernel="gaussian:4",
                    overrides=(*TINY, "output.metrics_every=1", "stop.rule=fixed"))
    said = [w for w in caught if "not back-projected" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]


def test_a_calibration_cache_that_cannot_be_written_leaves_no_part_file(tmp_path: Path,
                                                                        monkeypatch) -> None:
    """A full disk under ~/.cache: the run's result is the same, and nothing is left there."""
    import errno

    import dip

    path = save(synthetic(16), tmp_path / "in.png")
    failed: list[str] = []
    write_text = Path.write_text

    def full_disk(self: Path, data: str, *args, **kwargs) -> int:
        if not self.name.endswith(".part"):
            return write_text(self, data, *args, **kwargs)
        write_text(self, data[:len(data) // 2], *args, **kwargs)  # what fitted on the disk
        failed.append(self.name)
        raise OSError(errno.ENOSPC, "No space left on device")

    results = {}
    for name in ("room", "full"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / name))
        if name == "full":
            monkeypatch.setattr(Path, "write_text", full_disk)
        results[name] = dip.restore("denoise", path, iters=20, device="cpu", stop="fixed",
                                    output=tmp_path / f"{name}.png",
                                    # a fit alone on auto's threads follows the load
                                    overrides=(*TINY, "optim.restarts=1", "perf.threads=1"))
    assert failed  # the run did try to cache its rate
    assert [p.name for p in (tmp_path / "room" / "dip").iterdir()] == ["calibration.json"]
    assert list((tmp_path / "full" / "dip").iterdir()) == []
    assert torch.equal(image.load_image(tmp_path / "full.png").pixels,
                       image.load_image(tmp_path / "room.png").pixels)


def test_runs_in_threads_of_one_process_keep_every_rate_they_cache(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """A server restoring in threads: they shared the cache's temporary name, cut each
    other's writes short, and the next read of the broken file found nothing (31 of 800
    entries were left in the sweep that found it)."""
    import threading

    from dip import estimate

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cpu = torch.device("cpu")

    def cache(prefix: str) -> None:
        for i in range(150):
            estimate.remember(f"{prefix}{i}", cpu, 0.5)

    threads = [threading.Thread(target=cache, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    kept = json.loads((tmp_path / "dip" / "calibration.json").read_text())
    assert len(kept) == 300
    assert [p.name for p in (tmp_path / "dip").iterdir()] == ["calibration.json"]


def test_dips_warnings_name_the_callers_line_not_dips(tmp_path: Path) -> None:
    """They named a line of dip's own (run.py's, inpaint.py's, or contextlib's behind a
    decorator), one or two frames short: a warning filter by module or a traceback to the
    caller's code could not find it."""
    import dip
    from dip.image import DipWarning

    small = save(synthetic(16), tmp_path / "in.png")
    grey = np.zeros((16, 16), np.uint8)
    grey[:8] = 128  # grey holes: a soft brush's, said in a warning
    Image.fromarray(grey).save(tmp_path / "mask.png")
    with pytest.warns(DipWarning) as caught:
        dip.restore("denoise", small, write=False, iters=2, device="cpu", stop="fixed",
                    overrides=("optim.restarts=1", "stop.patience=5", *TINY))
        dip.restore("inpaint", small, mask=tmp_path / "mask.png", write=False, iters=2,
                    device="cpu", overrides=("optim.restarts=1", *TINY))
    assert len(caught) == 2
    assert {Path(w.filename) for w in caught} == {Path(__file__)}, [w.filename for w in caught]


def test_an_output_folder_gone_during_the_fit_fails_the_run_and_is_no_mistake(
        tmp_path: Path) -> None:
    """It was an InputError (exit 2: 'before anything is run') after the whole fit."""
    import shutil

    import dip
    from dip.errors import RunError

    folder = tmp_path / "out"

    def replaced_by_a_file(_progress) -> None:
        if folder.is_dir():
            shutil.rmtree(folder)
            folder.write_text("a file now")

    src = save(synthetic(16), tmp_path / "in.png")
    with pytest.raises(RunError, match="out is a file"):
        dip.restore("denoise", src, output=folder / "r.png", iters=2, device="cpu",
                    progress=replaced_by_a_file, overrides=("optim.restarts=1", *TINY))
    assert folder.read_text() == "a file now"
