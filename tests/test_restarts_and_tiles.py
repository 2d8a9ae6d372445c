"""Runs of several members: restarts averaged (with an uncertainty map), tiles blended, the
layout decided from memory, and the estimate said before the first step."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import dip
from dip import image, metrics, run
from dip.cli.main import cli
from dip.config import resolve
from dip.image import dip_marker
from dip.layout import peak_bytes
from dip.operators import Downsample, Identity, back_project
from dip.tasks import Problem
from dip.tasks.superres import back_projected

from conftest import save, synthetic

TINY = ("net.channels_down=[8,8,8,8,8]", "net.channels_up=[8,8,8,8,8]",
        "net.channels_skip=[2,2,2,2,2]", "input.channels=4")
SETS = [a for o in TINY for a in ("--set", o)]


def invoke(*args) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _noisy(tmp_path: Path, size: int = 48) -> tuple[Path, Path]:
    clean = synthetic(size)
    g = torch.Generator().manual_seed(0)
    noisy = (clean + 25 / 255 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return save(noisy, tmp_path / "noisy.png"), save(clean, tmp_path / "clean.png")


def _restore(noisy: Path, **kw):
    kw.setdefault("iters", 20)
    return dip.restore("denoise", noisy, write=False, device="cpu", stop="fixed",
                       overrides=TINY + tuple(kw.pop("sets", ())), **kw)


def test_restarts_keep_the_first_fit_and_their_average_is_no_worse(tmp_path: Path) -> None:
    noisy, clean = _noisy(tmp_path)
    ref = image.load_image(clean).pixels
    one = _restore(noisy, sets=("perf.threads=1",))
    three = _restore(noisy, restarts=3, sets=("perf.threads=1",))
    # restart 0 keeps the run's seed: adding restarts does not change the first fit
    assert torch.equal(three.members[0].image, one.fit.image)
    singles = [metrics.psnr(m.image, ref) for m in three.members]
    mean_mse = np.mean([10 ** (-p / 10) for p in singles])
    # the average's error is at most the members' mean error (convexity), and here below all
    assert metrics.psnr(three.picture.pixels, ref) >= -10 * np.log10(mean_mse)
    assert three.record["config"]["optim"]["restarts"] == 3
    assert [m["restart"] for m in three.record["members"]] == [0, 1, 2]


def test_uncertainty_is_a_grey_map_of_the_restarts_spread_marked_as_dips(tmp_path: Path) -> None:
    noisy, _ = _noisy(tmp_path)
    out = tmp_path / "out.png"
    result = invoke("denoise", noisy, "-o", out, "--iters", "15", "--restarts", "2",
                    "--uncertainty", "--device", "cpu", "-q", *SETS)
    assert result.exit_code == 0, result.output
    path = tmp_path / "out_uncertainty.png"
    picture = Image.open(path)
    assert picture.mode == "L" and picture.size == (48, 48)
    assert np.asarray(picture).max() > 0  # two seeds never agree everywhere
    assert dip_marker(path) == "uncertainty"  # a batch never takes it for a photo
    record = json.loads(out.with_name("out.png.json").read_text())
    assert record["uncertainty"] == str(path.resolve())


def test_uncertainty_without_restarts_is_refused_in_one_line(tmp_path: Path) -> None:
    noisy, _ = _noisy(tmp_path)
    result = invoke("denoise", noisy, "-o", tmp_path / "o.png", "--uncertainty", "-q",
                    "--restarts", "1")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "dip: error: --uncertainty maps where restarts disagree; it needs --restarts of 2 or "
        "more"]
    assert not (tmp_path / "o.png").exists()


def test_the_record_gives_the_tiles_as_cut_in_input_pixels(tmp_path: Path) -> None:
    # x8 tiles are cut in whole input pixels: --tile 36 is 4 of them, 32 result pixels, with
    # an overlap of 9 // 8 = 1 of them; the record said 36 and 9
    noisy, _ = _noisy(tmp_path, 16)
    r = dip.restore("superres", noisy, factor=8, write=False, device="cpu", iters=2,
                    stop="fixed", tile="36", restarts=1, overrides=TINY)
    assert (r.record["tiles"]["size"], r.record["tiles"]["overlap"]) == (32, 8)
    # in words for the command and for Python alike (it named the config key tile.size)
    count = r.record["tiles"]["count"]
    assert r.record["tiles"]["why"] == f"{count} tiles of 32 px: the size asked for"
    # each member's tile in result pixels too, as tiles.size is (they were the input's 4)
    assert all(m["tile"][2] <= 32 and m["tile"][3] <= 32 and m["tile"][2] % 8 == 0
               for m in r.record["members"])
    assert max(m["tile"][0] + m["tile"][2] for m in r.record["members"]) == 128


@pytest.mark.parametrize("task,extra", [("denoise", {}), ("superres", {"factor": 2})])
def test_tiles_cover_the_result_at_its_size(tmp_path: Path, task: str, extra: dict) -> None:
    noisy, _ = _noisy(tmp_path, 40)
    r = dip.restore(task, noisy, write=False, device="cpu", iters=10, stop="fixed", tile="32",
                    restarts=1, overrides=TINY, **extra)
    scale = extra.get("factor", 1)
    assert r.picture.pixels.shape == (1, 3, 40 * scale, 40 * scale)
    tiles = r.record["tiles"]
    assert tiles["size"] == 32 and tiles["count"] == len(r.record["members"]) > 1
    for member in r.record["members"]:
        top, left, h, w = member["tile"]  # in result pixels, as tiles.size is
        assert member["iterations"] == 10 and h <= 32 and w <= 32
        assert top + h <= 40 * scale and left + w <= 40 * scale


def test_an_inpainting_tile_wholly_inside_a_hole_is_refused_or_grown(tmp_path: Path) -> None:
    """Its fit saw none of the picture and returned the untrained network's output, the
    same whatever the photo (a wrong-result sweep: a photo and its negative gave the same
    top-left corner). Tiles the user sized are refused with the size that sees; auto's grow."""
    path = save(synthetic(80), tmp_path / "photo.png")
    mask = np.zeros((80, 80), np.uint8)
    mask[:40, :34] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    with pytest.raises(dip.InputError, match=re.escape(
            "the holes cover a whole tile of 32 px (rows 0-32, columns 0-32), where a fit sees "
            "none of the picture; give tile='48', or tile='off'")):
        dip.restore("inpaint", path, mask=tmp_path / "mask.png", write=False, device="cpu",
                    iters=2, tile="32", overrides=TINY)
    r = dip.restore("inpaint", path, mask=tmp_path / "mask.png", write=False, device="cpu",
                    iters=2, stop="fixed", overrides=TINY + ("tile.auto_size=32",
                                                             "tile.whole_max=40"))
    assert r.record["tiles"]["size"] == 48  # grown from 32 until every tile sees
    # grown to the whole picture: fitted whole, as --tile off (not '1 tile of 80 px')
    mask[:, :] = 255
    mask[:8, :8] = 0
    Image.fromarray(mask).save(tmp_path / "mask.png")
    grown, whole = (dip.restore("inpaint", path, mask=tmp_path / "mask.png", write=False,
                                device="cpu", iters=2, stop="fixed", tile=tile,
                                overrides=TINY + ("tile.auto_size=32", "tile.whole_max=40",
                                                  "perf.threads=1"))
                    for tile in ("auto", "off"))
    assert "tiles" not in grown.record.get("extra", {})
    assert torch.equal(grown.picture.pixels, whole.picture.pixels)


