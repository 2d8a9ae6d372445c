"""Deblurring in tiles: does leaving a tile's edge bands out of its fit pay?
(benchmarks/README.md, "Deblurring in tiles").

    .venv/bin/python benchmarks/deblur_tiles.py     # about 20 min here, beside a test run

Within the kernel's reach of an edge a tile shares with another, the observation was
blurred with the neighbour's pixels, not the tile's reflection. Commit 4de4d9c left those
pixels out of each tile's fit (its operator and observation zeroed there, the loss the mean
over the rest); measured there with this protocol it did not pay (the table in
benchmarks/README.md), and dip went back to reflecting every tile's blur, the blend's ramps
weighing a tile down near its edges. The script measures the whole picture fitted at once
and in tiles, on two 96 px pictures: a drawing of shapes made here, and the centre of F16
(the paper's denoising image, grey), blurred by ``motion:15,0`` with no noise, tiles of 64
px, 800 steps of the CPU defaults, seeds 0-3, one thread, PSNR against the sharp picture.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

import dip

F16 = Path(__file__).resolve().parents[2] / "shared/data/dip-paper/data/denoising/F16_GT.png"
KERNEL, SIDE, STEPS = "motion:15,0", 96, 800


def shapes() -> np.ndarray:
    """Squares, a disc and thin stripes on a grey ground: edges in every direction."""
    y, x = np.mgrid[:SIDE, :SIDE]
    picture = np.full((SIDE, SIDE), 60.0)
    picture[10:40, 12:50] = 200
    picture[((y - 62) ** 2 + (x - 62) ** 2) < 20 ** 2] = 140
    picture[50:90, 8:30] = np.where((x[50:90, 8:30] // 3) % 2 == 0, 230, 30)
    return picture.astype(np.uint8)


def f16_centre() -> np.ndarray:
    grey = np.asarray(Image.open(F16).convert("L"))
    top, left = (grey.shape[0] - SIDE) // 2, (grey.shape[1] - SIDE) // 2
    return grey[top:top + SIDE, left:left + SIDE]


SEEDS = (0, 1, 2, 3)


def psnr(folder: Path, tile: str, seed: int) -> float:
    result = dip.restore("deblur", folder / "blurred.png", kernel=KERNEL, iters=STEPS,
                         stop="fixed", tile=tile, reference=folder / "sharp.png", write=False,
                         device="cpu", seed=seed, overrides=["perf.threads=1"])
    return result.record["metrics"]["psnr"]


def main() -> None:
    argparse.ArgumentParser(  # --help, and no options: it ran the benchmark
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    print("| picture | blurred | whole, seeds 0-3 | tiles of 64, seeds 0-3 | means |\n"
          "|---|---|---|---|---|")
    for name, pixels in (("shapes", shapes()), ("F16 centre", f16_centre())):
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            Image.fromarray(pixels).save(folder / "sharp.png")
            dip.corrupt(folder / "sharp.png", folder / "blurred.png", blur=KERNEL, seed=0)
            blurred = dip.restore("deblur", folder / "blurred.png", kernel=KERNEL, iters=1,
                                  stop="fixed", reference=folder / "sharp.png", write=False,
                                  device="cpu").record["metrics"]["input_psnr"]
            whole = [psnr(folder, "off", seed) for seed in SEEDS]
            tiled = [psnr(folder, "64", seed) for seed in SEEDS]
        print(f"| {name} | {blurred:.2f} | {' / '.join(f'{v:.2f}' for v in whole)} | "
              f"{' / '.join(f'{v:.2f}' for v in tiled)} | {np.mean(whole):.2f} / "
              f"{np.mean(tiled):.2f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
