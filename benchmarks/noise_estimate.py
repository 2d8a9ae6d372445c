"""How well does dip read the noise level of a small picture (``dip.stopping.estimate_sigma``)?

The level read sets the denoising stop's floor, its step budget, SURE's sigma and the Wiener
filter's. 8x8 patches of a small colour picture are few for their 192 dimensions: the noise
eigenvalues spread and the tail's mean falls under sigma^2. This script adds Gaussian noise
(seeded, clipped, 8-bit) to the centre and top-left crops of the paper's 9 colour images
(and their grey versions) at several sizes and levels, and prints the level read over the
true one: the estimator as it is, and with 8x8 patches at every size (as it was before the
patch side shrank for small pictures). torch only; a few minutes on 2 cores.

    python benchmarks/noise_estimate.py
    python benchmarks/noise_estimate.py --clean   # clean pictures of few grey levels: seconds

``--clean``: what is read on clean pictures that are no photo (a lone dot, text, line art, a
screenshot, a star field, a dithered ramp), drawn here at 32, 64 and 128 px, grey and colour,
before the check of their exact ties (``dip.stopping._consistent``) and now; a noisy photo
crop on a clean white page, which must still read its noise; and noisy pictures whose clean
values lie past black or white, which the check reads too low.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))
from early_stopping import DATA  # noqa: E402

from dip import image, stopping  # noqa: E402

SIDES, LEVELS = (32, 48, 64, 96, 128), (5, 15, 25, 50)


def crops(side: int, grey: bool) -> list[torch.Tensor]:
    out = []
    for path in sorted((DATA / "Denoising" / "Color" / "25").glob("*_GT.png")):
        x = image.load_image(path).pixels
        x = x.mean(1, keepdim=True) if grey else x
        h, w = x.shape[-2:]
        for top, left in ((h // 2 - side // 2, w // 2 - side // 2), (0, 0)):
            out.append(x[..., top:top + side, left:left + side])
    return out


def noisy(clean: torch.Tensor, sigma: float, g: torch.Generator) -> torch.Tensor:
    y = (clean + sigma / 255 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return (y * 255).round() / 255


def unchecked(y: torch.Tensor) -> float:
    """The level read without the check of the picture's exact ties, in grey levels."""
    with mock.patch.object(stopping, "_consistent", lambda y, s: s):
        return stopping.estimate_sigma(y) * 255


def read(y: torch.Tensor, fixed_patch: bool) -> float:
    if not fixed_patch:
        return stopping.estimate_sigma(y) * 255
    with mock.patch.object(stopping, "PATCHES_PER_DIMENSION", 0):  # 0: 8x8 at every size
        return stopping.estimate_sigma(y) * 255


def table() -> None:
    print("| picture | side | " + " | ".join(f"σ = {s}: 8×8 / now" for s in LEVELS) + " |")
    print("|---|---|" + "---|" * len(LEVELS))
    for grey in (False, True):
        for side in SIDES:
            cells, clean = [], crops(side, grey)
            for sigma in LEVELS:
                g = torch.Generator().manual_seed(sigma)
                ys = [noisy(c, sigma, g) for c in clean]
                before = statistics.mean(read(y, True) / sigma for y in ys)
                now = statistics.mean(read(y, False) / sigma for y in ys)
                cells.append(f"{before:.2f} / **{now:.2f}**")
            print(f"| {'grey' if grey else 'colour'} | {side} | " + " | ".join(cells) + " |")


def _drawn(side: int, draw) -> torch.Tensor:
    """A white ``side``-px RGB picture with ``draw(ImageDraw, side)`` on it, in [0, 1]."""
    picture = Image.new("RGB", (side, side), "white")
    draw(ImageDraw.Draw(picture), side)
    return torch.from_numpy(np.asarray(picture) / 255.0).float().permute(2, 0, 1)[None]