def test_a_picture_one_tile_holds_is_still_tiled_for_a_memory_budget(tmp_path: Path) -> None:
    """The whole picture fitted in one automatic tile was fitted whole even where its need
    was over perf.max_memory (said as 'fits in'); a tile the user gave over the budget was
    no longer refused."""
    from dip.layout import plan_layout

    req = run.plan(dip.RunRequest(task="denoise", input=save(synthetic(120),
                                                              tmp_path / "p.png"),
                                  device="cpu", write=False))
    loaded = run.load(req)
    problem = req.task.problem(loaded.inputs, req.cfg)
    whole = plan_layout(req.cfg, problem, 3, torch.device("cpu"), lambda part: None)
    assert whole.tiles is None  # (the preset fits 128 px whole)
    cfg = resolve("denoise", overrides=[f"perf.max_memory={whole.peak_bytes * 0.8 / 2 ** 30}"],
                  explicit={"device": "cpu"})
    tiled = plan_layout(cfg, problem, 3, torch.device("cpu"), lambda part: None)
    assert tiled.tiles is not None and tiled.peak_bytes <= whole.peak_bytes * 0.8


@pytest.mark.parametrize("restarts", [1, 2])
def test_an_inpainting_tile_without_a_hole_is_its_own_result(tmp_path: Path,
                                                            restarts: int) -> None:
    picture = synthetic(64)
    path = save(picture, tmp_path / "photo.png")
    mask = np.zeros((64, 64), np.uint8)
    mask[4:12, 4:12] = 255  # one hole, in the top-left tile
    Image.fromarray(mask).save(tmp_path / "mask.png")
    r = dip.restore("inpaint", path, mask=tmp_path / "mask.png", write=False, device="cpu",
                    iters=5, stop="fixed", tile="32", restarts=restarts,
                    overrides=TINY + ("tile.overlap=8",))
    rows = r.record["members"]
    # tiles, not fits: with 2 restarts a tile without a hole is 2 members needing no fit
    unfitted = [m for m in rows if m["stop_reason"] == "no fit needed"]
    assert r.record["tiles"]["solved"] == len(unfitted) // restarts == r.record["tiles"][
        "count"] - 1
    far = r.picture.pixels[..., 40:, 40:]  # only in tiles without the hole
    assert torch.allclose(far, image.load_image(path).pixels[..., 40:, 40:], atol=1 / 255)
    # --redraw-known redraws every pixel, so no tile is its own result: those without a hole
    # came back as the input beside redrawn ones
    r = dip.restore("inpaint", path, mask=tmp_path / "mask.png", write=False, device="cpu",
                    iters=5, stop="fixed", tile="32", redraw_known=True,
                    overrides=TINY + ("tile.overlap=8",))
    assert r.record["tiles"]["solved"] == 0
    far = r.picture.pixels[..., 40:, 40:]
    assert not torch.allclose(far, image.load_image(path).pixels[..., 40:, 40:], atol=1 / 255)


