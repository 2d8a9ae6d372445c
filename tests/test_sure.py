"""Denoising by Stein's unbiased risk estimate (dip.sure): the estimate itself, and the fit
that descends it with the noisy image as the network's input."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_poisson import SMALL

from dip import layout, metrics, run
from dip.cli.main import cli
from dip.request import RunRequest
from dip.sure import Sure

from conftest import save, synthetic

SIGMA = 25 / 255


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.mean((a - b) ** 2).item()


@pytest.mark.parametrize("keep", [1.0, 0.7, 0.3])
def test_sure_estimates_the_error_against_the_clean_image_from_the_noisy_one(keep) -> None:
    """For a shrink towards grey f(y) = keep·y + (1 − keep)/2, SURE computed from y alone
    (one Monte-Carlo probe) is within a few percent of the error against the clean image; the
    identity fits y exactly (squared error 0) and is charged the whole noise, σ²."""
    g = torch.Generator().manual_seed(0)
    x = synthetic(64)
    y = x + torch.randn(x.shape, generator=g) * SIGMA
    sure = Sure(SIGMA)

    def f(t: torch.Tensor) -> torch.Tensor:
        return keep * t + (1 - keep) / 2

    probe = torch.randn(x.shape, generator=g)
    risk = _mse(f(y), y) + sure.penalty(f(y), f(y + sure.step * probe), probe).item()
    assert risk == pytest.approx(_mse(f(y), x), rel=0.05)
    if keep == 1.0:
        assert _mse(f(y), y) == 0 and risk == pytest.approx(SIGMA ** 2, rel=0.03)


def test_sure_needs_a_noise_level() -> None:
    with pytest.raises(ValueError, match="noise level above 0"):
        Sure(0.0)


def test_a_sure_fit_denoises_and_is_reproducible(tmp_path: Path, noisy_png: Path,
                                                 clean_png: Path) -> None:
    noisy, ref = noisy_png, clean_png
    outs = [tmp_path / "a.png", tmp_path / "b.png"]
    for out in outs:
        result = CliRunner().invoke(cli, [str(a) for a in (
            "denoise", noisy, "-o", out, "--reference", ref, "--set", "noise.objective=sure",
            "--restarts", 1, "--iters", 150, "--stop", "fixed", "--seed", 3, *SMALL,
            "--set", "perf.threads=1")])  # a fit alone on auto's threads follows the load
        assert result.exit_code == 0, result.output
    record = json.loads(Path(f"{outs[0]}.json").read_text())
    assert record["config"]["noise"]["objective"] == "sure"
    m = record["metrics"]
    assert m["psnr"] > m["input_psnr"] + 3, m
    assert outs[0].read_bytes() == outs[1].read_bytes()  # same seed, same image


def _setup(tmp_path: Path, *overrides: str, grey: bool = False, restarts: int = 1):
    clean = synthetic(48, channels=1 if grey else 3)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(2)) * SIGMA
    picture = save((clean + noise).clamp(0, 1), tmp_path / "photo.png")
    req = RunRequest(task="denoise", device="cpu", input=picture, write=False,
                     restarts=restarts,
                     overrides=("net.channels_down=[8,8,8]", "net.channels_up=[8,8,8]",
                                "net.channels_skip=[4,4,4]", *overrides))
    p = run.plan(req)
    return p, run.build(p, run.load(p))


@pytest.mark.parametrize("grey", [False, True])
def test_the_network_input_is_the_noisy_image_itself(tmp_path: Path, grey: bool) -> None:
    _, setup = _setup(tmp_path, "noise.objective=sure", grey=grey)
    member = setup.member(0)
    assert torch.equal(member.code, setup.problem.observation)
    assert member.code.shape[1] == (1 if grey else 3)  # not input.channels (32)
    assert member.sure is not None and member.sure.sigma == member.noise_sigma
    assert member.sure.sigma == pytest.approx(SIGMA, rel=0.2)  # estimated from the image


def test_a_clean_image_is_fitted_without_sure(tmp_path: Path) -> None:
    """No noise to measure (σ̂ under half a grey level): nothing to charge, so the fit is the
    squared error to the image itself, and it is not refused."""
    picture = save(synthetic(48), tmp_path / "clean.png")
    req = RunRequest(task="denoise", device="cpu", input=picture, write=False, restarts=1,
                     overrides=("noise.objective=sure",))
    p = run.plan(req)
    member = run.build(p, run.load(p)).member(0)
    assert member.sure is None and member.code.shape[1] == 3


def test_poisson_noise_and_the_paper_objective_fit_a_random_code(tmp_path: Path) -> None:
    for overrides in (("noise.objective=mse",),
                      ("noise.objective=sure", "noise.model=poisson")):
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            _, setup = _setup(tmp_path, *overrides)
        ignored = [str(w.message) for w in said if "noise.objective applies" in str(w.message)]
        assert len(ignored) == ("noise.model=poisson" in overrides)  # and says it is ignored
        member = setup.member(0)
        assert member.sure is None and member.code.shape[1] == 32, overrides


def test_alternate_restarts_take_turns_and_restart_0_is_the_papers_fit(tmp_path: Path,
                                                                       noisy_png: Path) -> None:
    """``alternate``: restart 0 fits the paper's squared error with a random code, restart 1
    SURE with the noisy image as its input; so with one restart it is the paper's fit."""
    _, setup = _setup(tmp_path, "noise.objective=alternate", restarts=3)
    members = [setup.member(i) for i in range(3)]
    assert [m.sure is not None for m in members] == [False, True, False]
    assert [m.code.shape[1] for m in members] == [32, 3, 32]
    noisy = noisy_png
    outs = {}
    for objective in ("alternate", "mse"):
        outs[objective] = tmp_path / f"{objective}.png"
        result = CliRunner().invoke(cli, [str(a) for a in (
            "denoise", noisy, "-o", outs[objective], "--set", f"noise.objective={objective}",
            "--restarts", 1, "--iters", 5, *SMALL, "--set", "perf.threads=1")])
        assert result.exit_code == 0, result.output
    assert outs["alternate"].read_bytes() == outs["mse"].read_bytes()


