"""The automatic stop rule: its variance is the paper's, it only observes, it stops in time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw

from dip import fit, operators, stopping
from dip.cli.main import cli
from dip.config import StopConfig
from dip.errors import ConfigError
from dip.image import DipWarning
from dip.inputs import make_code
from dip.nets import build_net
from dip.stopping import STOP_RULES, FixedBudget, VarianceStop, build_stop_rule, estimate_sigma

from conftest import psnr, save, synthetic


def _frames(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # a drifting image with a wobble: mean and spread change over time
    return [torch.rand(1, 3, 8, 8, generator=g) * (0.2 + i / n) + i / (2 * n) for i in range(n)]


@pytest.mark.parametrize("window", [2, 5, 16])
def test_running_variance_matches_the_definition(window: int) -> None:
    frames = _frames(70)
    rule = VarianceStop(window=window, patience=10 ** 6)
    for step, x in enumerate(frames, start=1):
        rule.update(step, x, x)
        if step < window:
            assert rule.variance is None
            continue
        # frames are stored in float16: the definition applied to the stored frames
        recent = torch.stack(frames[step - window:step]).half().float()
        # VAR_t = (1/W) Σ ‖x_i − x̄‖² / N  (ES-WMV, Wang et al.)
        expected = ((recent - recent.mean(0)) ** 2).sum() / (window * frames[0].numel())
        assert rule.variance.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-9)


def test_the_rule_keeps_the_image_at_the_minimum_and_stops_after_patience() -> None:
    # Frames that settle (variance falls) until step 30, then wander off (variance rises).
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 1, 4, 4, generator=g)
    rule = VarianceStop(window=5, patience=20, returns="output", tolerance=0.0,
                        check_every=1)
    fired = None
    for step in range(1, 200):
        spread = 1.0 / step if step <= 30 else (step - 30) * 0.01
        x = base + spread * torch.randn(1, 1, 4, 4, generator=g)
        if rule.update(step, x, x):
            fired = step
            break
    best_step, image = rule.chosen
    assert 25 <= best_step <= 35
    assert fired == best_step + 20


@pytest.mark.parametrize("sigma, fires", [(1.4, False), (10, True)])
def test_auto_if_noisy_stops_automatically_only_on_a_noisy_input(sigma: float,
                                                                  fires: bool) -> None:
    """Deblurring's fast preset: the whole budget at the protocol's sigma of sqrt(2), the
    automatic stop from 3 grey levels (a fixed budget learnt sigma = 10's noise)."""
    g = torch.Generator().manual_seed(0)
    observation = (synthetic(64) + torch.randn(1, 3, 64, 64, generator=g) * sigma / 255)
    rule = build_stop_rule(StopConfig(rule="auto_if_noisy", window=5, patience=20,
                                      tolerance=0.0))
    rule.start(observation.clamp(0, 1))
    assert rule.noise_level * 255 == pytest.approx(sigma, rel=0.25)
    base = torch.rand(1, 1, 4, 4, generator=g)
    stopped = None
    for step in range(1, 300):  # the variance falls until step 30, then rises
        spread = 1.0 / step if step <= 30 else (step - 30) * 0.01
        x = base + spread * torch.randn(1, 1, 4, 4, generator=g)
        if rule.update(step, x, x):
            stopped = step
            break
    assert (stopped is not None) == fires
    assert (rule.chosen is not None) == fires  # a fixed budget returns the fit's estimate


def test_on_a_flat_valley_the_latest_near_minimal_step_is_kept() -> None:
    # The variance settles onto a plateau that creeps up (4% over 40 steps) from step 20 to
    # 60, then rises: with a 5% tolerance the rule keeps the plateau's last step, without it
    # the first.
    def run(tolerance: float) -> tuple[int, int]:
        rule = VarianceStop(window=4, patience=15, tolerance=tolerance, check_every=1)
        for step in range(1, 200):
            spread = (2.0 / step if step < 20 else 0.1 * (1 + 0.0005 * (step - 20))
                      if step <= 60 else 0.1 + 0.02 * (step - 60))
            # frames alternate around a fixed image: the window's variance is about spread²
            x = torch.full((1, 1, 8, 8), 0.5 + spread * (-1) ** step)
            if rule.update(step, x, x):
                return step, rule.chosen[0]
        raise AssertionError("never stopped")

    stop_flat, kept_flat = run(0.05)
    stop_strict, kept_strict = run(0.0)
    assert kept_flat > 55 and stop_flat == kept_flat + 15
    assert kept_strict < 30


@pytest.mark.parametrize("sigma", [5, 15, 25, 50])
def test_the_noise_level_is_estimated_from_the_noisy_image_alone(sigma: int) -> None:
    clean = synthetic(128)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(sigma))
    estimated = estimate_sigma(clean + noise * sigma / 255) * 255
    assert estimated == pytest.approx(sigma, rel=0.08)
    assert estimate_sigma(clean) * 255 < 1.5  # a smooth clean image has (almost) no noise