@pytest.mark.parametrize("tile", ["off", "32"])
def test_inpainting_keeps_every_known_pixel_as_given_unless_told_to_redraw(
        tmp_path: Path, tile: str) -> None:
    path = save(synthetic(48), tmp_path / "photo.png")
    given = image.load_image(path).pixels
    g = torch.Generator().manual_seed(1)
    holes = torch.rand(1, 1, 48, 48, generator=g) < 0.5
    save(holes.float(), tmp_path / "mask.png")

    def fill(out: str, **kw):
        return dip.restore("inpaint", path, mask=tmp_path / "mask.png", output=tmp_path / out,
                           device="cpu", iters=5, stop="fixed", tile=tile, restarts=2,
                           overrides=TINY + ("tile.overlap=8",), **kw)

    kept = fill("kept.png", uncertainty=True)
    known = ~holes.expand_as(given)
    assert torch.equal(kept.picture.pixels[known], given[known])
    spread = torch.from_numpy(np.array(Image.open(tmp_path / "kept_uncertainty.png")))
    assert int(spread[~holes[0, 0]].max()) == 0 < int(spread[holes[0, 0]].max())
    assert kept.record["redraw_known"] is False
    redrawn = fill("redrawn.png", redraw_known=True)
    assert not torch.allclose(redrawn.picture.pixels[known], given[known], atol=1 / 255)
    # the holes are the same fill either way: only the known pixels are put back
    assert torch.equal(redrawn.picture.pixels[~known], kept.picture.pixels[~known])


