"""Damage painted over in a colour (--mask-color): found exactly in a PNG, and mostly (thin
strokes, chroma subsampling) in a JPEG; filled through the real command and a batch job."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image, ImageDraw

from dip.cli.main import cli
from dip.errors import InputError
from dip.tasks.inpaint import painted_holes, parse_colour

from conftest import save, synthetic

MAGENTA = (255, 0, 255)
#: the strokes' colour: pure green is 94 units from every colour of the synthetic picture
#: (magenta only 75, within the default tolerance of its pinks)
GREEN = (0, 255, 0)
SMALL = ["--set", "net.channels_down=[16,16,16]", "--set", "net.channels_up=[16,16,16]",
         "--set", "net.channels_skip=[4,4,4]", "--device", "cpu", "-q"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def painted(size: int = 64) -> tuple[Image.Image, np.ndarray]:
    """The synthetic picture with strokes of 2, 3 and 6 pixels painted in green."""
    clean = synthetic(size)
    img = Image.fromarray((clean[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(img)
    s = size / 128
    draw.line([(10 * s, 20 * s), (110 * s, 90 * s)], fill=GREEN, width=3)
    draw.line([(20 * s, 100 * s), (100 * s, 110 * s)], fill=GREEN, width=2)
    draw.line([(60 * s, 10 * s), (70 * s, 120 * s)], fill=GREEN, width=6)
    return img, np.all(np.asarray(img) == GREEN, axis=-1)


def _tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, np.float32) / 255).permute(2, 0, 1)[None]


@pytest.mark.parametrize("text", ["#ff00ff", "ff00ff", "255,0,255", "magenta", " #FF00FF "])
def test_colours_are_read_the_ways_people_write_them(text: str) -> None:
    assert parse_colour(text) == MAGENTA


@pytest.mark.parametrize("text", ["#ff00f", "300,0,0", "nocolour", "1,2"])
def test_a_colour_that_cannot_be_read_says_how_to_write_it(text: str) -> None:
    with pytest.raises(InputError, match="#ff00ff"):
        parse_colour(text)


def test_exact_paint_in_a_png_is_found_and_grown_by_one_pixel() -> None:
    img, truth = painted()
    holes = painted_holes(_tensor(img), GREEN, 80)[0, 0].numpy()
    assert holes[truth].all()
    grown = torch.nn.functional.max_pool2d(torch.from_numpy(truth).float()[None, None], 3, 1,
                                           1)[0, 0].numpy() > 0
    assert not holes[~grown].any()  # nothing beyond the strokes and their 1-pixel rim


def test_a_grey_image_holds_grey_paint_but_never_colour() -> None:
    # grey pixels were matched by brightness alone: any mid-grey was "green"
    ramp = torch.linspace(0, 0.9, 32).expand(1, 1, 32, 32).clone()
    assert not painted_holes(ramp, GREEN, 10).any()
    assert not painted_holes(ramp, MAGENTA, 80).any()
    assert painted_holes(ramp, GREEN, 10 ** 20).all()  # it overflowed converting to torch
    ramp[..., 10:14, 10:20] = 1.0
    holes = painted_holes(ramp, (255, 255, 255), 3)
    assert holes[..., 10:14, 10:20].all() and not holes[..., :5, :].any()


@pytest.mark.parametrize("quality", [90, 75])
def test_jpeg_compressed_paint_is_found_colours_near_not_equal_to_the_key(quality: int) -> None:
    img, truth = painted(128)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    decoded = Image.open(buf)
    # near the key, not equal to it: compression moved most painted pixels off the colour
    assert np.all(np.asarray(decoded) == GREEN, axis=-1)[truth].mean() < 0.5
    holes = painted_holes(_tensor(decoded), GREEN, 80)[0, 0].numpy()
    assert holes[truth].mean() > 0.9
    rim = torch.nn.functional.max_pool2d(torch.from_numpy(truth).float()[None, None], 5, 1,
                                         2)[0, 0].numpy() > 0
    assert holes[~rim].mean() < 0.01  # nothing far from the strokes


def test_inpaint_fills_what_was_painted(tmp_path: Path) -> None:
    img, truth = painted()
    img.save(tmp_path / "painted.jpg", quality=90)
    ref = save(synthetic(64), tmp_path / "clean.png")
    out = tmp_path / "out.png"
    result = invoke("inpaint", tmp_path / "painted.jpg", "--mask-color", "#00ff00", "-o", out,
                    "--iters", 300, "--stop", "fixed", "--reference", ref, *SMALL)
    assert result.exit_code == 0, result.output
    record = json.loads(Path(f"{out}.json").read_text())
    assert (record["mask"], record["mask_color"], record["mask_tolerance"]) == (None, "#00ff00",
                                                                                80)
    filled = np.asarray(Image.open(out), np.float32)
    clean = np.asarray(Image.open(ref), np.float32)
    before = np.abs(np.asarray(Image.open(tmp_path / "painted.jpg"), np.float32) - clean)
    assert np.abs(filled - clean)[truth].mean() < 0.25 * before[truth].mean()


@pytest.mark.parametrize("args, words", [
    (["--mask", "MASK", "--mask-color", "#00ff00"], "exactly one of --mask"),
    ([], "exactly one of --mask"),
    (["--mask-color", "#00ff0"], "cannot read the colour"),
    (["--mask-color", "#0000ff", "--mask-tolerance", 5], "no pixel of the input is painted"),
    # read as the mask's grey threshold, it would be ignored: refused, not silently
    (["--mask", "MASK", "--mask-tolerance", 40], "--mask-tolerance applies only with "
                                                 "--mask-color"),
])
def test_mask_color_mistakes_are_one_line(tmp_path: Path, args: list, words: str) -> None:
    img, _ = painted(32)
    img.save(tmp_path / "p.png")
    Image.new("L", (32, 32)).save(tmp_path / "m.png")
    args = [tmp_path / "m.png" if a == "MASK" else a for a in args]
    result = invoke("inpaint", tmp_path / "p.png", *args, "-o", tmp_path / "o.png", *SMALL)
    assert result.exit_code == 2 and words in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.png").exists()


def test_a_batch_job_fills_painted_photos(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    for i in range(2):
        painted(32)[0].save(tmp_path / "photos" / f"p{i}.png")
    path = tmp_path / "batch.yaml"
    path.write_text("defaults: {iters: 3, device: cpu}\njobs:\n  - {task: inpaint, input: "
                    "photos/, mask_color: '#00ff00', mask_tolerance: 60, output: out/}\n")
    result = invoke("run", path, "-q")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "p1_inpaint.png.json").read_text())
    assert record["mask_color"] == "#00ff00" and record["mask_tolerance"] == 60


def test_white_paint_on_a_grey_photo_takes_the_paint_not_the_light_greys() -> None:
    from dip.tasks.inpaint import painted_holes

    grey = torch.linspace(0, 200 / 255, 64).repeat(8, 1)[None, None]  # levels 0 .. 200
    grey[..., 3, :] = 1.0  # a white stroke
    holes = painted_holes(grey, (255, 255, 255), 80)[0, 0]
    assert holes[3].all()
    # at half weight, every level from 95 up was paint (34 of 64 columns, and the growth); in
    # full, 175 up: 8 columns, and the growth's one
    assert int(holes[0].sum()) <= 9


def test_mask_keeps_with_a_paint_colour_is_refused(tmp_path: Path) -> None:
    from dip.errors import InputError
    from dip.tasks import get_task

    with pytest.raises(InputError, match="no meaning with"):
        get_task("inpaint").check({"mask_color": "green", "mask_keeps": True})


def test_a_default_tolerance_goes_to_the_painted_jobs_only(tmp_path: Path) -> None:
    from dip import batch

    painted(32)[0].save(tmp_path / "p.png")
    Image.new("L", (32, 32)).save(tmp_path / "m.png")
    path = tmp_path / "batch.yaml"
    path.write_text("defaults: {mask_tolerance: 40}\njobs:\n"
                    "  - {task: inpaint, input: p.png, mask: m.png, output: a.png}\n"
                    "  - {task: inpaint, input: p.png, mask_color: green, output: b.png}\n")
    masked, painted_job = batch.load_batch(path)
    assert "mask_tolerance" not in masked.request.task_args
    assert painted_job.request.task_args["mask_tolerance"] == 40
    # a job that asks for it beside a mask file is told, as the command line is
    path.write_text("jobs:\n  - {task: inpaint, input: p.png, mask: m.png, "
                    "mask_tolerance: 40}\n")
    with pytest.raises(batch.BatchError, match="'mask_tolerance' applies only with "
                                               "'mask_color'"):
        batch.load_batch(path)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_a_mask_painted_on_a_clear_layer_is_its_strokes(tmp_path: Path, mode: str) -> None:
    """White strokes on a transparent layer whose clear pixels are stored white (as some
    editors keep them): the hidden white counted, and nearly the whole photo was repainted
    (or, all clear pixels white, 'leaves no known pixel ... is it inverted?')."""
    from dip.image import load_mask

    planes = 4 if mode == "RGBA" else 2
    mask = np.full((12, 16, planes), 255, np.uint8)
    mask[..., -1] = 0  # clear everywhere ...
    mask[2:5, 3:7, -1] = 255  # ... but a white stroke
    Image.fromarray(mask, mode).save(tmp_path / "holes.png")
    known = load_mask(tmp_path / "holes.png", (12, 16))[0, 0]
    assert (known == 0).sum() == 12 and (known[2:5, 3:7] == 0).all()


@pytest.mark.parametrize("mode", ["P", "L", "RGB"])
def test_a_mask_whose_transparency_is_a_colour_is_seen_over_black_too(tmp_path: Path,
                                                                      mode: str) -> None:
    """A PNG's tRNS chunk (one colour, or palette entries, transparent: what pngquant and
    Pillow's quantize make of a clear layer) was dropped: the clear background, stored
    white, was read as holes (62 % of the picture refilled where the strokes were 180 px)."""
    from dip.image import load_mask

    grey = np.full((12, 16), 255, np.uint8)  # white, and clear ...
    grey[2:5, 3:7] = 254  # ... but a white stroke, opaque
    grey[:, 12:] = 0  # and a black band, opaque
    if mode == "P":
        img = Image.fromarray(grey, "L").convert("P")
        clear = img.getpixel((0, 0))
    elif mode == "L":
        img, clear = Image.fromarray(grey, "L"), 255
    else:
        img, clear = Image.fromarray(np.repeat(grey[..., None], 3, -1), "RGB"), (255, 255, 255)
    img.save(tmp_path / "holes.png", transparency=clear)
    known = load_mask(tmp_path / "holes.png", (12, 16))[0, 0]
    assert (known == 0).sum() == 12 and (known[2:5, 3:7] == 0).all()