def test_fine_texture_is_not_read_as_noise() -> None:
    """A one-pixel checkerboard lies wholly in the finest wavelet band, where a wavelet
    estimate (dip's before) looks for noise and reads the texture as noise; the patches'
    spectrum sees one strong pattern and the noise under it."""
    y, x = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    checks = 0.5 + 0.1 * ((x + y) % 2 * 2 - 1).float()
    sigma = 25 / 255
    noise = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(5))
    noisy = checks.expand(1, 3, 96, 96) + sigma * noise
    haar = (noisy[..., 0::2, 0::2] - noisy[..., 0::2, 1::2] - noisy[..., 1::2, 0::2]
            + noisy[..., 1::2, 1::2]) / 2
    assert float(haar.abs().median() / 0.6745) > 2 * sigma  # what the wavelet band reads
    assert estimate_sigma(noisy) == pytest.approx(sigma, rel=0.1)


@pytest.mark.parametrize("channels, side", [(3, 32), (3, 48), (1, 32)])
def test_the_noise_level_of_a_small_picture_is_not_read_low(channels: int, side: int) -> None:
    """8x8 patches of a 32 px colour picture are 625 samples of 192 dimensions: their noise
    eigenvalues spread, and the tail's mean read 0.6-0.7 sigma. Smaller patches keep it (a
    grey picture's 64 dimensions need not shrink)."""
    clean = synthetic(side, channels)
    for seed in range(3):
        noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(seed))
        assert estimate_sigma(clean + noise * 25 / 255) * 255 == pytest.approx(25, rel=0.1)


def test_only_a_small_colour_picture_reads_smaller_patches() -> None:
    from dip.stopping import _patch_side

    assert [_patch_side(3, s, s, 8) for s in (32, 48, 64, 96)] == [3, 4, 6, 8]
    assert _patch_side(1, 32, 32, 8) == 8  # grey keeps 8x8


def test_a_picture_smaller_than_the_smallest_patch_has_no_measurable_noise() -> None:
    assert estimate_sigma(torch.rand(1, 3, 2, 40)) == 0.0
    assert estimate_sigma(torch.rand(1, 1, 40, 2)) == 0.0


def _slow_start_then_fit(rule: VarianceStop, steps: int = 300) -> int | None:
    """Frames that sit still far from y (a tiny variance: the network's slow start), then
    settle onto the image with a moderate wobble (steps 41-150), then wander off. Returns the
    step the rule stopped at (None: it never stopped)."""
    g = torch.Generator().manual_seed(0)
    clean = synthetic(32, channels=1)
    y = clean + 0.1 * torch.randn(clean.shape, generator=g)  # sigma = 0.1
    rule.start(y)
    for step in range(1, steps + 1):
        if step <= 40:
            x = 0.5 + 0.001 * torch.randn(clean.shape, generator=g)
        else:
            wobble = 0.03 if step <= 150 else 0.03 + 0.002 * (step - 150)
            x = clean + wobble * torch.randn(clean.shape, generator=g)
        if rule.update(step, x, x):
            return step
    return None


