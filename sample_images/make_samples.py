"""Make the bundled sample images. Everything here is drawn by this script (no third-party
images): a small landscape with smooth sky, sharp edges and fine texture — the mix that shows
what a restoration keeps and what it loses.

    python sample_images/make_samples.py      # rewrites the files below, bit for bit

Writes, next to this file:
    landscape.png            128x128 RGB, the clean picture
    landscape_noisy.png      the same with Gaussian noise, sigma = 25 (0-255 units), seed 0
    landscape_holes.png      the same with 50% of pixels removed, seed 0
    landscape_holes_mask.png the holes (white = missing), for `dip inpaint --mask`
    landscape_small.png      32x32, shrunk 4x with Lanczos, for `dip superres --factor 4`
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from dip import image, operators

HERE = Path(__file__).resolve().parent
SIZE = 128
SUPERSAMPLE = 4  # draw large, shrink with Lanczos: anti-aliased edges like a real photo


def draw_landscape(rng: np.random.Generator) -> Image.Image:
    s = SIZE * SUPERSAMPLE
    y, x = np.mgrid[0:s, 0:s] / s

    # Sky: vertical gradient, soft clouds from blurred noise, a sun with a halo.
    sky = np.stack([0.35 + 0.45 * y, 0.55 + 0.35 * y, 0.95 - 0.1 * y], -1)
    clouds = Image.fromarray((rng.random((s // 16, s // 16)) * 255).astype(np.uint8))
    clouds = np.asarray(clouds.resize((s, s), Image.Resampling.BICUBIC)
                        .filter(ImageFilter.GaussianBlur(s / 40)), dtype=np.float64) / 255
    sky = sky + 0.35 * np.clip(clouds - 0.45, 0, 1)[..., None] * (1 - y[..., None])
    sun = np.exp(-(((x - 0.75) ** 2 + (y - 0.2) ** 2) / 0.004))
    sky = sky + np.stack([1.0, 0.8, 0.4], -1) * sun[..., None] * 0.8
    canvas = np.clip(sky, 0, 1)

    def ridge(base: float, amp: float, seed_freqs: int) -> np.ndarray:
        xs = np.linspace(0, 1, s)
        h = np.full(s, base)
        for k in range(1, seed_freqs + 1):
            h += amp / k * np.sin(2 * np.pi * (k * xs + rng.random()))
        return h

    # Two mountain ranges: the far one bluish, the near one green with striped slopes.
    for base, amp, colour, stripes in ((0.45, 0.08, (0.45, 0.5, 0.65), 0.0),
                                       (0.6, 0.06, (0.2, 0.45, 0.2), 0.08)):
        top = ridge(base, amp, 6)
        inside = y > top[None, :]
        shade = 1 - 0.5 * (y - top[None, :]).clip(0, 1)
        texture = 1 + stripes * np.sin(2 * np.pi * 40 * (x + 0.3 * y))
        layer = np.stack([c * shade * texture for c in colour], -1)
        canvas = np.where(inside[..., None], layer, canvas)

    # Meadow: fine grass texture (high-frequency detail a denoiser must keep).
    meadow = y > 0.78
    grass = rng.random((s, s)) * 0.25
    meadow_colour = np.stack([0.35 + grass, 0.6 + grass, 0.15 + 0.3 * grass], -1)
    canvas = np.where(meadow[..., None], meadow_colour * (0.8 + 0.3 * y[..., None]), canvas)

    img = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    # A house: straight edges, a red roof, windows.
    u = s / SIZE
    draw.rectangle([22 * u, 86 * u, 48 * u, 106 * u], fill=(225, 215, 190))
    draw.polygon([(19 * u, 87 * u), (35 * u, 74 * u), (51 * u, 87 * u)], fill=(170, 40, 35))
    for wx in (26, 39):
        draw.rectangle([wx * u, 91 * u, (wx + 5) * u, 96 * u], fill=(60, 80, 120))
    draw.rectangle([33 * u, 97 * u, 38 * u, 106 * u], fill=(100, 60, 30))
    # Flowers: small saturated dots.
    for _ in range(40):
        fx, fy = rng.uniform(0, s), rng.uniform(0.82 * s, s)
        r = rng.uniform(0.6, 1.2) * u
        palette = [(240, 220, 60), (230, 80, 120), (250, 250, 250)]
        colour = tuple(int(c) for c in rng.choice(palette))
        draw.ellipse([fx - r, fy - r, fx + r, fy + r], fill=colour)
    return img.resize((SIZE, SIZE), Image.Resampling.LANCZOS)


def main() -> None:
    clean = draw_landscape(np.random.default_rng(2018))
    clean.save(HERE / "landscape.png", optimize=True)
    picture = image.load_image(HERE / "landscape.png")

    noisy = operators.add_noise(picture.pixels, 25, torch.Generator().manual_seed(0))
    image.save_image(picture.with_pixels(noisy), HERE / "landscape_noisy.png")

    holes, known = operators.drop_pixels(picture.pixels, 0.5, torch.Generator().manual_seed(0))
    image.save_image(picture.with_pixels(holes), HERE / "landscape_holes.png")
    image.save_image(image.Picture(1 - known), HERE / "landscape_holes_mask.png")

    small = image.resize(picture.pixels, (SIZE // 4, SIZE // 4), "lanczos")
    image.save_image(picture.with_pixels(small), HERE / "landscape_small.png")


if __name__ == "__main__":
    main()