@pytest.mark.parametrize("kernel", ["lanczos", "area"])
def test_superres_result_shrinks_exactly_to_its_input_unless_told_not_to(
        tmp_path: Path, kernel: str) -> None:
    path = save(synthetic(16), tmp_path / "small.png")
    small = image.load_image(path).pixels
    op = Downsample(4, kernel)

    def enlarge(**kw):
        # threads pinned: "auto" follows the load, and the two fits must be the same fit
        return dip.restore("superres", path, factor=4, kernel=kernel, write=False,
                           device="cpu", iters=300, stop="fixed",
                           overrides=TINY + ("perf.threads=1",), **kw)

    # 300 steps: a fit that has barely begun misses its input by detail the residual's noise
    # reading takes in part for noise (2.9 grey levels after 5 steps, 0.6 after 300), and
    # the correction is then scaled by a hair (0.995-0.998)
    projected, raw = enlarge(), enlarge(no_back_projection=True)
    assert projected.record["no_back_projection"] is False
    # the record says what was done, beside what was asked
    assert (projected.record["back_projection"], raw.record["back_projection"]) == ("exact",
                                                                                  "off")
    # a tiny network's fit is still far from the input; the correction puts it back (to
    # float rounding, and the clamp to [0, 1] where a kernel's ringing overshoots)
    assert metrics.psnr(op(raw.picture.pixels), small) < 35
    assert metrics.psnr(op(projected.picture.pixels), small) > 50
    assert torch.allclose(projected.picture.pixels,
                          back_project(op, raw.picture.pixels, small).clamp(0, 1), atol=1e-6)


def _enlarged(path: Path, **kw) -> dip.Restoration:
    """A short x4 fit of ``path`` by the tiny network, on one thread (the same fit each time)."""
    return dip.restore("superres", path, factor=4, write=False, device="cpu", iters=60,
                       stop="fixed", overrides=TINY + ("perf.threads=1",), **kw)


def test_a_jpeg_inputs_coding_error_is_not_put_back(tmp_path: Path) -> None:
    # a 32 px JPEG at quality 75 (its chroma at half resolution): the correction of its
    # luma is scaled down by its coding error, its chroma's left out
    grain = np.random.default_rng(0).normal(0, 6, (32, 32, 3))
    pixels = np.clip(np.round(synthetic(32)[0].permute(1, 2, 0).numpy() * 255 + grain), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / "small.jpg", quality=75)
    picture = image.load_image(tmp_path / "small.jpg")
    op = Downsample(4, "lanczos")
    projected = _enlarged(tmp_path / "small.jpg")
    raw = _enlarged(tmp_path / "small.jpg", no_back_projection=True)
    assert projected.record["back_projection"] == "scaled"
    exact = back_project(op, raw.picture.pixels, picture.pixels).clamp(0, 1)
    assert torch.allclose(projected.picture.pixels,
                          back_projected(raw.picture.pixels, picture.pixels, 4, "lanczos",
                                         error=picture.coding_error), atol=1e-6)
    ycbcr = image.YCBCR.float()

    def misses(t):  # per channel of YCbCr: how far the image shrunk is from the input
        return torch.einsum("ij,njhw->nihw", ycbcr, op(t) - picture.pixels).pow(2).mean(
            (0, 2, 3)).sqrt()

    before, after, exactly = misses(raw.picture.pixels), misses(projected.picture.pixels), \
        misses(exact)
    assert torch.allclose(after[1:], before[1:], atol=1e-6)  # chroma: none of it
    assert exactly[0] < after[0] < before[0]  # luma: some of it


def test_a_noisy_small_pngs_noise_is_not_put_back(tmp_path: Path) -> None:
    """No table says a PNG's error: its noise is read in what the fit left of it, and the
    correction is scaled as a JPEG's is (it was put back whole, 0.76 dB under the network's
    image at sigma 5 on the benchmark's colour crops)."""
    truth = synthetic(128)
    small = Downsample(4, "bicubic")(truth)
    noisy = small + torch.randn(small.shape, generator=torch.Generator().manual_seed(0)) * 10 / 255
    path = save(noisy.clamp(0, 1), tmp_path / "small.png")
    picture = image.load_image(path)
    projected = _enlarged(path)
    raw = _enlarged(path, no_back_projection=True)
    assert projected.record["back_projection"] == "scaled"
    exact = back_project(Downsample(4, "lanczos"), raw.picture.pixels, picture.pixels)
    # (a tiny network's short fit: +0.2 dB here; the benchmark's fits +0.9 at sigma 5)
    assert metrics.psnr(projected.picture.pixels, truth) > metrics.psnr(exact.clamp(0, 1),
                                                                        truth) + 0.1


