"""What averaging K restarts (``--restarts K``) buys and costs, with dip's CPU defaults.

Each run is ``dip.restore("denoise", crop, restarts=K)`` -- the defaults otherwise (fast preset,
automatic stop per restart, the noise floor), no clean image used -- in a fresh process, one
after another (nothing else running: the seconds are the figure), on 128x128 crops of the
paper's 9 sigma=25 colour images: the centre crops (``paper.py --quick``'s) and the top-left
corner crops (``noise_floor.py --at corner``'s, not looked at while choosing settings).

    python benchmarks/restarts.py --restarts 1,3 --at centre
    python benchmarks/restarts.py --table
    python benchmarks/restarts.py --restarts 1,2 --at centre,corner \
        --results benchmarks/results/restarts2_crop128.jsonl

Results: one JSON line per run in benchmarks/results/restarts_crop128.jsonl (a re-run skips
what is there).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from early_stopping import DENOISE  # noqa: E402
from paper import commit_id  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "restarts_crop128.jsonl"


def run_one(job: dict) -> dict:
    """One run in this process (the ``one`` command)."""
    import tempfile
    import time

    from noise_floor import DATA, crop

    from dip import image, metrics, run

    base = DATA / "Denoising" / "Color" / "25"
    clean = crop(image.load_image(base / f"{job['image']}_GT.png").pixels, 128, job["at"])
    noisy = crop(image.load_image(base / f"{job['image']}_noisy.png").pixels, 128, job["at"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.png"
        image.save_image(image.Picture(noisy), path)
        started = time.perf_counter()
        r = run.restore("denoise", path, write=False, device="cpu",
                        restarts=job["restarts"], overrides=tuple(job.get("set", ())))
        seconds = time.perf_counter() - started
    fits = [m for m in r.members if hasattr(m, "image")]
    return {**job, "psnr": round(metrics.psnr(r.picture.pixels, clean), 4),
            "members_psnr": [round(metrics.psnr(m.image, clean), 4) for m in fits],
            "steps": [m.iterations for m in fits],
            "guard_restores": [len(m.history.get("restores", [])) for m in fits],
            "estimate_seconds": r.record["estimate"]["seconds"],
            "seconds": round(seconds, 2), "preset": r.record["preset"]}


def collect(args: argparse.Namespace, results: Path) -> None:
    done = set()
    if results.exists():
        done = {(r["image"], r["at"], r["restarts"], tuple(r.get("set", ())))
                for r in map(json.loads, results.read_text().splitlines())}
    sets = tuple(args.set)
    for at in args.at.split(","):
        for name in (args.images.split(",") if args.images else DENOISE):
            for k in (int(k) for k in args.restarts.split(",")):
                if (name, at, k, sets) in done:
                    continue
                job = {"image": name, "at": at, "restarts": k, "commit": commit_id()}
                if sets:
                    job["set"] = list(sets)
                out = subprocess.run([sys.executable, __file__, "one", json.dumps(job)],
                                     capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                results.parent.mkdir(parents=True, exist_ok=True)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{at:>6} {name:>8} K={k}: {row['psnr']:.2f} dB "
                      f"(members {row['members_psnr']}), {row['seconds']:.0f} s", flush=True)


def table(results: Path) -> None:
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    for at in ("centre", "corner"):
        for sets in sorted({tuple(r.get("set", ())) for r in rows if r["at"] == at}):
            mine = [r for r in rows if r["at"] == at and tuple(r.get("set", ())) == sets]
            ks = sorted({r["restarts"] for r in mine})
            names = [n for n in DENOISE if all(any(r["image"] == n and r["restarts"] == k
                                                   for r in mine) for k in ks)]
            if not names or 1 not in ks:
                continue
            by = {(r["image"], r["restarts"]): r for r in mine}
            print(f"\n{at} crops" + (f", {' '.join(sets)}" if sets else "") + f" ({len(names)})")
            print("| restarts | mean PSNR | gain over 1 | seconds/image | time vs 1 |")
            print("|---|---|---|---|---|")
            base = statistics.fmean(by[(n, 1)]["psnr"] for n in names)
            base_s = statistics.fmean(by[(n, 1)]["seconds"] for n in names)
            for k in ks:
                p = statistics.fmean(by[(n, k)]["psnr"] for n in names)
                s = statistics.fmean(by[(n, k)]["seconds"] for n in names)
                print(f"| {k} | {p:.2f} | {p - base:+.2f} | {s:.1f} | {s / base_s:.2f}x |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", default="collect", choices=("collect", "one"))
    parser.add_argument("job", nargs="?")
    parser.add_argument("--restarts", default="1,3")
    parser.add_argument("--at", default="centre")
    parser.add_argument("--images")
    parser.add_argument("--set", action="append", default=[], help="a config override")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="the JSON lines file (a run measured apart from the others' rows)")
    args = parser.parse_args(argv)
    if args.what == "one":
        print(json.dumps(run_one(json.loads(args.job))))
        return
    if not args.table:
        collect(args, args.results)
    table(args.results)


if __name__ == "__main__":
    main()
