"""A black-and-white photo saved in colour, not quite grey: denoised in colour or as its grey?

A noisy grey photo saved as RGB with a coloured mark or date stamp, a channel shifted or a
toning holds one noise in its three channels. ``dip`` now denoises such a picture as its
channels' mean and puts the noise-free rest back (:mod:`dip.tint`); before, it fitted the
three channels and filtered them as colour, taking the one noise for three independent ones
(a sepia toning's was read as nearly none, and the picture came back as it was). This script
adds Gaussian noise (seeded, 8-bit) to the grey versions of centre crops of the paper's 9
colour images, makes each change to the noisy and to the clean crop, and denoises each picture
with dip's defaults (``dip.restore("denoise", ...)``, no clean image used) three ways, one
after another in this process:

- ``colour``: as before (``dip.tasks.denoise.tint_of`` patched to find no tint);
- ``grey fit``: as now;
- ``grey twin``: the same noisy grey photo saved grey (what the best could be).

PSNR against the clean crop with the same change, over the whole picture. Nothing else may
run beside it (the seconds are figures too). About 40 minutes on 2 cores with the defaults.

    python benchmarks/nearly_grey.py
    python benchmarks/nearly_grey.py --images 3 --side 48 --sigma 25
    python benchmarks/nearly_grey.py --changes "toned sepia,an orange date stamp"
    python benchmarks/nearly_grey.py --lines   # colour photos are not on one line: seconds
    python benchmarks/nearly_grey.py --jpeg 90 --side 128 --images 3 \
        --changes "a 6 px red square,an orange date stamp"   # the noise of a marked JPEG
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from early_stopping import DATA  # noqa: E402

import dip  # noqa: E402
from dip import jpeg_noise  # noqa: E402
from dip.tasks import denoise  # noqa: E402


def bluer(grey: np.ndarray) -> np.ndarray:
    """Blue one level up (clipped at white)."""
    rgb = np.stack([grey] * 3, -1).astype(int)
    rgb[..., 2] += 1
    return np.clip(rgb, 0, 255).astype(np.uint8)


def red_square(grey: np.ndarray) -> np.ndarray:
    """A 6 px red square in the top-left corner (a mark, a date stamp's dot)."""
    rgb = np.stack([grey] * 3, -1).copy()
    rgb[:6, :6] = (200, 0, 0)
    return rgb


def toned(grey: np.ndarray) -> np.ndarray:
    """Toned dark blue to pale blue by a photo editor's colorize (red and green one slope)."""
    return np.asarray(ImageOps.colorize(Image.fromarray(grey), "#101020", "#F0F0FF"))


def sepia(grey: np.ndarray) -> np.ndarray:
    """Toned black to #FFE6C0 by a photo editor's colorize: three slopes, each channel
    rounded its own way."""
    return np.asarray(ImageOps.colorize(Image.fromarray(grey), "#000000", "#FFE6C0"))


def date_stamp(grey: np.ndarray) -> np.ndarray:
    """An anti-aliased orange date stamp in the bottom-left corner."""
    rgb = Image.fromarray(grey).convert("RGB")
    font = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    font = ImageFont.truetype(str(font), 14) if font.exists() else ImageFont.load_default()
    ImageDraw.Draw(rgb).text((2, grey.shape[0] - 18), "2024", fill=(255, 140, 0), font=font)
    return np.asarray(rgb)


def shifted(grey: np.ndarray) -> np.ndarray:
    """Red 10 levels up and blue 10 down, clipped at white and black."""
    rgb = np.stack([grey.astype(int) + 10, grey, grey.astype(int) - 10], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


CHANGES = {"blue + 1": bluer, "a 6 px red square": red_square, "toned blue": toned,
           "toned sepia": sepia, "an orange date stamp": date_stamp,
           "R + 10 / B - 10 (clipped)": shifted}


def crops(side: int, images: int) -> list[tuple[str, np.ndarray]]:
    """Centre crops of the paper's colour images, as grey, 8-bit."""
    out = []
    for path in sorted((DATA / "Denoising" / "Color" / "25").glob("*_GT.png"))[:images]:
        rgb = np.asarray(Image.open(path).convert("RGB"), float)
        h, w = rgb.shape[:2]
        top, left = h // 2 - side // 2, w // 2 - side // 2
        grey = rgb[top:top + side, left:left + side].mean(-1)
        out.append((path.stem.removesuffix("_GT"), np.round(grey).astype(np.uint8)))
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def denoised(path: Path, before: bool, jpeg: bool = False) -> tuple[np.ndarray, float]:
    """dip's defaults on ``path``; ``before``: fitted in colour, as before (with ``jpeg``:
    fitted as its grey, but its JPEG's noise read as three independent noises', as before
    :func:`dip.jpeg_noise.of_one_noise`)."""
    started = time.perf_counter()
    patch = (mock.patch.object(jpeg_noise, "of_one_noise", lambda sigma, gains: sigma) if jpeg
             else mock.patch.object(denoise, "tint_of", lambda pixels: None))
    with patch if before else contextlib.nullcontext():
        done = dip.restore("denoise", path, write=False, device="cpu")
    pixels = done.picture.pixels[0].permute(1, 2, 0).numpy()
    return np.round(pixels * 255).squeeze(), time.perf_counter() - started


def lines() -> None:
    """How many of a colour photo's colours lie on one line (:func:`dip.tint.on_line`), and
    whether it is taken for one noise: the 90 clean colour crops of noise_estimate.py (9
    images, centre and corner, 5 sizes) as they are and with noise of sigma 5 and 25."""
    import torch
    from noise_estimate import SIDES
    from noise_estimate import crops as colour_crops
    from noise_estimate import noisy as noisy_crop

    from dip.tint import on_line, tint_of
    print("| colour crops | crops | most on one line | taken for one noise |")
    print("|---|---|---|---|")
    for sigma in (0, 5, 25):
        shares, tinted = [], 0
        for side in SIDES:
            for i, x in enumerate(colour_crops(side, False)):
                g = torch.Generator().manual_seed(side * 100 + i)
                y = (x * 255).round() / 255 if sigma == 0 else noisy_crop(x, sigma, g)
                shares.append(on_line(y)[1])
                tinted += tint_of(y) is not None
        print(f"| sigma {sigma} | {len(shares)} | {max(shares):.3f} | {tinted} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--side", type=int, default=64)
    ap.add_argument("--sigma", type=float, default=25)
    ap.add_argument("--images", type=int, default=6, help="of the 9 (sorted by name)")
    ap.add_argument("--changes", default=",".join(CHANGES),
                    help=f"which, comma-separated, of: {', '.join(CHANGES)}")
    ap.add_argument("--lines", action="store_true",
                    help="only how near one line colour photos' colours lie (seconds)")
    ap.add_argument("--jpeg", type=int, metavar="QUALITY",
                    help="save each noisy picture as a JPEG of this quality (the twin too, as "
                         "RGB); before: its noise read as three independent noises'")
    args = ap.parse_args()
    if args.lines:
        return lines()
    changes = {name: CHANGES[name] for name in args.changes.split(",")}
    rng = np.random.default_rng(0)
    rows: dict[str, list[tuple[float, ...]]] = {name: [] for name in changes}
    with tempfile.TemporaryDirectory() as folder:
        for image_name, clean in crops(args.side, args.images):
            noise = rng.normal(0, args.sigma, clean.shape)
            noisy = np.clip(np.round(clean + noise), 0, 255).astype(np.uint8)
            suffix = ".jpg" if args.jpeg else ".png"
            saved = {"quality": args.jpeg} if args.jpeg else {}
            twin_path = Path(folder) / f"twin{suffix}"
            Image.fromarray(noisy, "L").convert("RGB" if args.jpeg else "L").save(twin_path,
                                                                                  **saved)
            twin, _ = denoised(twin_path, before=False)
            twin_psnr = psnr(twin, clean if not args.jpeg else np.stack([clean] * 3, -1))
            for name, change in changes.items():
                path = Path(folder) / f"marked{suffix}"
                Image.fromarray(change(noisy)).save(path, **saved)
                ref = change(clean)
                before, before_s = denoised(path, before=True, jpeg=bool(args.jpeg))
                now, now_s = denoised(path, before=False)
                as_read = np.asarray(Image.open(path).convert("RGB"))
                row = (psnr(as_read, ref), psnr(before, ref), psnr(now, ref), twin_psnr,
                       before_s, now_s)
                rows[name].append(row)
                print(f"{image_name:10s} {name:18s} " + " ".join(f"{v:6.2f}" for v in row),
                      flush=True)
    print(f"\n{args.images} crops of {args.side} px, sigma {args.sigma:g}"
          + (f", JPEG quality {args.jpeg}" if args.jpeg else "")
          + ", dip's defaults; mean PSNR (dB), seconds per picture\n")
    before = "read as 3 noises (before)" if args.jpeg else "colour (before)"
    print(f"| change | input | {before} | grey fit (now) | grey twin | s before | s now |")
    print("|---|---|---|---|---|---|---|")
    for name, got in rows.items():
        means = [statistics.mean(r[k] for r in got) for k in range(6)]
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in means[:4])
              + f" | {means[4]:.1f} | {means[5]:.1f} |")


if __name__ == "__main__":
    main()