def test_a_grey_photo_saved_as_a_colour_jpeg_is_corrected_by_its_luma_error(
        tmp_path: Path) -> None:
    # fitted as grey (run.grey_of_rgb): the luma's error is the grey picture's; colour at
    # full resolution (4:4:4) has finite errors that must not add up onto the one channel
    grain = np.random.default_rng(0).normal(0, 6, (32, 32))
    grey = np.clip(np.round(synthetic(32, 1)[0, 0].numpy() * 255 + grain), 0, 255)
    Image.fromarray(np.repeat(grey.astype(np.uint8)[..., None], 3, -1)).save(
        tmp_path / "small.jpg", quality=75, subsampling=0)
    picture = image.load_image(tmp_path / "small.jpg")
    assert len(picture.coding_error) == 3 and picture.coding_error[1] < float("inf")
    projected = _enlarged(tmp_path / "small.jpg")
    raw = _enlarged(tmp_path / "small.jpg", no_back_projection=True)
    want = back_projected(raw.picture.pixels[:, :1], picture.pixels[:, :1], 4, "lanczos",
                          error=picture.coding_error[:1])
    assert torch.allclose(projected.picture.pixels, want.expand(-1, 3, -1, -1), atol=1e-6)
    # against a colour reference it is fitted in colour, with the file's three errors
    save(synthetic(128), tmp_path / "reference.png")
    projected = _enlarged(tmp_path / "small.jpg", reference=tmp_path / "reference.png")
    raw = _enlarged(tmp_path / "small.jpg", reference=tmp_path / "reference.png",
                    no_back_projection=True)
    want = back_projected(raw.picture.pixels, picture.pixels, 4, "lanczos",
                          error=picture.coding_error)
    assert torch.allclose(projected.picture.pixels, want, atol=1e-6)
    assert not torch.allclose(projected.picture.pixels, back_projected(
        raw.picture.pixels, picture.pixels, 4, "lanczos"), atol=1e-3)


def test_ctrl_c_in_a_tiled_run_keeps_the_tiles_so_far(tmp_path: Path) -> None:
    noisy, _ = _noisy(tmp_path, 64)
    seen = []

    def interrupt(p) -> None:
        seen.append(p.step)
        if len(seen) == 12:
            raise KeyboardInterrupt

    r = dip.restore("denoise", noisy, write=False, device="cpu", iters=50, stop="fixed",
                    tile="32", overrides=TINY + ("tile.overlap=8",), progress=interrupt,
                    keep_on_interrupt=True)
    assert r.record["stop_reason"] == "interrupted"
    assert r.picture.pixels.shape == (1, 3, 64, 64)
    # one count over every tile's steps (a second worker may finish the step it was in)
    assert seen[:12] == list(range(1, 13)) and len(seen) <= 13
    assert any(m["stop_reason"] == "not started" for m in r.record["members"])


def test_auto_tiles_only_when_the_whole_image_would_not_fit(tmp_path: Path,
                                                            monkeypatch) -> None:
    noisy, _ = _noisy(tmp_path, 64)
    whole = dip.restore("denoise", noisy, write=False, device="cpu", iters=2, overrides=TINY)
    assert "tiles" not in whole.record and whole.record["estimate"]["peak_gb"] > 0
    # a budget under the whole image's need and over tiles of 32 px, the process's own memory
    # held still (it grows as tests run, by more than the two differ)
    from dip import estimate

    monkeypatch.setattr(estimate, "process_bytes", lambda: 300 * 2 ** 20)
    big, _ = _noisy(tmp_path, 160)
    peaks = [run.forecast(run.RunRequest(task="denoise", input=big, device="cpu", iters=2,
                                         overrides=(*TINY, "tile.whole_max=0"), tile=tile))
             .layout.peak_bytes for tile in ("off", "32")]
    tight = dip.restore("denoise", big, write=False, device="cpu", iters=2,
                        max_memory=sum(peaks) / 2 / 2 ** 30,
                        overrides=(*TINY, "tile.whole_max=0"))
    assert "the whole image would need" in tight.record["tiles"]["why"], peaks


def _layout(tmp_path: Path, size: int, *overrides: str, **kw):
    noisy, _ = _noisy(tmp_path, size)
    request = run.RunRequest(task="denoise", input=str(noisy), write=False, device="cpu",
                             overrides=overrides, **kw)
    p = run.plan(request)
    return run.build(p, run.load(p)).layout