def test_the_noise_floor_skips_the_slow_starts_variance_dip() -> None:
    # Without the floor the still frames' tiny variance wins; with it (residual within
    # 1.5 sigma^2 of y) only the frames on the image count, and the rule keeps one of those.
    plain = VarianceStop(window=10, patience=30, tolerance=0.0, check_every=1)
    floored = VarianceStop(window=10, patience=30, patience_ratio=0.0, tolerance=0.0,
                           check_every=1, noise_floor=1.5, sigma=0.1)
    _slow_start_then_fit(plain)
    stopped = _slow_start_then_fit(floored)
    assert plain.chosen[0] <= 45
    assert 50 <= floored.chosen[0] <= 160 and stopped == floored.chosen[0] + 30


def test_until_a_step_reaches_the_noise_floor_the_rule_neither_chooses_nor_stops() -> None:
    rule = VarianceStop(window=10, patience=5, check_every=1, noise_floor=1.0, sigma=0.003)
    assert _slow_start_then_fit(rule) is None
    assert rule.chosen is None
    # the sigma it used: given, or else estimated from the observation
    estimating = VarianceStop(window=10, patience=5, noise_floor=1.0)
    _slow_start_then_fit(estimating, steps=1)
    assert 0.07 < estimating.sigma < 0.13


def test_without_measurable_noise_the_floor_is_off() -> None:
    # a flat graphic (its finest band is exactly 0) and a 1-pixel-high strip: sigma 0, so the
    # floor would never let a step count; instead it is off and the rule stops as usual
    for shape in [(1, 3, 16, 16), (1, 3, 1, 40)]:
        rule = VarianceStop(window=4, patience=5, check_every=1, noise_floor=1.0)
        rule.start(torch.full(shape, 0.5))
        assert rule.sigma == 0 and rule.observation is None
        stopped = None
        for step in range(1, 100):
            # frames settle until step 20, then wander off: a variance minimum near step 20
            spread = 2.0 / step if step <= 20 else 0.1 + 0.02 * (step - 20)
            x = torch.full(shape, 0.5 + spread * (-1) ** step)
            if rule.update(step, x, x):
                stopped = step
                break
        assert stopped is not None and stopped < 40 and rule.chosen is not None


def _small_fit(rule, iters: int = 1500, callback=None):
    clean = synthetic(32)
    noisy = (clean + torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
             * 25 / 255).clamp(0, 1)
    torch.manual_seed(0)
    net = build_net("skip", 8, 3, channels_down=[32] * 3, channels_up=[32] * 3,
                    channels_skip=[4] * 3)
    g = torch.Generator().manual_seed(0)
    z = make_code("noise", 8, (32, 32), 0.1, g)
    result = fit(net, z, operators.Identity(), noisy, iters=iters, average=0.9, generator=g,
                 stop_rule=rule, metric=lambda e: psnr(e, clean), metrics_every=1,
                 callback=callback)
    return result, clean, noisy


def test_auto_stops_before_the_budget_near_the_oracles_best() -> None:
    result, clean, noisy = _small_fit(VarianceStop(window=20, patience=50))
    assert result.stop_reason == "auto"
    assert result.iterations < 1500  # it did not need the budget
    assert result.returned_iteration <= result.iterations - 50
    got = psnr(result.image, clean)
    # Margin stated: within 3 dB of the best the run ever reached, and a real restoration.
    assert got >= result.peak_psnr - 3.0
    assert got >= psnr(noisy, clean) + 4.0
    assert "variance" in result.history


def test_the_rule_only_observes_auto_equals_the_fixed_runs_choice() -> None:
    auto, _, _ = _small_fit(VarianceStop(window=20, patience=50))
    observer = VarianceStop(window=20, patience=50)
    # the same fit without a stop rule, with the observer fed its outputs
    _small_fit(FixedBudget(), iters=auto.iterations,
               callback=lambda p: observer.update(p.step, p.output, p.estimate))
    step, image = observer.chosen
    assert step == auto.returned_iteration
    assert torch.equal(image.clamp(0, 1), auto.image)


@pytest.mark.parametrize("options, message", [
    (dict(window=1), "stop.window"), (dict(patience=0), "stop.patience"),
    (dict(returns="best"), "stop.returns"), (dict(patience_ratio=-1), "stop.patience_ratio"),
    (dict(tolerance=-0.1), "stop.tolerance"), (dict(noise_floor=-1), "stop.noise_floor"),
    (dict(sigma=-5), "stop.sigma"), (dict(noisy_sigma=-1), "stop.noisy_sigma"),
    (dict(budget_sigma=0.5), "stop.budget_sigma")])
