"""Photon (Poisson) noise: the corruption, the peak estimate, the losses, the command, and old
denoising records that predate the ``noise`` section."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from dip import batch, operators
from dip.cli.main import cli
from dip.tasks.denoise import anscombe_error, estimate_peak, poisson_deviance

from conftest import save, synthetic

SMALL = ["--set", "net.channels_down=[16,16,16]", "--set", "net.channels_up=[16,16,16]",
         "--set", "net.channels_skip=[4,4,4]", "--device", "cpu", "-q"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_poisson_counts_have_the_mean_and_variance_of_photons() -> None:
    x = torch.full((1, 1, 200, 200), 0.4)
    y = operators.add_poisson(x, 20, torch.Generator().manual_seed(0))
    assert y.mean().item() == pytest.approx(0.4, rel=0.02)
    assert y.var().item() == pytest.approx(0.4 / 20, rel=0.05)  # var = x / peak
    assert torch.allclose(y * 20, (y * 20).round(), atol=1e-4)  # whole photons


@pytest.mark.parametrize("peak", [30, 10])
def test_the_peak_is_estimated_from_the_image_alone(peak: float) -> None:
    clean = synthetic(128) * 0.8 + 0.1
    y = operators.add_poisson(clean, peak, torch.Generator().manual_seed(1))
    assert estimate_peak((y * 255).round() / 255) == pytest.approx(peak, rel=0.25)


@pytest.mark.parametrize("make", [poisson_deviance, anscombe_error])
def test_both_losses_are_about_one_per_pixel_at_the_truth(make) -> None:
    x = synthetic(128) * 0.8 + 0.1
    y = operators.add_poisson(x, 50, torch.Generator().manual_seed(2))
    at_truth = make(50)(x, y).item()
    assert at_truth == pytest.approx(1.0, abs=0.2)
    assert make(50)(x * 0.8, y).item() > 2 * at_truth  # a wrong image costs more


def _noisy(tmp_path: Path, peak: float = 10) -> tuple[Path, Path]:
    ref = save(synthetic(32), tmp_path / "clean.png")
    result = invoke("corrupt", ref, "-o", tmp_path / "noisy.png", "--poisson", peak)
    assert result.exit_code == 0, result.output
    return tmp_path / "noisy.png", ref


@pytest.mark.parametrize("loss", ["nll", "anscombe"])
def test_denoise_with_poisson_noise_gains_and_records_the_peak(tmp_path: Path,
                                                               loss: str) -> None:
    noisy, ref = _noisy(tmp_path)
    out = tmp_path / "out.png"
    result = invoke("denoise", noisy, "--noise", "poisson", "--set", f"noise.loss={loss}",
                    "-o", out, "--iters", 300, "--stop", "fixed", "--reference", ref, *SMALL)
    assert result.exit_code == 0, result.output
    record = json.loads(Path(f"{out}.json").read_text())
    noise = record["config"]["noise"]
    assert {k: noise[k] for k in ("model", "peak", "loss")} == {"model": "poisson", "peak": 0.0,
                                                                "loss": loss}
    assert 4 < record["noise_peak"] < 25  # estimated; made with 10
    m = record["metrics"]
    assert m["psnr"] > m["input_psnr"] + 4, m


def test_a_given_peak_is_used_and_poisson_keys_belong_to_denoising(tmp_path: Path) -> None:
    noisy, _ = _noisy(tmp_path)
    out = tmp_path / "out.png"
    assert invoke("denoise", noisy, "--noise", "poisson", "--set", "noise.peak=10", "-o", out,
                  "--iters", 3, *SMALL).exit_code == 0
    assert json.loads(Path(f"{out}.json").read_text())["noise_peak"] == 10
    for args, words in ((["superres", noisy, "--set", "noise.model=poisson"],
                         "applies to denoise only"),
                        (["denoise", noisy, "--set", "noise.loss=l1"], "'noise.loss' must be"),
                        (["denoise", noisy, "--noise", "speckle"], "'speckle' is not one of")):
        result = invoke(*args, "-o", tmp_path / "x.png", *SMALL)
        assert result.exit_code == 2 and words in result.output, result.output


def test_a_denoising_record_from_before_the_noise_section_is_still_done(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    save(synthetic(32), tmp_path / "photos" / "p0.png")
    path = tmp_path / "batch.yaml"
    # the paper's objective without the Wiener filter: what every denoising run did before the
    # section existed
    path.write_text("defaults: {iters: 3, device: cpu, set: {noise.objective: mse, "
                    "noise.wiener: false}}\njobs:\n"
                    "  - {task: denoise, input: photos/p0.png, output: out/}\n")
    assert invoke("run", path, "-q").exit_code == 0
    record_file = tmp_path / "out" / "p0_denoise.png.json"
    record = json.loads(record_file.read_text())
    del record["config"]["noise"]  # as dip wrote it before Poisson noise existed
    record_file.write_text(json.dumps(record))
    assert batch.is_done(batch.load_batch(path)[0])
    # the fast preset's SURE and Wiener filter are another fit than the old record's: redone
    fast = path.read_text().replace(", set: {noise.objective: mse, noise.wiener: false}", "")
    path.with_name("fast.yaml").write_text(fast)
    assert not batch.is_done(batch.load_batch(path.with_name("fast.yaml"))[0])
    path.write_text(path.read_text().replace("output: out/", "output: out/, noise: poisson"))
    assert not batch.is_done(batch.load_batch(path)[0])  # another noise model: redone


@pytest.mark.parametrize("keys, words", [
    (["noise.loss=anscombe"], "noise.loss applies to photon noise only"),
    (["noise.peak=30", "noise.loss=anscombe"], "noise.peak and noise.loss apply"),
])
def test_photon_settings_on_gaussian_denoising_are_said_to_be_ignored(keys, words) -> None:
    from dip import image
    from dip.config import resolve
    from dip.tasks import get_task

    picture = image.Picture(synthetic(16))
    with pytest.warns(image.DipWarning, match=words):
        get_task("denoise").load(picture, {}, resolve("denoise", overrides=keys), 10**6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same keys with photon noise: no word
        get_task("denoise").load(picture, {}, resolve("denoise", overrides=[
            *keys, "noise.model=poisson"]), 10**6)


@pytest.mark.parametrize("keys, words", [
    (["noise.wiener=true"], "noise.wiener applies to Gaussian noise only .*; denoising photon "
                            "noise ignores it"),
    (["noise.objective=sure", "noise.wiener=false"], "noise.objective and noise.wiener apply"),
])
def test_gaussian_settings_asked_for_photon_noise_are_said_to_be_ignored(tmp_path: Path, keys,
                                                                         words) -> None:
    """They were ignored without a word. The fast preset sets both (for Gaussian noise), so
    only the keys the user gives count, not the values the run holds."""
    from dip import image
    from dip.config import resolve
    from dip.tasks import get_task

    picture = image.Picture(synthetic(16))
    poisson = ["noise.model=poisson"]
    with pytest.warns(image.DipWarning, match=words):
        get_task("denoise").load(picture, {}, resolve("denoise", overrides=[*poisson, *keys]),
                                 10**6)
    fast = resolve("denoise", overrides=[*poisson, "preset=fast"])
    assert fast.section("noise").wiener  # set by the preset, not asked for
    record = tmp_path / "r.json"  # nor does a record's every key count as asked for
    record.write_text(json.dumps({"config": fast.to_dict(), "versions": {}, "task": "denoise"}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for cfg in (fast, resolve("denoise", [record])):
            get_task("denoise").load(picture, {}, cfg, 10**6)


def test_a_batch_job_is_told_too_when_its_settings_do_not_apply(tmp_path: Path) -> None:
    """The keys a batch's defaults or a job's set: give count as the user's own."""
    save(synthetic(16), tmp_path / "a.png")
    path = tmp_path / "batch.yaml"
    path.write_text("defaults: {iters: 2, device: cpu, set: {noise.wiener: true}}\n"
                    "jobs:\n  - {task: denoise, input: a.png, noise: poisson, "
                    "set: {noise.peak: 30}}\n")
    from dip.image import DipWarning

    with pytest.warns(DipWarning, match="noise.wiener applies to Gaussian noise only"):
        result = CliRunner().invoke(cli, ["run", str(path), "-q"])
    assert result.exit_code == 0, result.output