def test_the_summary_says_the_restarts_take_turns(tmp_path: Path, noisy_png: Path) -> None:
    noisy = noisy_png
    result = CliRunner().invoke(cli, [str(a) for a in (
        "denoise", noisy, "-o", tmp_path / "o.png", "--set", "noise.objective=alternate",
        "--restarts", 2, "--iters", 3, *SMALL[:-1])])  # not quiet
    assert result.exit_code == 0, result.output
    assert "the average of 2 restarts (the paper's fit and SURE's in turn)" in result.output


def test_an_unknown_objective_is_one_line(tmp_path: Path, noisy_png: Path) -> None:
    noisy = noisy_png
    result = CliRunner().invoke(cli, [str(a) for a in (
        "denoise", noisy, "-o", tmp_path / "o.png", "--set", "noise.objective=l1", *SMALL)])
    assert result.exit_code == 2
    assert "config key 'noise.objective' must be one of mse, sure, alternate, got 'l1'" in \
        result.output
    assert not (tmp_path / "o.png").exists()


def test_sure_runs_side_by_side_and_is_costed_and_timed_apart(tmp_path: Path) -> None:
    """A stack's step is one forward pass: SURE's members step side by side even where a
    stack was asked for; its two passes are in the memory estimate, and its rate is cached
    apart from the paper objective's."""
    p_sure, sure = _setup(tmp_path, "noise.objective=sure", "perf.stack=on")
    p_mse, mse = _setup(tmp_path, "noise.objective=mse", "perf.stack=on")
    assert mse.perf.stack and not sure.perf.stack and not sure.layout.stacked
    # the paper's objective with a 3-channel code: the same network as SURE's
    p_plain, plain = _setup(tmp_path, "noise.objective=mse", "input.channels=3")

    def peak(p, s, concurrent: int = 1) -> int:  # 1024 px: far above the process's noise
        return layout.peak_bytes(p.cfg, s.problem, 3, (1024, 1024), concurrent, alive=1)

    one_step = peak(p_plain, plain, 2) - peak(p_plain, plain)
    # SURE's second forward pass: one step's activations more
    assert peak(p_sure, sure) - peak(p_plain, plain) == pytest.approx(one_step, rel=0.05)

    def key(p, s) -> str:
        return layout.calibration_key(p.cfg, s.problem, s.layout, 3, (48, 48))

    assert "sure" in key(p_sure, sure) and "sure" not in key(p_plain, plain)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_sure_fit_in_a_cuda_graph_matches_the_eager_one() -> None:
    """The probe and the input noise's level are drawn outside the captured step, so the
    graph replays SURE's arithmetic with each step's new draws."""
    from dip.config import PerfConfig
    from dip.engine import resolve_perf
    from dip.fitting import Member, Settings, fit_group
    from dip.nets import build_net

    clean = synthetic(48)
    noisy = (clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
             * SIGMA).clamp(0, 1).cuda()

    def run(graphs: str) -> torch.Tensor:
        torch.manual_seed(0)
        net = build_net("skip", 3, 3, channels_down=[16] * 3, channels_up=[16] * 3,
                        channels_skip=[4] * 3).cuda()
        member = Member(net, noisy.clone(), torch.nn.Identity(), noisy,
                        torch.Generator(device="cuda").manual_seed(0), sure=Sure(SIGMA))
        perf = resolve_perf(PerfConfig(graphs=graphs), torch.device("cuda"))
        return fit_group([member], Settings(iters=150, lr=0.02, average=0.9),
                         perf=perf)[0].image.cpu()

    eager, graph = run("off"), run("on")
    noisy_psnr = metrics.psnr(noisy.cpu(), clean)
    assert metrics.psnr(graph, clean) > noisy_psnr + 3
    assert abs(metrics.psnr(graph, clean) - metrics.psnr(eager, clean)) < 0.3