def test_the_fast_preset_tiles_a_denoise_larger_than_its_budget_was_chosen_for(
        tmp_path: Path) -> None:
    """Quality, not memory: the fast preset's budget is for 128 px; a 256 px image fitted
    whole stops under-fitted, so auto fits it in tiles of 128 (benchmarks/README.md)."""
    big = _layout(tmp_path, 200, "preset=fast")
    assert big.side == 128 and len(big.tiles) == 4
    assert big.why == ("4 tiles of 128 px: 200 px is over the 192 px the preset fits whole "
                       "(its step budget is for smaller images)")
    assert _layout(tmp_path, 192, "preset=fast").tiles is None  # up to 192 px: whole
    assert _layout(tmp_path, 200, "preset=fast", tile="off").tiles is None  # as asked
    assert _layout(tmp_path, 200, "preset=paper").tiles is None  # chosen at full size


def test_the_tile_keys_are_checked(tmp_path: Path) -> None:
    from dip.errors import ConfigError

    with pytest.raises(ConfigError, match="'tile.whole_max' must be >= 0"):
        resolve("denoise", overrides=("tile.whole_max=-1",))
    with pytest.raises(ConfigError, match="'tile.auto_size' must be a tile's side of at least "
                                          "32 pixels, got 16"):
        resolve("denoise", overrides=("tile.auto_size=16",))


def _problem(size: int) -> Problem:
    y = torch.zeros(1, 3, size, size)
    return Problem(Identity(), y, (size, size))


def test_the_memory_estimate_grows_with_the_pixels_and_the_fits_at_once() -> None:
    cfg = resolve("denoise", overrides=TINY)
    sizes = [peak_bytes(cfg, _problem(s), 3, (s, s), 1, 1) for s in (64, 128, 256, 512)]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
    one, two = (peak_bytes(cfg, _problem(256), 3, (256, 256), n, n) for n in (1, 2))
    assert two > one


