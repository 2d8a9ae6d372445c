"""Does the denoising stop rule's noise floor help, on crops it was not chosen on?

The automatic stop (ES-WMV) keeps the image at the minimum of the outputs' running variance.
On a textured picture that variance can dip while the network is still slowly taking the
picture in, and the rule then returns a blurred image. The noise floor (``stop.noise_floor``,
the discrepancy principle) lets a step count only once the estimate is as close to the noisy
input as the noise is. This script runs dip's CPU defaults (the fast preset) on 128×128 crops
of the paper's 9 σ=25 colour images twice, the floor off (0) and on (1.0, the default), the
same seed, and prints the PSNR of each.

``--at corner`` takes the top-left crops: not the centre crops of ``paper.py --quick``, where
the rule's settings were looked at, so the comparison is on unseen content.

    python benchmarks/noise_floor.py --at corner --workers 2 \\
        --json benchmarks/results/noise_floor_corner.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from early_stopping import DATA, DENOISE, centre_crop  # noqa: E402


def crop(t: torch.Tensor, size: int, at: str) -> torch.Tensor:
    return centre_crop(t, size) if at == "centre" else t[..., :size, :size]


def run_one(job: dict) -> dict:
    torch.set_num_threads(job["threads"])
    from dip import image, metrics, run

    base = DATA / "Denoising" / "Color" / "25"
    clean = crop(image.load_image(base / f"{job['image']}_GT.png").pixels, job["crop"], job["at"])
    noisy = crop(image.load_image(base / f"{job['image']}_noisy.png").pixels, job["crop"],
                 job["at"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.png"
        image.save_image(image.Picture(noisy), path)
        started = time.perf_counter()
        result = run.restore("denoise", path, write=False, device="cpu", seed=0,
                                overrides=[f"stop.noise_floor={job['floor']}"])
    return {**job, "psnr": round(metrics.psnr(result.picture.pixels, clean), 4),
            "noisy_psnr": round(metrics.psnr(noisy, clean), 4),
            "steps": result.record["iterations"],
            "returned_step": result.record["returned_iteration"],
            "noise_sigma": result.record["noise_sigma"], "preset": result.record["preset"],
            "seconds": round(time.perf_counter() - started, 2)}


def table(rows: list[dict], floors: list[float]) -> str:
    by = {(r["image"], r["floor"]): r for r in rows}
    names = [n for n in DENOISE if all((n, f) in by for f in floors)]
    head = " | ".join(f"floor {f:g}: dB (returned step)" for f in floors)
    lines = [f"| image | noisy | {head} | change |", "|---" * (3 + len(floors)) + "|"]
    for n in names:
        cells = " | ".join(f"{by[n, f]['psnr']:.2f} ({by[n, f]['returned_step']})" for f in floors)
        change = by[n, floors[-1]]["psnr"] - by[n, floors[0]]["psnr"]
        lines.append(f"| {n} | {by[n, floors[0]]['noisy_psnr']:.2f} | {cells} | {change:+.2f} |")
    means = [sum(by[n, f]["psnr"] for n in names) / len(names) for f in floors]
    lines.append(f"| **mean** | | {' | '.join(f'**{m:.2f}**' for m in means)} | "
                 f"**{means[-1] - means[0]:+.2f}** |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--at", choices=("corner", "centre"), default="corner")
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--floors", default="0,1", help="stop.noise_floor values to compare")
    parser.add_argument("--images", help="only these images (comma-separated)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch threads per process "
                        "[default: cores / workers]")
    parser.add_argument("--json", type=Path, help="write every run here")
    args = parser.parse_args(argv)
    floors = [float(f) for f in args.floors.split(",")]
    names = args.images.split(",") if args.images else DENOISE
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    jobs = [{"image": n, "floor": f, "crop": args.crop, "at": args.at, "threads": threads}
            for n in names for f in floors]
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(run_one, jobs))
    print(f"denoise sigma=25, {args.crop}x{args.crop} {args.at} crops, dip's CPU defaults "
          f"(preset {rows[0]['preset']}), seed 0\n")
    print(table(rows, floors))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
