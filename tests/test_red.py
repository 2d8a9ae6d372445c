"""DeepRED's denoiser term (dip.red): the non-local means denoiser, ADMM's updates, the guard's
undo, and the config keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_poisson import SMALL

from dip import metrics
from dip.cli.main import cli
from dip.engine import StepEngine
from dip.fitting import Member, Settings, fit_group
from dip.nets import build_net
from dip.operators import Downsample
from dip.red import Red, RedState, nlm

from conftest import save, synthetic


def test_non_local_means_removes_most_of_the_noise_and_keeps_a_flat_image() -> None:
    clean = synthetic(48)
    sigma = 15 / 255
    noisy = clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0)) * sigma
    out = nlm(noisy, sigma)
    assert out.shape == noisy.shape
    assert metrics.psnr(out, clean) > metrics.psnr(noisy, clean) + 4
    flat = torch.full((1, 3, 20, 20), 0.3)
    assert torch.allclose(nlm(flat, 5 / 255), flat)


@pytest.mark.parametrize("side", [1, 2, 4])
def test_non_local_means_takes_an_image_smaller_than_its_window(side: int) -> None:
    flat = torch.full((1, 3, side, side), 0.6)
    assert torch.allclose(nlm(flat, 5 / 255), flat)


def test_a_tiny_input_is_enlarged_with_the_denoiser_on(tmp_path: Path) -> None:
    """A 2×2 picture's ×2 result is smaller than the denoiser's window."""
    small = save(synthetic(2), tmp_path / "tiny.png")
    out = tmp_path / "big.png"
    result = CliRunner().invoke(cli, [str(a) for a in (
        "superres", small, "--factor", 2, "-o", out, "--iters", 25, "--stop", "fixed",
        "--set", "red.weight=0.05", "--set", "red.every=5", *SMALL)])
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_admm_moves_x_between_the_denoised_copy_and_the_output() -> None:
    """x = (λ·D(x) + μ·(out + u)) / (λ + μ), then u += out − x; the target is x − u."""
    red = Red(weight=0.05, admm=0.06, every=1)
    first = synthetic(24)
    state = RedState(red, first)
    assert torch.equal(state.target, first) and not state.u.any()
    out = (first + 0.1).clamp(0, 1)
    denoised = nlm(first, red.sigma)
    state.update(out, step=1)
    x = ((0.05 * denoised + 0.06 * out) / 0.11).clamp(0, 1)
    assert torch.allclose(state.x, x, atol=1e-6)
    assert torch.allclose(state.u, out - x, atol=1e-6)
    assert torch.allclose(state.target, x - (out - x), atol=1e-6)


def test_the_denoiser_runs_every_few_steps_only() -> None:
    red = Red(weight=0.05, every=3)
    state = RedState(red, synthetic(24))
    kept = state.denoised.clone()
    noisy = (synthetic(24) + 0.2 * torch.rand(1, 3, 24, 24)).clamp(0, 1)
    state.update(noisy, step=1)
    state.update(noisy, step=2)
    assert torch.equal(state.denoised, kept)
    state.update(noisy, step=3)
    assert not torch.equal(state.denoised, kept)


def _engine(red: Red | None) -> StepEngine:
    torch.manual_seed(0)
    clean = synthetic(32)
    op = Downsample(2, "lanczos")
    net = build_net("skip", 8, 3, channels_down=[8] * 3, channels_up=[8] * 3,
                    channels_skip=[4] * 3)
    code = torch.rand(1, 8, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.1
    return StepEngine(net, code, op, op(clean), lr=0.01, perturb_std=0.03,
                      generator=torch.Generator().manual_seed(2), red=red)


def test_the_guard_undoes_admm_with_the_weights() -> None:
    """A step the guard rejects is undone for x and u too, not only for the network."""
    engine = _engine(Red(weight=0.05, every=2))
    for _ in range(2):
        engine.step()
        engine.accept()
    kept = [t.clone() for t in engine.red_state.tensors() + engine.params]
    engine.step()
    engine.accept()  # the state this step started from (kept) was good
    engine.step()  # the next two are not accepted: their losses were too high
    engine.step()
    assert not torch.equal(engine.red_state.x, kept[0])
    engine.restore()
    for now, before in zip(engine.red_state.tensors() + engine.params, kept):
        assert torch.equal(now, before)


def test_red_changes_the_fit_and_members_with_it_do_not_stack() -> None:
    clean = synthetic(32)
    op = Downsample(2, "lanczos")

    def member(red: Red | None) -> Member:
        torch.manual_seed(0)
        net = build_net("skip", 8, 3, channels_down=[8] * 3, channels_up=[8] * 3,
                        channels_skip=[4] * 3)
        code = torch.rand(1, 8, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.1
        return Member(net, code, op, op(clean), torch.Generator().manual_seed(2), red=red)

    settings = Settings(iters=40, lr=0.01, perturb_std=0.03)
    plain = fit_group([member(None)], settings)[0].image
    red = Red(weight=0.05, every=5)
    with_red = fit_group([member(red)], settings)[0].image
    assert torch.isfinite(with_red).all() and not torch.equal(plain, with_red)
    from dip.engine import Perf
    from dip.fitting import _scheduler
    sources = [member(red), member(red)]
    scheduler, _ = _scheduler(sources, settings, Perf(stack=True), 2, 1, None, True, False)
    assert type(scheduler).__name__ == "_Scheduler"  # side by side, not one stack


def test_the_red_keys_reach_the_record_and_bad_values_are_one_line(tmp_path: Path) -> None:
    small = save(synthetic(16), tmp_path / "small.png")
    out = tmp_path / "big.png"
    result = CliRunner().invoke(cli, [str(a) for a in (
        "superres", small, "-o", out, "--iters", 12, "--stop", "fixed",
        "--set", "red.weight=0.05", "--set", "red.every=4", *SMALL)])
    assert result.exit_code == 0, result.output
    record = json.loads(Path(f"{out}.json").read_text())
    assert record["config"]["red"] == {"weight": 0.05, "admm": 0.06, "sigma": 5.0, "every": 4}
    for key, value, message in (("red.weight", -1, "must be >= 0 and <= 1000 (0: off)"),
                                ("red.every", 0, "must be > 0"),
                                ("red.sigma", 0, "must be > 0 and <= 255"),
                                # past these the fit overflowed mid-run with a traceback
                                ("red.sigma", 1e200, "must be > 0 and <= 255"),
                                ("red.admm", 1e308, "must be > 0 and <= 1000"),
                                ("red.weight", 1e300, "must be >= 0 and <= 1000 (0: off)")):
        bad = tmp_path / f"bad_{key}_{value}.png"
        result = CliRunner().invoke(cli, [str(a) for a in (
            "superres", small, "-o", bad, "--set", f"{key}={value}", *SMALL)])
        assert result.exit_code == 2
        assert f"config key '{key}' {message}, got {value}" in result.output
        assert len(result.output.strip().splitlines()) == 1 and not bad.exists()


@pytest.mark.parametrize("record_has_red", [False, True])
def test_a_record_without_the_red_section_reruns_without_it(record_has_red: bool) -> None:
    from dip.config import record_config
    config = {"optim": {"lr": 0.01}, "tile": {}}
    if record_has_red:
        config["red"] = {"weight": 0.05}
    filled = record_config(config)
    assert filled["red"]["weight"] == (0.05 if record_has_red else 0.0)
    assert filled["red"]["every"] == 10


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_red_fit_in_a_cuda_graph_matches_the_eager_one() -> None:
    """ADMM's x and u follow each step outside the captured graph, in place, and the graph
    reads x − u: replayed, the fit is the eager one up to float rounding."""
    from dip.config import PerfConfig
    from dip.engine import resolve_perf

    clean = synthetic(48).cuda()
    op = Downsample(2, "lanczos").cuda()

    def run(graphs: str) -> torch.Tensor:
        torch.manual_seed(0)
        net = build_net("skip", 8, 3, channels_down=[16] * 3, channels_up=[16] * 3,
                        channels_skip=[4] * 3).cuda()
        code = torch.rand(1, 8, 48, 48, device="cuda") * 0.1
        member = Member(net, code, op, op(clean), torch.Generator(device="cuda").manual_seed(0),
                        red=Red(weight=0.05, every=5))
        perf = resolve_perf(PerfConfig(graphs=graphs), torch.device("cuda"))
        return fit_group([member], Settings(iters=150, lr=0.01, perturb_std=0.03),
                         perf=perf)[0].image

    eager, graph = run("off"), run("on")
    assert abs(metrics.psnr(graph, clean) - metrics.psnr(eager, clean)) < 0.3
    assert metrics.psnr(graph, clean) > 20


def test_the_estimate_said_before_a_run_counts_the_denoiser(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A few calibration steps never reach a denoiser run: its timed share is added, and the
    rate is cached apart from the fit's without it."""
    from dip import run
    from dip.request import RunRequest
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(run, "red_seconds", lambda red, channels, side, device: 1.0)
    small = save(synthetic(16), tmp_path / "small.png")
    for weight in ("0", "0.05"):
        req = RunRequest(task="superres", device="cpu", input=small, write=False, iters=4,
                         overrides=("net.channels_down=[8,8,8]", "net.channels_up=[8,8,8]",
                                    "net.channels_skip=[4,4,4]", "stop.rule=fixed",
                                    "perf.threads=1", f"red.weight={weight}"))
        p = run.plan(req)
        seconds = run.estimate(p, run.build(p, run.load(p))).seconds
        assert (seconds >= 4 * 1.0) == (weight != "0")  # 4 steps at >= 1 s each
    cache = json.loads((tmp_path / "cache" / "dip" / "calibration.json").read_text())
    assert sum("|red every 20" in k for k in cache) == 1 and len(cache) == 2  # the fast preset's


