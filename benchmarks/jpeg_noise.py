"""Noise in a JPEG: what the patches' estimate and the JPEG's own coefficients read, and what
``dip denoise`` makes of a noisy photo saved as a JPEG (benchmarks/README.md, "Noise in a
JPEG").

    .venv/bin/python benchmarks/jpeg_noise.py            # the readings: seconds, numpy only
    .venv/bin/python benchmarks/jpeg_noise.py --denoise  # and dip's runs: about 30 min
    .venv/bin/python benchmarks/jpeg_noise.py --small    # small pictures' readings: seconds

The readings: the 9 colour images' 128 px centre crops (the crops :mod:`dip.jpeg_noise` was
designed on), white noise of sigma 0-50 per RGB channel, saved by Pillow at qualities 95-50;
per sigma and quality the range over the images of :func:`dip.stopping.estimate_sigma`, of
:func:`dip.jpeg_noise.noise_sigma` and of what the denoising task takes
(:func:`dip.tasks.denoise.jpeg_sigma`).

The runs: the top-left corner crops of four images (held out: the estimator never saw
them), noise of sigma 15 and 25, saved at quality 85; dip's defaults on the JPEG, and on the
same decoded pixels saved as a PNG (no tables: what dip did before it read JPEGs' noise),
PSNR against the clean crop; a clean JPEG's reading, to show where nothing changes.

``--small``: pictures under 128 px, whose few blocks :mod:`dip.jpeg_noise` reads from their
flattest quarter: each colour image's 256 px centre and corner crops shrunk (Lanczos) to 48,
64 and 96 px, white noise of sigma 0, 10 and 25, quality 90; how many of the 18 are read and
the range, now and with every block counted under 256 and none read under 64 (before), and
the most the tasks take of a reading now (:func:`dip.jpeg_noise.trusted`).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dip import image, jpeg_noise, metrics
from dip.config import resolve
from dip.stopping import estimate_sigma
from dip.tasks import jpeg_sigma

sys.path.insert(0, str(Path(__file__).resolve().parent))
from early_stopping import DATA as PAPER  # noqa: E402  (benchmarks/)

DATA = PAPER / "Denoising" / "Color" / "25"
NAMES = ["F16", "baboon", "hill", "kodim01", "kodim02", "kodim03", "kodim12", "lena",
         "peppers"]
HELD_OUT = ["kodim01", "kodim12", "lena", "peppers"]
SIGMAS, QUALITIES = (0, 5, 15, 25, 50), (95, 90, 75, 50)


def crop(name: str, where: str, side: int = 128) -> np.ndarray:
    rgb = np.asarray(Image.open(DATA / f"{name}_GT.png").convert("RGB"))
    h, w = rgb.shape[:2]
    top, left = ((h - side) // 2, (w - side) // 2) if where == "centre" else (0, 0)
    return rgb[top:top + side, left:left + side]


def noisy(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.round(clean + rng.normal(0, sigma, clean.shape)), 0, 255).astype(np.uint8)


def as_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=quality)
    return out.getvalue()


def readings() -> None:
    cfg = resolve("denoise")
    print("| sigma | quality | patches (estimate_sigma) | JPEG's coefficients | taken |")
    print("|---|---|---|---|---|")
    for sigma in SIGMAS:
        for quality in QUALITIES:
            rows = []
            for i, name in enumerate(NAMES):
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "in.jpg"
                    path.write_bytes(as_jpeg(noisy(crop(name, "centre"), sigma, i), quality))
                    picture = image.load_image(path)
                taken = jpeg_sigma(picture, cfg)
                rows.append((estimate_sigma(picture.pixels) * 255,
                             (picture.jpeg_noise or 0) * 255, (taken or 0) * 255))
            a = np.asarray(rows)
            print(f"| {sigma} | {quality} | " + " | ".join(
                f"{a[:, j].min():.1f}-{a[:, j].max():.1f}" for j in range(3)) + " |")


def small_readings() -> None:
    print("| side | sigma | read now (of 18) | range | the most trusted now | read before (of "
          "18) | range |")
    print("|---|---|---|---|---|---|---|")
    for side in (48, 64, 96):
        for sigma in (0, 10, 25):
            now, before = [], []
            for i, name in enumerate(NAMES):
                for where in ("centre", "corner"):
                    clean = np.asarray(Image.fromarray(crop(name, where, 256))
                                       .resize((side, side), Image.LANCZOS))
                    img = Image.open(io.BytesIO(as_jpeg(noisy(clean, sigma, i), 90)))
                    now.append(jpeg_noise.noise_sigma(img))
                    fewest, jpeg_noise.FEWEST_BLOCKS = (jpeg_noise.FEWEST_BLOCKS,
                                                        jpeg_noise.FLAT_BLOCKS)
                    before.append(jpeg_noise.noise_sigma(img))  # the rule before 2bb88ce
                    jpeg_noise.FEWEST_BLOCKS = fewest
            cells = []
            for values in (now, before):
                read = [v * 255 for v in values if v is not None]
                cells += [str(len(read)), f"{min(read):.1f}-{max(read):.1f}" if read else "-"]
                if values is now:  # what the tasks take of it (jpeg_noise.trusted)
                    cells.append(f"{max(jpeg_noise.trusted(v) for v in now) * 255:.1f}")
            print(f"| {side} | {sigma} | " + " | ".join(cells) + " |")


def _run(args: tuple[Path, Path, Path]) -> tuple[float, float]:
    """PSNR and the fit's seconds (its record's) of dip's defaults on one input."""
    source, out, clean = args
    if not Path(f"{out}.json").is_file():  # a --keep folder's runs are not run again
        subprocess.run([str(Path(sys.executable).with_name("dip")), "denoise", str(source),
                        "-o", str(out), "--overwrite", "-q", "--set", "perf.threads=1"],
                       check=True)
    got = image.load_image(out).pixels
    seconds = json.loads(Path(f"{out}.json").read_text())["seconds"]
    return metrics.psnr(got, image.load_image(clean).pixels), seconds