@pytest.mark.parametrize("rule", ["auto", "fixed", "auto_if_noisy"])
def test_invalid_rule_options(options: dict, message: str, rule: str) -> None:
    """Refused under every rule, not only the one that reads the key (a config file's bad
    value surfaced only on the day it met that rule)."""
    with pytest.raises(ConfigError, match=message):
        build_stop_rule(StopConfig(rule=rule, **options))


def test_registry_and_unknown_rule() -> None:
    assert set(STOP_RULES) == {"auto", "fixed", "auto_if_noisy"}
    with pytest.raises(ConfigError, match="known: auto, fixed, auto_if_noisy"):
        build_stop_rule(StopConfig(rule="oracle"))


def test_patience_can_grow_with_the_minimums_step() -> None:
    rule = VarianceStop(window=5, patience=100, patience_ratio=0.5)
    assert rule.patience_after(50) == 100 and rule.patience_after(1000) == 500


# --- through the command line ------------------------------------------------------------------

def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_stop_fixed_runs_exactly_iters(tmp_path: Path, noisy_png: Path) -> None:
    out = tmp_path / "f.png"
    result = _cli("denoise", noisy_png, "-o", out, "--stop", "fixed", "--iters", 30,
                  "--set", "stop.window=5", "--set", "stop.patience=2", "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "f.png.json").read_text())
    assert (record["iterations"], record["stop_reason"]) == (30, "budget")
    assert record["returned_iteration"] == 30


def test_stop_auto_records_where_it_stopped_and_what_it_returned(tmp_path: Path,
                                                                noisy_png: Path) -> None:
    """A case built so that the rule must fire long before the budget, on any machine's
    rounding: a noise floor of 2 sigma^2 is met as soon as the fit's own error is down to the
    noise (about step 100-150 here, on 1 or 2 threads and 6 seeds; with the default floor of
    1 sigma^2 the moment sits near step 300 and moves with the rounding), then a 5-step window
    and 10 steps of patience."""
    out = tmp_path / "a.png"
    result = _cli("denoise", noisy_png, "-o", out, "--iters", 1000, "--set", "stop.window=5",
                  "--set", "stop.patience=10", "--set", "stop.noise_floor=2",
                  "--device", "cpu")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "a.png.json").read_text())
    assert record["stop_reason"] == "auto" and record["iterations"] < 1000
    assert record["returned_iteration"] <= record["iterations"] - 10
    assert record["config"]["stop"]["rule"] == "auto"
    assert "automatic stop" in result.output
    # the noise level the floor used, estimated from the input (made with sigma = 25)
    assert 18 < record["noise_sigma"] < 32


def test_the_record_names_the_noise_level_sure_fitted_with_under_a_fixed_budget(
        tmp_path: Path, noisy_png: Path) -> None:
    """SURE (the fast preset's second fit) takes the noise level whatever the stop; under
    ``--stop fixed`` the record said ``noise_sigma: null`` as if none had been used."""
    out = tmp_path / "a.png"
    result = _cli("denoise", noisy_png, "-o", out, "--iters", 3, "--stop", "fixed",
                  "--preset", "fast", "--device", "cpu")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "a.png.json").read_text())
    assert record["config"]["noise"]["objective"] == "alternate"
    assert 18 < record["noise_sigma"] < 32  # made with sigma = 25
    result = _cli("denoise", noisy_png, "-o", out, "--iters", 3, "--stop", "fixed",
                  "--preset", "fast", "--set", "stop.sigma=20", "--overwrite",
                  "--device", "cpu")
    assert json.loads((tmp_path / "a.png.json").read_text())["noise_sigma"] == 20
    # one restart of the two objectives is the paper's alone: no fit takes a noise level
    with pytest.warns(DipWarning, match="stop.sigma is ignored"):
        result = _cli("denoise", noisy_png, "-o", out, "--iters", 3, "--stop", "fixed",
                      "--preset", "fast", "--restarts", 1, "--set", "noise.wiener=false",
                      "--set", "stop.sigma=20", "--overwrite", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "a.png.json").read_text())["noise_sigma"] is None


