"""Denoising's last step: the collaborative Wiener filter with the fits' result as its pilot
(dip.wiener), and the noise level it is given."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from test_poisson import SMALL
from torch.nn import functional as F

import dip
from dip import run, wiener
from dip.cli.main import cli
from dip.errors import InputError
from dip.image import load_image
from dip.request import RunRequest
from dip.stopping import estimate_sigma
from dip.wiener import PROFILES, collaborative_wiener, profile_for

from conftest import psnr, save, synthetic

SIGMA = 25 / 255
SMALL_NET = ("net.channels_down=[8,8,8]", "net.channels_up=[8,8,8]", "net.channels_skip=[4,4,4]")


def _noisy(clean: torch.Tensor, sigma: float = SIGMA, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return clean + torch.randn(clean.shape, generator=g) * sigma


def _blurred(t: torch.Tensor) -> torch.Tensor:
    """A mediocre pilot: the noisy image under a 5x5 box (less noise, softer edges)."""
    return F.avg_pool2d(F.pad(t, (2, 2, 2, 2), mode="replicate"), 5, stride=1)


@pytest.mark.parametrize("channels", [1, 3])
def test_the_filter_improves_on_its_pilot_and_on_the_noisy_image(channels: int) -> None:
    clean = synthetic(64, channels)
    noisy = _noisy(clean).clamp(0, 1)
    pilot = _blurred(noisy).clamp(0, 1)
    out = collaborative_wiener(noisy, pilot, SIGMA)
    assert out.shape == clean.shape and 0 <= out.min() and out.max() <= 1
    assert psnr(out, clean) > psnr(pilot, clean) + 1.0
    assert psnr(out, clean) > psnr(noisy, clean) + 6.0
    assert torch.equal(out, collaborative_wiener(noisy, pilot, SIGMA))  # deterministic


def test_an_exact_pilot_gives_the_oracle_filter_close_to_the_clean_image() -> None:
    clean = synthetic(64)
    noisy = _noisy(clean)
    assert psnr(collaborative_wiener(noisy, clean, SIGMA), clean) > psnr(noisy, clean) + 10


def test_no_noise_returns_the_input_and_a_picture_smaller_than_a_patch_the_pilot() -> None:
    # with no noise there is nothing to filter: every gain P^2 / (P^2 + 0) is 1 (it returned
    # the pilot, the network's image, for a clean picture)
    pilot = synthetic(32)
    noisy = _noisy(pilot)
    assert torch.equal(collaborative_wiener(noisy, pilot, 0.0), noisy.clamp(0, 1))
    small = synthetic(32)[..., :6, :6]
    assert torch.equal(collaborative_wiener(_noisy(small), small, SIGMA), small)


def _clean(name: str) -> torch.Tensor:
    picture = torch.zeros(1, 1, 32, 32)
    if name == "a lone white pixel":
        picture[..., 16, 16] = 1
    if name == "lines":
        picture[..., ::6, :] = 1
    if name == "a smooth colour drawing":  # reads a few millionths of a grey level, not 0
        y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 48), indexing="ij")
        picture = torch.stack([x, y, (x + y) / 2])[None]
    return picture


@pytest.mark.parametrize("name", ["black", "a lone white pixel", "lines",
                                  "a smooth colour drawing"])
def test_a_picture_without_noise_is_refused_at_once_with_how_to_denoise_it_anyway(
        tmp_path: Path, name: str) -> None:
    """Its noise reads 0 (a lone white pixel's read 17.3 before the ties' check, and the
    Wiener step brought it down to 1), or 0 up to round-off (a smooth drawing's read 4e-6
    grey levels and ran): the fits then ran for minutes (2.3 min for a 128 px page of text)
    and the Wiener filter gave the input back as it was."""
    src = save(_clean(name), tmp_path / "in.png")
    before = src.read_bytes()
    result = CliRunner().invoke(cli, ["denoise", str(src), "-o", str(tmp_path / "out.png"),
                                      "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("dip: error: no noise found in the input: its noise level "
                                    "reads 0") and len(result.output.splitlines()) == 1
    assert result.output.rstrip().endswith("give its level, e.g. --set stop.sigma=5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png"]
    assert src.read_bytes() == before
    given = dip.restore("denoise", src, write=False, device="cpu", iters=3,
                        overrides=["stop.sigma=5", "optim.restarts=1", *SMALL_NET])
    assert given.record["wiener_sigma"] == 5.0
    # without the filter (the paper's preset) the result is the network's, not the input
    unfiltered = dip.restore("denoise", src, write=False, device="cpu", iters=3,
                             overrides=["noise.wiener=false", "optim.restarts=1", *SMALL_NET])
    assert "wiener_sigma" not in unfiltered.record


def test_a_picture_too_small_to_read_asks_for_its_noise_level(tmp_path: Path) -> None:
    """A grey picture under 16 px a side reads 0 whatever its noise (too few patches for
    their spectrum), and the filter at 0 gave it back as it was, said to be denoised: it is
    refused, asking for its level, and denoised with it. A colour one is judged by the same
    size (where its colour patches read none, their mean, a grey picture, is read)."""
    noisy = _noisy(_clean("lines"), 10 / 255).clamp(0, 1)
    small = noisy[..., :12, :12]
    tinted = torch.cat([small, small, (small + 1 / 255).clamp(0, 1)], 1)  # not quite grey
    path = save(noisy, tmp_path / "whole.png")
    result = dip.restore("denoise", path, write=False, device="cpu", iters=3,
                         overrides=["optim.restarts=1", *SMALL_NET])
    assert result.picture.pixels.shape == noisy.shape
    for picture in (noisy[..., :14, :14], tinted):
        path = save(picture, tmp_path / f"{picture.shape[1]}x{picture.shape[-1]}.png")
        with pytest.raises(InputError, match=r"too small to read its noise level from .*"
                                             r"give its level, e\.g\. stop\.sigma=25"):
            dip.restore("denoise", path, write=False, device="cpu", iters=3,
                        overrides=["optim.restarts=1", *SMALL_NET])
        result = dip.restore("denoise", path, write=False, device="cpu", iters=3,
                             overrides=["optim.restarts=1", "stop.sigma=10", *SMALL_NET])
        read = load_image(path).pixels
        assert result.picture.pixels.shape == picture.shape
        assert (result.picture.pixels - read).abs().max() > 2 / 255  # not given back


def test_a_noisy_grey_picture_beside_a_colour_reference_is_not_read_as_clean(
        tmp_path: Path) -> None:
    """Made RGB again beside a colour reference, its three copies of one noise read 0."""
    grey = _noisy(synthetic(32, 1)).clamp(0, 1)
    src = save(grey.expand(-1, 3, -1, -1), tmp_path / "grey_as_rgb.png")
    ref = save(synthetic(32), tmp_path / "ref.png")
    result = dip.restore("denoise", src, write=False, device="cpu", iters=3, reference=ref,
                         overrides=["optim.restarts=1", *SMALL_NET])
    assert result.picture.pixels.shape == (1, 3, 32, 32)


def test_pictures_of_different_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="must both be"):
        collaborative_wiener(synthetic(32), synthetic(48), SIGMA)
    with pytest.raises(ValueError, match="must both be"):
        collaborative_wiener(torch.rand(1, 2, 32, 32), torch.rand(1, 2, 32, 32), SIGMA)


def test_the_papers_profile_changes_above_sigma_40() -> None:
    assert profile_for(25 / 255) is PROFILES[0] and PROFILES[0].patch == 8
    assert profile_for(50 / 255) is PROFILES[1] and PROFILES[1].patch == 11
    clean = synthetic(64)
    noisy = _noisy(clean, 50 / 255, seed=3)
    out = collaborative_wiener(noisy, _blurred(noisy).clamp(0, 1), 50 / 255)
    assert psnr(out, clean) > psnr(noisy, clean) + 8


def _restore(tmp_path: Path, *overrides: str):
    clean = synthetic(48)
    picture = save(_noisy(clean, seed=6).clamp(0, 1), tmp_path / "photo.png")
    req = RunRequest(task="denoise", device="cpu", input=picture, write=False, iters=40,
                     restarts=2, preset="fast",
                     overrides=("net.channels_down=[8,8,8]", "net.channels_up=[8,8,8]",
                                "net.channels_skip=[4,4,4]", *overrides))
    result = run.restore(req)
    noisy = load_image(picture).pixels
    average = torch.cat([m.image for m in result.members]).mean(0, keepdim=True).clamp(0, 1)
    return result.picture.pixels, noisy, average


def test_the_fast_preset_filters_the_fits_average_with_it_as_the_pilot(tmp_path: Path) -> None:
    result, noisy, average = _restore(tmp_path)
    expected = collaborative_wiener(noisy, average, estimate_sigma(noisy))
    assert torch.allclose(result, expected, atol=1e-6)
    assert not torch.allclose(result, average, atol=1e-3)


@pytest.mark.parametrize("overrides", [("noise.wiener=false",),
                                       ("noise.model=poisson",)])
def test_without_the_filter_or_for_photon_noise_the_result_is_the_average(
        tmp_path: Path, overrides: tuple[str, ...]) -> None:
    result, _, average = _restore(tmp_path, *overrides)
    assert torch.allclose(result, average, atol=1e-6)


def test_a_given_noise_level_is_the_filters_too(tmp_path: Path) -> None:
    result, noisy, average = _restore(tmp_path, "stop.sigma=40")
    assert torch.allclose(result, collaborative_wiener(noisy, average, 40 / 255), atol=1e-6)


@pytest.mark.parametrize("wiener", ["true", "false"])
def test_the_summary_says_whether_the_result_was_filtered(tmp_path: Path, noisy_png: Path,
                                                          wiener: str) -> None:
    result = CliRunner().invoke(cli, [str(a) for a in (
        "denoise", noisy_png, "-o", tmp_path / "o.png", "--set", f"noise.wiener={wiener}",
        "--restarts", 2, "--iters", 3, *SMALL[:-1])])  # not quiet
    assert result.exit_code == 0, result.output
    said = ("the average of 2 restarts (the paper's fit and SURE's in turn); then a Wiener "
            "filter of the input with that average as its pilot" in result.output)
    assert said == (wiener == "true"), result.output


def test_the_summary_of_several_fits_gives_their_span_and_of_one_its_own(
        tmp_path: Path, noisy_png: Path) -> None:
    # with 2 fits stopping apart (SURE's at 70 steps, the paper's at 20) the line said
    # '20 steps ...; image from step 15', the first fit's alone; one fit's pilot was 'that
    # image' with no image named before it
    result = CliRunner().invoke(cli, [str(a) for a in (
        "denoise", noisy_png, "-o", tmp_path / "o.png", "--restarts", 2, "--iters", 4,
        "--stop", "fixed", *SMALL[:-1])])
    assert result.exit_code == 0, result.output
    assert "(2 fits of 4 steps, step budget reached; images from step 4; " in result.output
    result = CliRunner().invoke(cli, [str(a) for a in (
        "denoise", noisy_png, "-o", tmp_path / "one.png", "--restarts", 1, "--iters", 1,
        "--stop", "fixed", *SMALL[:-1])])
    assert result.exit_code == 0, result.output
    assert "(1 step, step budget reached; image from step 1; " in result.output
    assert "\n  then a Wiener filter of the input with the fit's image as its pilot" \
        in result.output


def test_steps_said_spans_the_fits() -> None:
    from dip.record import steps_said

    members = [{"iterations": 20, "returned_iteration": 15},
               {"iterations": 70, "returned_iteration": 64}, {"stop_reason": "no fit needed"}]
    assert steps_said({"iterations": 20, "returned_iteration": 15, "members": members}) == (
        "2 fits of 20 to 70 steps", "images from steps 15 to 64")


def test_ctrl_c_in_the_filter_writes_the_fits_result_instead_of_losing_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The filter comes after the whole fit (minutes on a large photo): a Ctrl-C there kept
    nothing. Now it keeps what Ctrl-C in the fit keeps: the estimate so far, unfiltered."""
    from dip.tasks import get_task

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(get_task("denoise")), "finish", interrupted)
    picture = save(_noisy(synthetic(32), seed=6).clamp(0, 1), tmp_path / "photo.png")
    req = RunRequest(task="denoise", device="cpu", input=picture, output=tmp_path / "o.png",
                     iters=5, restarts=2, overrides=SMALL_NET)
    result = run.restore(req, keep_on_interrupt=True)
    average = torch.cat([m.image for m in result.members]).mean(0, keepdim=True).clamp(0, 1)
    assert torch.allclose(result.picture.pixels, average, atol=1e-6)
    record = json.loads((tmp_path / "o.png.json").read_text())
    assert record["stop_reason"] == "interrupted" and (tmp_path / "o.png").is_file()
    with pytest.raises(KeyboardInterrupt):  # a caller that did not ask to keep it
        run.restore(req.replace(output=tmp_path / "p.png"))
    assert not (tmp_path / "p.png").exists()