def test_the_memory_estimate_counts_the_admm_variables(tmp_path: Path) -> None:
    from dip import layout, run
    from dip.red import KEPT_IMAGES
    from dip.request import RunRequest
    small = save(synthetic(16), tmp_path / "small.png")

    def peak(weight: str) -> int:
        req = RunRequest(task="superres", device="cpu", input=small, write=False,
                         overrides=("net.channels_down=[8,8,8]", "net.channels_up=[8,8,8]",
                                    "net.channels_skip=[4,4,4]", f"red.weight={weight}"))
        p = run.plan(req)
        s = run.build(p, run.load(p))
        return layout.peak_bytes(p.cfg, s.problem, 3, (1024, 1024), 1, alive=2) \
            - layout.peak_bytes(p.cfg, s.problem, 3, (1024, 1024), 1, alive=1)

    # one more member alive: its state, with the term 12 images of 3 x 1024 x 1024 floats more
    # (the process's own resident memory, read at each call, moves by a few hundred kB)
    assert peak("0.05") - peak("0") == pytest.approx(KEPT_IMAGES * 4 * 3 * 1024 * 1024,
                                                      rel=0.01)


def test_timing_the_denoiser_leaves_the_callers_random_numbers_alone() -> None:
    """The estimate before a super-resolution run times the denoiser on a random picture when
    the calibration cache has no rate for it: that picture came from torch's global
    generator, so a caller's seeded draws after dip.restore depended on the machine's cache."""
    from dip.red import seconds_per_step

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert seconds_per_step(Red(weight=0.05), 3, (16, 16), torch.device("cpu")) > 0
    assert torch.equal(torch.rand(3), expected)