def test_the_record_names_the_noise_level_the_wiener_step_filtered_with(
        tmp_path: Path, noisy_png: Path) -> None:
    """The paper's single fit under a fixed budget reads no noise level, but denoising's last
    step (the Wiener filter) does: the record said nothing of it."""
    out = tmp_path / "a.png"
    result = _cli("denoise", noisy_png, "-o", out, "--iters", 3, "--stop", "fixed",
                  "--preset", "fast", "--restarts", 1, "--device", "cpu")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "a.png.json").read_text())
    assert record["noise_sigma"] is None
    assert 18 < record["wiener_sigma"] < 32  # made with sigma = 25
    result = _cli("denoise", noisy_png, "-o", out, "--iters", 3, "--stop", "fixed",
                  "--preset", "fast", "--restarts", 1, "--set", "stop.sigma=20",
                  "--overwrite", "--device", "cpu")
    assert json.loads((tmp_path / "a.png.json").read_text())["wiener_sigma"] == 20


def test_sigma_in_the_wrong_units_is_refused(tmp_path: Path, noisy_png: Path) -> None:
    result = _cli("denoise", noisy_png, "-o", tmp_path / "r.png", "--set", "stop.sigma=0.1")
    assert result.exit_code == 2
    assert "'stop.sigma' is in 0-255 pixel units" in result.output


def test_a_record_from_before_the_floor_reruns_without_it(tmp_path: Path,
                                                          noisy_png: Path) -> None:
    # A record written before stop.noise_floor existed lacks the key; rerunning it must not
    # pick up the preset's new floor (dip run's side: test_batch.py).
    from dip.request import RunRequest
    from dip.run import resolve_config
    out = tmp_path / "a.png"
    assert _cli("denoise", noisy_png, "-o", out, "--iters", 20, "-q").exit_code == 0
    record = json.loads((tmp_path / "a.png.json").read_text())
    assert record["config"]["stop"]["noise_floor"] == 1.0
    del record["config"]["stop"]["noise_floor"], record["config"]["stop"]["sigma"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(record))
    rerun = resolve_config(RunRequest(task="denoise", config=(old,)))
    assert rerun.stop.noise_floor == 0.0 and rerun.stop.sigma == 0.0


@pytest.mark.parametrize("task, extra", [("inpaint", ["--mask", "MASK"]),
                                         ("superres", ["--factor", 2])])
def test_the_noise_floor_is_refused_outside_denoising(tmp_path: Path, noisy_png: Path,
                                                      task: str, extra: list) -> None:
    mask = tmp_path / "mask.png"
    mask.write_bytes(noisy_png.read_bytes())
    extra = [mask if e == "MASK" else e for e in extra]
    result = _cli(task, noisy_png, *extra, "-o", tmp_path / "r.png", "--set",
                  "stop.noise_floor=1", "--device", "cpu")
    assert result.exit_code == 2
    assert "'stop.noise_floor' applies to denoise only" in result.output
    assert not (tmp_path / "r.png").exists()


def test_a_budget_sigma_overruled_and_unread_is_warned_of_once(tmp_path: Path) -> None:
    """Under --stop fixed as well as a later --iters: two warnings named it, each with another
    reason."""
    import warnings

    import dip

    small = save(synthetic(16), tmp_path / "small.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dip.restore("denoise", small, config=[{"stop": {"budget_sigma": 20}}], iters=2,
                    overrides=["stop.rule=fixed"], write=False, device="cpu")
    said = [str(w.message) for w in caught if "budget_sigma" in str(w.message)]
    assert len(said) == 1 and "the step budget set after it" in said[0], said


# --- the step budget grows for less noise (stop.budget_sigma) ------------------------------