def test_ctrl_c_in_one_packed_jobs_filter_skips_the_others_filters(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pack's jobs are filtered one after another: after a Ctrl-C in the first, the others
    sat through theirs, however long, before the run stopped."""
    from dip.tasks import get_task

    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        raise KeyboardInterrupt

    monkeypatch.setattr(type(get_task("denoise")), "finish", interrupted)
    requests = []
    for n in range(3):
        picture = save(_noisy(synthetic(32), seed=n).clamp(0, 1), tmp_path / f"p{n}.png")
        requests.append(RunRequest(task="denoise", device="cpu", input=picture, iters=3,
                                   output=tmp_path / f"o{n}.png", restarts=1,
                                   overrides=SMALL_NET))
    results = run.restore_pack(requests, keep_on_interrupt=True)
    assert calls == [1]
    assert [r.record["stop_reason"] for r in results] == ["interrupted"] * 3


def test_after_ctrl_c_in_the_fit_the_filter_is_skipped(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from dip.tasks import get_task

    filtered = []
    monkeypatch.setattr(type(get_task("denoise")), "finish",
                        lambda self, result, *a: filtered.append(1) or result)

    def stop_at_3(progress) -> None:
        if progress.step == 3:
            raise KeyboardInterrupt

    picture = save(_noisy(synthetic(32), seed=6).clamp(0, 1), tmp_path / "photo.png")
    req = RunRequest(task="denoise", device="cpu", input=picture, write=False, iters=20,
                     restarts=1, overrides=SMALL_NET)
    result = run.restore(req, keep_on_interrupt=True, progress=stop_at_3)
    assert result.record["stop_reason"] == "interrupted" and filtered == []
    assert run.restore(req).record["stop_reason"] != "interrupted" and filtered == [1]


def test_matching_in_bands_gives_the_same_image(monkeypatch) -> None:
    """A large image is matched a few reference rows at a time (bounded memory): each
    reference's group is its own, so the bands change nothing but the summation order."""
    clean = synthetic(64)
    noisy = _noisy(clean, seed=7).clamp(0, 1)
    pilot = _blurred(noisy).clamp(0, 1)
    whole = collaborative_wiener(noisy, pilot, SIGMA)
    monkeypatch.setattr(wiener, "_REFERENCES", 40)  # about two reference rows a band
    assert torch.allclose(collaborative_wiener(noisy, pilot, SIGMA), whole, atol=1e-5)


@pytest.mark.parametrize("wiener_on", [True, False])
def test_the_estimate_said_before_a_run_counts_the_filter_and_the_run_corrects_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wiener_on: bool) -> None:
    """The pre-start estimate is the fits' time plus the filter's (its seconds per pixel,
    timed on a crop, times the pixels); after the run, the cache holds the filter's own
    measured rate for the next estimate."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(run, "seconds", lambda *args: 0.0)  # the fits' part: nothing
    monkeypatch.setattr(wiener, "seconds_per_pixel", lambda noisy, sigma: 0.01)
    picture = save(_noisy(synthetic(48), seed=6).clamp(0, 1), tmp_path / "photo.png")
    req = RunRequest(task="denoise", device="cpu", input=picture, write=False, iters=4,
                     restarts=1, preset="fast",
                     overrides=("net.channels_down=[8,8,8]", "net.channels_up=[8,8,8]",
                                "net.channels_skip=[4,4,4]", "stop.rule=fixed",
                                f"noise.wiener={str(wiener_on).lower()}"))
    record = run.restore(req).record
    assert record["estimate"]["seconds"] == pytest.approx(0.01 * 48 * 48 if wiener_on else 0,
                                                        abs=0.06)  # rounded
    cache = json.loads((tmp_path / "cache" / "dip" / "calibration.json").read_text())
    rates = [v for k, v in cache.items() if "wiener|3 channels|patch 8 every 3" in k]
    assert len(rates) == (1 if wiener_on else 0)
    assert all(0 < rate != 0.01 for rate in rates)  # the run's own rate replaced it


def test_the_filter_in_chunks_of_references_is_the_same_filter(monkeypatch) -> None:
    # 4096 references at once took 645 MB over the process's base at 512 px; chunks of 256
    # take 80: the same image to float rounding, whatever the chunk
    from dip import wiener

    g = torch.Generator().manual_seed(0)
    clean = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=g),
                                            size=(70, 61), mode="bilinear")
    noisy = (clean + torch.randn(clean.shape, generator=g) * 25 / 255).clamp(0, 1)
    outs = []
    for references in (1, 256, 100_000):
        monkeypatch.setattr(wiener, "_REFERENCES", references)
        outs.append(wiener.collaborative_wiener(noisy, clean, 25 / 255))
    assert all(torch.allclose(o, outs[0], rtol=0, atol=1e-5) for o in outs[1:])