def _dot(side: int) -> torch.Tensor:
    y = torch.zeros(1, 3, side, side)
    y[..., side // 2, side // 2] = 1
    return y


def _text(d, n: int, fill="black") -> None:
    for k, y in enumerate(range(2, n - 10, 11)):
        d.text((2, y), "Deep image prior"[k % 5:], fill=fill)


def _large_text(d, n: int) -> None:
    font = ImageFont.load_default(size=16)  # Pillow's scalable font, anti-aliased
    for k, y in enumerate(range(0, n - 12, 20)):
        d.text((1, y), "Deep image prior"[k % 5:], fill="black", font=font)


def _stars(side: int) -> torch.Tensor:
    """Single grey pixels on black, one in 80: lone unsaturated pixels among saturated ones."""
    g = torch.Generator().manual_seed(0)
    sky = torch.zeros(side * side)
    at = torch.randperm(side * side, generator=g)[:side * side // 80]
    sky[at] = 0.1 + 0.8 * torch.rand(at.numel(), generator=g)
    return sky.view(1, 1, side, side).expand(1, 3, side, side)


def _dithered(side: int) -> torch.Tensor:
    """A grey ramp Floyd-Steinberg dithered to black, white and two greys (Pillow's
    quantize): lone pixels at either bound, as noise leaves there."""
    levels = Image.new("P", (1, 1))
    levels.putpalette([v for grey in (0, 85, 170, 255) for v in (grey,) * 3])
    ramp = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    ramp = ramp.quantize(palette=levels, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")
    return torch.from_numpy(np.asarray(ramp) / 255.0).float().permute(2, 0, 1)[None]


def _ui(d, n: int) -> None:
    d.rectangle((0, 0, n, 10), fill=(40, 90, 200))
    d.text((2, 0), "File Edit", fill="white")
    d.rectangle((4, 16, n - 4, 28), outline=(160, 160, 160), fill=(245, 245, 245))
    d.rectangle((4, n - 14, 40, n - 4), fill=(0, 150, 80))


CLEAN = {
    "a white pixel on black": _dot,
    "text (anti-aliased)": lambda n: _drawn(n, _text),
    "text (anti-aliased, 16 px)": lambda n: _drawn(n, _large_text),
    "text (black and white)": lambda n: (_drawn(n, _text) > 0.5).float(),
    "line art": lambda n: _drawn(n, lambda d, n: (d.ellipse((n // 8, n // 8, 7 * n // 8,
                                                             7 * n // 8), outline="black"),
                                                  d.line((0, 0, n, n), fill="black"))),
    "a screenshot": lambda n: _drawn(n, _ui),
    "a star field": _stars,
    "a dithered ramp": _dithered,
}


def clean_table() -> None:
    print("| clean picture | 32 px grey / colour | 64 px | 128 px |  (grey levels: before the "
          "ties' check / now)")
    print("|---|---|---|---|")
    for name, make in CLEAN.items():
        cells = []
        for side in (32, 64, 128):
            rgb = make(side)
            pair = []
            for y in (rgb.mean(1, keepdim=True), rgb):
                y = (y * 255).round() / 255
                pair.append(f"{unchecked(y):.1f} / **{stopping.estimate_sigma(y) * 255:.1f}**")
            cells.append(", ".join(pair))
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\n| a noisy photo crop (64 px) on a white page | σ = 15 | σ = 50 |")
    print("|---|---|---|")
    photo = crops(64, False)[0]
    for page in (64, 128, 192, 256):
        cells = []
        for sigma in (15, 50):
            y = torch.ones(1, 3, page, page)
            y[..., :64, :64] = noisy(photo, sigma, torch.Generator().manual_seed(sigma))
            cells.append(f"{unchecked(y):.1f} / **{stopping.estimate_sigma(y) * 255:.1f}**")
        print(f"| on a {page} px page (before / now) | " + " | ".join(cells) + " |")


def _exposed(name: str, side: int, exposure: float) -> torch.Tensor:
    """A photo area-resized to ``side`` px, its values times ``exposure`` (past 1, unclipped)."""
    photo = image.load_image(DATA / "Denoising" / "Color" / "25" / f"{name}_GT.png").pixels
    return exposure * F.interpolate(photo, size=(side, side), mode="area")


#: clean pictures whose values lie past black or white, before their noise
PAST = {
    "a dark frame, 10 levels under black (64 px)": lambda: torch.full((1, 3, 64, 64), -10 / 255),
    "a wall, 10 levels over white (64 px)": lambda: torch.full((1, 3, 64, 64), 1 + 10 / 255),
    "F16 at 2x exposure (256 px)": lambda: _exposed("F16", 256, 2),
    "peppers at 3x exposure (512 px)": lambda: _exposed("peppers", 512, 3),
}


def past_table() -> None:
    print("\n| noisy, its clean values past black or white | "
          + " | ".join(f"σ = {s}" for s in LEVELS) + " |  (before the ties' check / now)")
    print("|---|" + "---|" * len(LEVELS))
    for name, make in PAST.items():
        clean, cells = make(), []
        for sigma in LEVELS:
            y = noisy(clean, sigma, torch.Generator().manual_seed(sigma))
            cells.append(f"{unchecked(y):.1f} / **{stopping.estimate_sigma(y) * 255:.1f}**")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clean", action="store_true",
                        help="the clean pictures' tables and the pictures past black or white, "
                             "instead of the noisy crops' table")
    args = parser.parse_args()
    if not os.environ.get("OMP_NUM_THREADS"):  # as the dip command: a pinned count holds
        torch.set_num_threads(2)
    if args.clean:
        clean_table()
        past_table()
    else:
        table()


if __name__ == "__main__":
    main()