def test_one_restart_of_alternating_objectives_is_planned_as_the_squared_errors_fit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # restart 0 alone fits the squared error: --restarts 1 was charged SURE's two passes and
    # wider input (2.95 GB planned for a 512 px fit that took 1.63)
    from dip import estimate as costs

    monkeypatch.setattr(costs, "process_bytes", lambda: 0)  # (the process's own moves)

    def peak(restarts: int, objective: str) -> int:
        cfg = resolve("denoise", overrides=[*TINY, f"optim.restarts={restarts}"])
        problem = dataclasses.replace(_problem(256), objective=objective)
        return peak_bytes(cfg, problem, 3, (256, 256), 1, 1)

    assert peak(1, "alternate") == peak(1, "mse") < peak(1, "sure")
    # two restarts: one of them SURE's, its two passes counted with restart 0's wider input
    assert peak(2, "alternate") > max(peak(1, "alternate"), peak(2, "sure"))


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc's memory")
def test_measuring_a_networks_memory_keeps_nothing_and_happens_once_a_shape(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A dip run plans every job's memory: each measurement kept a whole network's saved
    activations alive (8.5 MB a job with the fast network, 35 with the paper's), and a
    fresh closure per job made the cache miss, so a batch of thousands measured each job."""
    import gc

    from dip import estimate

    def resident() -> int:
        gc.collect()
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    cfg = resolve("denoise", overrides=("preset=paper",))
    built = []

    def build() -> torch.nn.Module:
        built.append(1)
        return dip.nets.build_net(cfg.net.name, 32, 3, **{
            k: v for k, v in vars(cfg.net).items() if k != "name"})

    estimate.activation_bytes("once", build, 32, 1)
    before = resident()
    for i in range(8):
        estimate.activation_bytes(f"new shape {i}", build, 32, 1)
    assert resident() - before < 24 * 2 ** 20  # 283 MB before
    monkeypatch.setattr(estimate, "_SAVED", {})
    first = estimate.activation_bytes("same", build, 32, 64 * 64)
    assert estimate.activation_bytes("same", lambda: build(), 32, 64 * 64) == first
    assert len(built) == 10


def test_the_estimate_is_said_before_the_first_step_and_recorded(tmp_path: Path) -> None:
    noisy, _ = _noisy(tmp_path, 32)
    events = []
    r = dip.restore("denoise", noisy, write=False, device="cpu", iters=3, overrides=TINY,
                    on_start=lambda s: events.append(("start", s.describe())),
                    progress=lambda p: events.append(("step", p.step)))
    assert events[0][0] == "start" and "GB on cpu" in events[0][1]
    assert [e for e in events[1:] if e[0] == "start"] == []
    assert set(r.record["estimate"]) == {"seconds", "peak_gb", "device"}


def test_a_run_corrects_a_misleading_calibration_for_the_next_estimate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A calibration measured while other processes held the cores is cached; the next run
    of fits like these replaces it with its own measured rate."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    noisy, _ = _noisy(tmp_path, 32)

    def fit() -> dict:
        return dip.restore("denoise", noisy, write=False, device="cpu", iters=12, restarts=1,
                           # the filter's rate has an entry of its own (test_wiener); the
                           # threads fixed: auto's follow the load, and the key holds them
                           overrides=(*TINY, "stop.rule=fixed", "noise.wiener=false",
                                      "perf.threads=1")).record

    fit()
    cache = tmp_path / "cache" / "dip" / "calibration.json"
    (key, _), = json.loads(cache.read_text()).items()
    cache.write_text(json.dumps({key: 1000.0}))  # as if measured on a machine 10^5x busier
    assert fit()["estimate"]["seconds"] == pytest.approx(12 * 1000.0)
    learned = json.loads(cache.read_text())[key]
    assert 0 < learned < 1000.0 / 10
    assert fit()["estimate"]["seconds"] == pytest.approx(12 * learned, abs=0.06)  # rounded


def test_the_estimate_reads_in_seconds_minutes_or_hours() -> None:
    from dip.estimate import Estimate

    gb = 2 ** 30
    assert Estimate(40, gb, "cpu").describe() == "about 40 s, peak 1.00 GB on cpu"
    assert Estimate(600, gb, "cpu").describe() == "about 10 min, peak 1.00 GB on cpu"
    assert Estimate(30000, 2 * gb, "cpu").describe() == "about 8.3 h, peak 2.00 GB on cpu"
    assert Estimate(172800, gb, "cpu").describe() == "about 2.0 days, peak 1.00 GB on cpu"
    # said before the run from 3.46 s, and in its summary from the record's 3.5: the same
    said = Estimate(3.46, gb, "cpu")
    recorded = Estimate(said.to_dict()["seconds"], gb, "cpu")
    assert said.describe() == recorded.describe() == "about 4 s, peak 1.00 GB on cpu"


def test_dry_run_says_what_each_job_to_do_will_cost(tmp_path: Path) -> None:
    noisy, _ = _noisy(tmp_path, 32)
    batch = tmp_path / "batch.yaml"
    batch.write_text("defaults:\n  iters: 3\n  set: [" + ", ".join(f"'{o}'" for o in TINY)
                     + "]\n"
                     "jobs:\n  - {task: denoise, input: noisy.png}\n")
    result = invoke("run", batch, "--dry-run")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("to do") and "GB on cpu" in lines[0]
    assert "of fitting for those to do" in lines[-1]
    assert not (tmp_path / "results").exists()  # nothing written


def test_an_old_record_without_restarts_or_tiles_still_reruns_as_one_fit(tmp_path) -> None:
    noisy, _ = _noisy(tmp_path, 32)
    out = tmp_path / "o.png"
    assert invoke("denoise", noisy, "-o", out, "--iters", "3", "-q", *SETS).exit_code == 0
    record = json.loads(out.with_name("o.png.json").read_text())
    for section, key in (("optim", "restarts"), ("perf", "threads"), ("perf", "max_memory")):
        del record["config"][section][key]
    del record["config"]["tile"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(record))
    again = run.resolve_config(run.RunRequest(task="denoise", input=noisy, config=(old,)))
    assert (again.optim.restarts, again.tile.size) == (1, "auto")
    # ... and fits whole at any size that fits in memory, as runs before tile.whole_max did
    assert (again.tile.whole_max, again.tile.auto_size) == (0, 256)


def _bfloat16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode, _bfloat16_autocast])
def test_a_run_inside_the_callers_no_grad_or_inference_mode_restores(tmp_path: Path,
                                                                    mode) -> None:
    """A notebook's or a server's habit: with one fit in the caller's thread it failed with
    torch's 'element 0 of tensors does not require grad', and under inference_mode the
    tensors made before the fit (an inpainting's mask) could not be saved for the backward
    pass. Inside the caller's autocast a fit ran in bfloat16 (another image) and the Wiener
    filter failed on mixed dtypes. The same image as outside the block, and the caller's
    mode back afterwards."""
    noisy, _ = _noisy(tmp_path, 32)
    holes = np.zeros((32, 32), np.uint8)
    holes[8:16, 8:16] = 255
    Image.fromarray(holes).save(tmp_path / "mask.png")
    for task, options in (("denoise", {}), ("inpaint", {"mask": tmp_path / "mask.png"})):
        def restored() -> torch.Tensor:
            return dip.restore(task, noisy, write=False, device="cpu", iters=5,
                               overrides=TINY + ("perf.threads=1",), **options).picture.pixels
        outside = restored()
        with mode():
            inside = restored()
            assert torch.is_grad_enabled() == (mode is _bfloat16_autocast)
            product = torch.ones(2, 2) @ torch.ones(2, 2)  # the caller's autocast, back
            assert (product.dtype == torch.bfloat16) == (mode is _bfloat16_autocast)
        assert torch.equal(inside, outside), task


def test_super_resolutions_y_psnr_of_a_grey_picture_saved_as_rgb_is_the_rgb_files(
        tmp_path: Path) -> None:
    """A grey picture in RGB is fitted as grey, but its Y channel (BT.601: 16 + 219/255 v) is
    not the grey: the record's Y-PSNRs were 1.32 dB under an SR evaluation script's for the
    same files, and jumped by that much when one reference pixel was not grey."""
    grey = synthetic(64, 1)
    ref = save(grey.expand(-1, 3, -1, -1), tmp_path / "ref.png")
    small = image.resize(grey, (16, 16), "bicubic").expand(-1, 3, -1, -1)
    r = dip.restore("superres", save(small, tmp_path / "small.png"), factor=4, write=False,
                    device="cpu", iters=2, stop="fixed", tile="off", reference=ref,
                    overrides=TINY)
    read_ref = image.load_image(ref).pixels
    bicubic = image.resize(image.load_image(tmp_path / "small.png").pixels, (64, 64), "bicubic")
    assert read_ref.shape[1] == 3
    assert r.record["metrics"]["bicubic_psnr_y"] == round(metrics.psnr_y(bicubic, read_ref, 4), 4)
    expected = metrics.psnr_y(r.picture.pixels.expand(-1, 3, -1, -1), read_ref, 4)
    assert abs(r.record["metrics"]["psnr_y"] - expected) < 1e-3


def test_a_tile_the_pictures_size_is_the_whole_picture(tmp_path: Path) -> None:
    """--tile 64 of a 40 px picture said '1 tile of 64 px', took a tile's seed (another
    image than --tile off) and recorded no PSNR peak."""
    noisy, clean = _noisy(tmp_path, 40)
    one = _restore(noisy, iters=5, tile="64", reference=clean, sets=("perf.threads=1",))
    whole = _restore(noisy, iters=5, tile="off", reference=clean, sets=("perf.threads=1",))
    assert "tiles" not in one.record and "tiles" not in one.record.get("extra", {})
    assert torch.equal(one.picture.pixels, whole.picture.pixels)


def test_a_tiled_run_with_one_tile_to_fit_takes_a_fit_alones_threads(tmp_path: Path,
                                                                      monkeypatch) -> None:
    """OMP_NUM_THREADS=1 was ignored there: the four tiles were counted as a group's members
    (every usable core), though three had nothing to restore."""
    import dip
    from dip import threads

    monkeypatch.setattr(threads, "usable_cores", lambda: 4)
    monkeypatch.setattr(threads, "free_cores", lambda: 4)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    src = save(synthetic(32).repeat(1, 1, 1, 3), tmp_path / "wide.png")  # 32 x 96
    holes = np.zeros((32, 96), np.uint8)
    holes[10:14, 4:20] = 255
    Image.fromarray(holes).save(tmp_path / "mask.png")
    result = dip.restore("inpaint", src, mask=tmp_path / "mask.png", tile=32, iters=2,
                         write=False, device="cpu", overrides=TINY)
    assert result.record["tiles"]["solved"] == 3
    assert result.record["threads"] == {"fits_at_once": 1, "per_fit": 1}