def _cbm3d(noisy: torch.Tensor, clean: torch.Tensor, sigma: float) -> str:
    """CBM3D's PSNR given the noise's sigma before the compression (as its user must give
    it), or "-" without the optional extra (``pip install -e '.[bench]'``)."""
    try:
        import bm3d
    except ImportError:
        return "-"
    rgb = noisy[0].permute(1, 2, 0).double().numpy()
    out = np.clip(bm3d.bm3d_rgb(rgb, sigma / 255), 0, 1)
    return f"{metrics.psnr(torch.from_numpy(out).permute(2, 0, 1)[None].float(), clean):.2f}"


def denoise(folder: Path, workers: int) -> None:
    jobs, keys = [], []
    for name in HELD_OUT:
        clean = crop(name, "corner")
        Image.fromarray(clean).save(folder / f"{name}_clean.png")
        for sigma in (15, 25):
            stem = folder / f"{name}_s{sigma}"
            jpeg = Path(f"{stem}.jpg")
            if not jpeg.is_file():  # as a --keep folder's runs had it
                jpeg.write_bytes(as_jpeg(noisy(clean, sigma, sigma), 85))
                Image.open(jpeg).save(f"{stem}_decoded.png")  # the same pixels, no tables
            for kind, source in (("jpeg", jpeg), ("png", Path(f"{stem}_decoded.png"))):
                jobs.append((source, Path(f"{stem}_{kind}_out.png"),
                             folder / f"{name}_clean.png"))
                keys.append((name, sigma, kind))
    with ThreadPoolExecutor(workers) as pool:
        scores = list(pool.map(_run, jobs))
    table = {}
    for (name, sigma, kind), score in zip(keys, scores):
        table.setdefault((name, sigma), {})[kind] = score
    print("| image | sigma | input | noise read | dip on the PNG (as before) | dip on the JPEG "
          "| gain | seconds, JPEG / PNG | CBM3D, sigma given |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (name, sigma), row in table.items():
        picture = image.load_image(folder / f"{name}_s{sigma}.jpg")
        clean = image.load_image(folder / f"{name}_clean.png").pixels
        print(f"| {name} | {sigma} | {metrics.psnr(picture.pixels, clean):.2f} | "
              f"{(picture.jpeg_noise or 0) * 255:.1f} | {row['png'][0]:.2f} | "
              f"{row['jpeg'][0]:.2f} | {row['jpeg'][0] - row['png'][0]:+.2f} | "
              f"{row['jpeg'][1] / row['png'][1]:.2f} | {_cbm3d(picture.pixels, clean, sigma)} |")
    gains = [row["jpeg"][0] - row["png"][0] for row in table.values()]
    print(f"\nmean gain {np.mean(gains):+.2f} dB ({min(gains):+.2f} to {max(gains):+.2f})")
    print(json.dumps({f"{k[0]} s{k[1]}": v for k, v in table.items()}))
    for name in HELD_OUT:  # a clean JPEG: is its noise taken?
        path = folder / f"{name}_q85.jpg"
        path.write_bytes(as_jpeg(crop(name, "corner"), 85))
        picture = image.load_image(path)
        taken = jpeg_sigma(picture, resolve("denoise"))
        print(f"clean {name} corner, quality 85: the coefficients read "
              f"{(picture.jpeg_noise or 0) * 255:.1f}, taken {(taken or 0) * 255:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--denoise", action="store_true", help="also run dip (about 30 min)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the runs' files here")
    parser.add_argument("--small", action="store_true",
                        help="the readings of pictures under 128 px instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"estimator: {jpeg_noise.__name__}, trusted from {jpeg_noise.TRUSTED:g}, "
          f"doubted under {jpeg_noise.DOUBTED:g}\n")
    if args.small:
        small_readings()
        return
    readings()
    if args.denoise:
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            denoise(args.keep, args.workers)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                denoise(Path(tmp), args.workers)


if __name__ == "__main__":
    main()