def test_a_less_noisy_input_gets_a_larger_budget_up_to_twice() -> None:
    from dip.stopping import MAX_BUDGET_GROWTH, noise_budget

    ref = 25 / 255
    assert noise_budget(1200, 25 / 255, ref) == 1200  # the level the budget is for
    assert noise_budget(1200, 50 / 255, ref) == 1200  # more noise: never fewer steps
    assert noise_budget(1200, 20 / 255, ref) == 1875  # 1200 x (25 / 20)^2
    assert noise_budget(1200, 15 / 255, ref) == 2400  # (25 / 15)^2 = 2.8, capped at 2
    assert noise_budget(1200, 0.0, ref) == round(1200 * MAX_BUDGET_GROWTH)  # no noise at all
    assert noise_budget(1200, 5 / 255, 0.0) == 1200  # off
    budgets = [noise_budget(1000, s / 255, ref) for s in range(1, 40)]
    assert budgets == sorted(budgets, reverse=True)  # less noise, never a smaller budget


@pytest.mark.parametrize("value", [-1, 0.5])
def test_budget_sigma_is_in_pixel_units(value: float) -> None:
    with pytest.raises(ConfigError, match="stop.budget_sigma"):
        build_stop_rule(StopConfig(rule="auto", budget_sigma=value))


def _noisy_file(tmp_path: Path, sigma: float) -> Path:
    from conftest import save

    y = operators.add_noise(synthetic(32), sigma, torch.Generator().manual_seed(0))
    return save(y, tmp_path / f"noisy{sigma:g}.png")


def test_the_fast_denoisers_budget_follows_the_estimated_noise(tmp_path: Path) -> None:
    import dip

    def budget(sigma: float, *overrides: str, **kw) -> dict:
        # a short budget, grown as the preset's own 1200 steps are
        r = dip.restore("denoise", _noisy_file(tmp_path, sigma), write=False, device="cpu",
                        preset="fast", iters=6, overrides=("stop.budget_sigma=25", *overrides),
                        **kw)
        return r.record

    low, high = budget(8), budget(50)
    assert low["budget"] == 12 and low["iterations"] <= 12  # sigma 8 < 25: twice the steps
    assert high["budget"] == 6 and high["iterations"] <= 6
    assert budget(8, stop="fixed")["iterations"] == 6  # a fixed budget is what it says
    assert budget(8, "stop.budget_sigma=0")["budget"] == 6
    assert budget(8, "stop.sigma=50")["budget"] == 6  # the noise level the stop is told


def test_a_budget_the_user_sets_does_not_grow() -> None:
    from dip.config import resolve

    assert resolve("denoise", overrides=["preset=fast"]).stop.budget_sigma == 25
    for layer in ({"explicit": {"optim.iters": 300}}, {"overrides": ["optim.iters=300"]},
                  {"base": [{"optim": {"iters": 300}}]}):
        cfg = resolve("denoise", **{"overrides": ["preset=fast"], **layer})
        assert (cfg.optim.iters, cfg.stop.budget_sigma) == (300, 0)
    both = resolve("denoise", overrides=["preset=fast", "optim.iters=300",
                                         "stop.budget_sigma=20"])
    assert both.stop.budget_sigma == 20
    assert resolve("denoise", overrides=["preset=paper"]).stop.budget_sigma == 0


def test_only_denoising_takes_a_budget_sigma(tmp_path: Path) -> None:
    from conftest import save

    save(synthetic(32), tmp_path / "small.png")
    result = CliRunner().invoke(cli, ["superres", str(tmp_path / "small.png"), "--factor", "2",
                                      "--set", "stop.budget_sigma=25", "-o",
                                      str(tmp_path / "out.png")])
    assert result.exit_code != 0 and "stop.budget_sigma" in result.output
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("level", [0.15, 0.85])
def test_the_noise_added_before_a_clip_is_read_not_the_weaker_clipped_noise(level: float) -> None:
    """A dark or a bright picture with strong noise, saved as an image is (clipped to [0, 1]):
    the noise left after the clip is much weaker than the noise added, and the stop and SURE
    want the latter (benchmarks/README.md, "The noise level from the patches' spectrum")."""
    clean = level + 0.2 * (synthetic(128) - 0.5)
    sigma = 50 / 255
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(9))
    noisy = (clean + sigma * noise).clamp(0, 1)
    assert float((noisy - clean).std()) < 0.85 * sigma
    # (read without the correction: 39.5 here; with it, a little under 50 still: the
    # neighbourhoods' means it takes for the clean values are pulled inwards by the clip too)
    assert estimate_sigma(noisy) == pytest.approx(sigma, rel=0.1)


