"""Throughput of ``dip run`` with 1 and more worker processes, and with packs of jobs fitted
side by side in one process (``--pack``), measured in the same run.

    python benchmarks/batch.py                       # 8 images of 96x96, workers 1 and 2
    python benchmarks/batch.py --images 16 --size 128 --runs 1:1,2:1,1:2 --iters 200

``--runs W:P,...``: each run is ``dip run --workers W --pack P`` (the default, ``1:1,2:1``, is
one job at a time and two worker processes; ``1:2`` is one process fitting two jobs at a time
on one thread each, ``dip run``'s default on a 2-core CPU).

Each setting runs the same batch (the bundled sample image's noisy crops, a fixed number of
steps with the default CPU preset) into a fresh folder, through the real ``dip run``
command in a subprocess; the table gives wall seconds, images per minute and the gain over one
worker. Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_inputs(folder: Path, count: int, size: int) -> None:
    """``count`` different noisy crops of sample_images/landscape.png (sigma 25)."""
    import torch

    from dip import image, operators

    clean = image.load_image(ROOT / "sample_images" / "landscape.png").pixels
    clean = image.resize(clean, (2 * size, 2 * size), "lanczos")
    g = torch.Generator().manual_seed(0)
    for i in range(count):
        top, left = (i * 7) % size, (i * 13) % size
        crop = clean[..., top:top + size, left:left + size]
        noisy = operators.add_noise(crop, 25 / 255, g)
        image.save_image(image.Picture(noisy), folder / "photos" / f"crop{i:02d}.png")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--iters", type=int, default=150)
    parser.add_argument("--runs", default="1:1,2:1", help="WORKERS:PACK,... (see above)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    dip_cmd = [str(Path(sys.executable).with_name("dip"))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_inputs(folder, args.images, args.size)
        for run in args.runs.split(","):
            workers, pack = (int(v) for v in run.split(":"))
            out = f"out_w{workers}_p{pack}/"
            (folder / "batch.yaml").write_text(
                f"defaults: {{iters: {args.iters}, stop: fixed, device: cpu}}\n"
                f"jobs:\n  - {{task: denoise, input: photos/, output: {out}}}\n")
            started = time.perf_counter()
            subprocess.run(dip_cmd + ["run", str(folder / "batch.yaml"), "-q", "--workers",
                                      str(workers), "--pack", str(pack)],
                           check=True, stdout=subprocess.DEVNULL)
            seconds = time.perf_counter() - started
            summary = json.loads((folder / out / "summary.json").read_text())
            assert summary["counts"]["done"] == args.images, summary["counts"]
            rows.append({"workers": workers, "pack": pack, "seconds": round(seconds, 1),
                         "images_per_minute": round(60 * args.images / seconds, 2)})
    base = rows[0]["seconds"]
    print(f"# dip run: {args.images} images of {args.size}x{args.size}, {args.iters} steps each "
          f"(fast preset), CPU with {__import__('os').cpu_count()} cores\n")
    print("| workers | pack | wall seconds | images/minute | throughput vs the first |")
    print("|---|---|---|---|---|")
    for r in rows:
        r["gain"] = round(base / r["seconds"], 2)
        print(f"| {r['workers']} | {r['pack']} | {r['seconds']:.1f} | "
              f"{r['images_per_minute']:.2f} | {r['gain']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