# --- stop settings given and never read -----------------------------------------------------

@pytest.mark.parametrize("task, keys, words", [
    ("denoise", ["stop.rule=fixed", "stop.patience=50"],
     "stop.patience is ignored: stop.rule fixed does not read it"),
    ("denoise", ["stop.rule=auto", "stop.noisy_sigma=5", "stop.window=20"],
     "stop.noisy_sigma is ignored"),
    ("superres", ["stop.rule=auto", "stop.sigma=10"],
     "stop.sigma is ignored: nothing in this superres run reads a noise level"),
    ("superres", ["stop.rule=fixed", {"per_factor": {2: {"stop.patience": 50}}}],
     "stop.patience is ignored: stop.rule fixed does not read it"),
    ("denoise", [{"stop": {"budget_sigma": 20}}],
     "stop.budget_sigma is ignored: the step budget set after it .optim.iters. is the budget "
     "as it is"),
])
def test_stop_settings_the_run_never_reads_are_said_to_be_ignored(tmp_path: Path, task: str,
                                                                   keys: list,
                                                                   words: str) -> None:
    """They were accepted without a word: ``superres --set stop.sigma=10`` under the automatic
    stop, which takes no noise level, changed nothing."""
    import warnings

    import dip

    small = tmp_path / "small.png"
    save(synthetic(16), small)
    args = {"factor": 2} if task == "superres" else {}
    run = dict(iters=2, write=False, device="cpu", **args)
    with pytest.warns(DipWarning, match=words):  # a mapping is a config layer, under --iters
        dip.restore(task, small, overrides=[k for k in keys if isinstance(k, str)],
                    config=tuple(k for k in keys if isinstance(k, dict)), **run)
    with warnings.catch_warnings():  # the settings each rule reads: no word
        warnings.simplefilter("error")
        dip.restore(task, small, overrides=["stop.rule=auto_if_noisy", "stop.noisy_sigma=5",
                                            "stop.sigma=10", "stop.window=20"], **run)
        dip.restore("denoise", small, overrides=["stop.rule=fixed", "stop.sigma=10"],
                    iters=2, write=False, device="cpu")  # the Wiener filter takes it


def test_the_patch_covariance_in_bands_is_the_whole_pictures(monkeypatch) -> None:
    # summed over bands of patches (the 2^18 patches of a colour picture and their centred
    # copy took 0.8 GB at once): the same covariance, whatever the bands
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(3)
    y = torch.rand(1, 3, 45, 37, generator=g, dtype=torch.float64)
    for patch, stride in ((8, 1), (5, 2), (3, 3)):
        columns = F.unfold(y, patch, stride=stride)[0]
        columns = columns - columns.mean(1, keepdim=True)
        whole = columns @ columns.T / columns.shape[1]
        for band in (1, 7, 50, 1 << 14):
            monkeypatch.setattr(stopping, "BAND_PATCHES", band)
            assert torch.allclose(stopping._patch_covariance(y, patch, stride), whole,
                                  rtol=0, atol=1e-14)


def test_a_clean_picture_of_few_grey_levels_reads_no_noise() -> None:
    """A lone white pixel on black, or black strokes on white, is no low-rank signal: the
    patches' spectrum read it as noise (17.3 and 60+ grey levels), and denoising erased it.
    Noise never leaves so many pixels at 0 or 1 and so many equal neighbours."""
    dot = torch.zeros(1, 1, 32, 32)
    dot[..., 16, 16] = 1
    page = torch.ones(1, 1, 64, 64)
    page[..., 8:56:6, 8:56] = 0  # lines of "text"
    page[..., 8:56, 8:56:7] = 0
    assert estimate_sigma(dot) == 0.0 and estimate_sigma(page) == 0.0


def test_a_noisy_photo_on_a_clean_page_still_reads_its_noise() -> None:
    """The ties are counted tile by tile, and any tile with noise in it keeps the reading: a
    page around a noisy photo does not make it clean (wanting a quarter of the tiles, a 64
    px photo on a 160 px page read 0 and came back from denoising untouched)."""
    g = torch.Generator().manual_seed(3)
    photo = 0.3 + 0.4 * torch.linspace(0, 1, 64).expand(1, 3, 64, 64)  # a smooth ramp
    noisy = ((photo + 25 / 255 * torch.randn(photo.shape, generator=g)).clamp(0, 1)
             * 255).round() / 255
    assert estimate_sigma(noisy) * 255 == pytest.approx(25, rel=0.1)
    for side, before in ((128, 16.6), (256, 9.4)):  # diluted by the page's patches, as before
        page = torch.ones(1, 3, side, side)
        page[..., :64, :64] = noisy
        assert estimate_sigma(page) * 255 == pytest.approx(before, abs=0.1)


def _tinted(grey: torch.Tensor) -> torch.Tensor:
    """``grey`` toned from dark blue to pale blue through a table, as a photo editor's
    colorize does: each channel a function of the grey level."""
    table = torch.stack([torch.linspace(16, 240, 256), torch.linspace(16, 240, 256),
                         torch.linspace(32, 255, 256)]).round() / 255
    return table[:, (grey[0, 0] * 255).round().long()][None]


@pytest.mark.parametrize("change", ["a red mark", "one value off by one", "a tint"])
def test_one_noise_in_three_channels_is_read_in_their_mean(change: str) -> None:
    """A noisy black-and-white photo saved in colour but not quite grey (its channels not all
    equal): the colour patches' tail read 0, and denoising refused it (before: gave it back
    as it was)."""
    g = torch.Generator().manual_seed(0)
    grey = ((synthetic(64, 1) + torch.randn(1, 1, 64, 64, generator=g) * 25 / 255)
            .clamp(0, 1) * 255).round() / 255
    rgb = grey.expand(-1, 3, -1, -1).clone()
    if change == "a red mark":
        rgb[0, :, :6, :6] = torch.tensor([200 / 255, 0, 0])[:, None, None]
    if change == "one value off by one":
        rgb[0, 2, 0, 0] += 1 / 255 if rgb[0, 2, 0, 0] < 1 else -1 / 255
    scale = 1.0
    if change == "a tint":
        rgb, scale = _tinted(grey), (224 + 224 + 223) / 3 / 255  # the channels' mean's slope
    assert estimate_sigma(grey) * 255 == pytest.approx(25, rel=0.1)
    assert estimate_sigma(rgb) == pytest.approx(estimate_sigma(grey) * scale, rel=0.05)


def test_a_clean_flat_colour_drawing_still_reads_no_noise() -> None:
    """Its colour patches' spectrum reads some noise and the exact ties lower that to 0;
    read again in the channels' mean (which has fewer pixels at 0 or 1) it read 0.57 (found
    in review): the mean is read only where the spectrum itself reads none."""
    rng = np.random.default_rng(2)
    drawing = Image.new("RGB", (64, 64), (240, 240, 240))
    pen = ImageDraw.Draw(drawing)
    for _ in range(6):  # boxes of flat colours, outlined in black
        left, top = (int(v) for v in rng.integers(0, 54, 2))
        pen.rectangle([left, top, left + int(rng.integers(5, 40)), top + int(rng.integers(5, 20))],
                      fill=tuple(int(v) for v in rng.integers(0, 256, 3)), outline=(0, 0, 0))
    y = torch.from_numpy(np.asarray(drawing, np.float32) / 255).permute(2, 0, 1)[None]
    assert estimate_sigma(y.mean(1, keepdim=True)) > 0  # (what it read)
    assert estimate_sigma(y) == 0


def test_a_colour_picture_that_reads_noise_reads_it_in_its_colour_patches(monkeypatch) -> None:
    """Only a reading of none (up to round-off) is read again in the channels' mean."""
    g = torch.Generator().manual_seed(1)
    noisy = (synthetic(64) + torch.randn(1, 3, 64, 64, generator=g) * 15 / 255).clamp(0, 1)
    read = []
    original = stopping.estimate_sigma
    monkeypatch.setattr(stopping, "estimate_sigma",
                        lambda y, *args: read.append(y.shape[1]) or original(y, *args))
    assert stopping.estimate_sigma(noisy) * 255 == pytest.approx(15, rel=0.1)
    assert read == [3]
