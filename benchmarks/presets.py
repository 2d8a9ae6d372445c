"""The `fast` preset against the paper's settings on 128×128 centre crops of the paper's images.

    python benchmarks/presets.py prepare                 # crops into benchmarks/crops/
    python benchmarks/presets.py run --presets paper,fast --device cpu --workers 2
    python benchmarks/presets.py table                   # reads presets_{cpu,gpu}.jsonl

Sets (from ../shared/data/dip-paper, see its MANIFEST.md): the 9 colour images of the σ=25
denoising table (the given noisy files, cropped), the 11 grey images of the 50%-missing-pixels
inpainting table (mask drawn with seed 0 on the crop), and Set5 ×4 (the 128×128 crop is the
ground truth; its input is the crop shrunk 4 times with Lanczos, as `dip corrupt`).

`paper` runs the paper's whole budget (`--stop fixed`) with the clean image as reference: its
peak PSNR is the best the paper's settings reach at any step. Every other preset runs as a user
runs it: automatic stop, no reference used to choose the output, and its PSNR is that of the
image it returns. Each run appends one JSON line to the results file (a re-run skips what is
there), so a long run can be stopped and resumed, and runs from another machine (the GPU) can
be merged by concatenating files.

`--set KEY=VALUE` (repeatable) and `--variant NAME:KEY=VALUE;KEY=VALUE` try other settings.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from early_stopping import DENOISE, INPAINT, SET5, make_case  # noqa: E402  (benchmarks/)

CROPS = ROOT / "benchmarks" / "crops"
#: where a run appends on each kind of device, and the files the table reads by default
RESULTS = {kind: ROOT / "benchmarks" / "results" / f"presets_{kind}.jsonl"
           for kind in ("cpu", "gpu")}
SIZE = 128
IMAGES = {"denoise": DENOISE, "inpaint": INPAINT, "superres": SET5}


def prepare(crops: Path) -> None:
    """Write each image's cropped input, reference (and mask) into ``crops/TASK_NAME/``."""
    for task, names in IMAGES.items():
        for name in names:
            folder = crops / f"{task}_{name}"
            folder.mkdir(parents=True, exist_ok=True)
            make_case(task, name, SIZE, folder, mask_seed=0)
    print(f"wrote {len(list(crops.glob('*/*.png')))} files into {crops}")


def jobs(presets: list[str], crops: Path, tasks: list[str]) -> list[dict]:
    out = []
    for preset in presets:
        for task in (t for t in IMAGES if t in tasks):
            for name in IMAGES[task]:
                folder = crops / f"{task}_{name}"
                job = {"preset": preset, "task": task, "image": name,
                       "input": str(folder / "input.png"),
                       "reference": str(folder / "reference.png")}
                if task == "inpaint":
                    job["mask"] = str(folder / "mask.png")
                out.append(job)
    return out


def _run(job: dict) -> dict:
    import torch

    import dip

    torch.set_num_threads(job.pop("threads"))
    variant = job.pop("overrides")
    preset = job["preset"] if job["preset"] in ("paper", "fast") else "fast"
    overrides = [f"preset={preset}"] + variant
    stop = "fixed" if job["preset"] == "paper" else None  # None: the preset's (or --set's)
    kwargs = {"mask": job["mask"]} if "mask" in job else {}
    if job["task"] == "superres":
        kwargs["factor"] = 4
    started = time.perf_counter()
    # On CUDA a failed run is tried once more without the graph; a run that fails anyway is a
    # row, not the end of the benchmark.
    retries = [["perf.graphs=off"]] if job["device"].startswith("cuda") else []
    for extra in [[]] + retries:
        try:
            r = dip.restore(job["task"], job["input"], reference=job["reference"],
                            write=False, overrides=overrides + extra, stop=stop,
                            device=job["device"], **kwargs)
            overrides += extra
            break
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            job["graph_error" if extra == [] and retries else "error"] = error
    else:
        return job
    m = r.record["metrics"]
    psnr_key = "psnr_y" if job["task"] == "superres" else "psnr"
    return {**job, "seconds": round(time.perf_counter() - started, 2),
            "device_name": r.record["device"], "perf": r.record["perf"],
            "iterations": r.record["iterations"],
            "returned_iteration": r.record["returned_iteration"],
            "psnr": m["psnr"], "psnr_y": m.get("psnr_y"), "score": m[psnr_key],
            "peak": m["peak_psnr"] if job["task"] != "superres" else None,
            "peak_iteration": m["peak_iteration"], "overrides": overrides,
            "history_psnr": r.record["history"].get("psnr"),
            "history_step": r.record["history"].get("step")}


def run(args: argparse.Namespace) -> None:
    variants = {"paper": [], "fast": list(args.set)}
    for spec in args.variant:
        name, _, body = spec.partition(":")
        variants[name] = [kv for kv in body.split(";") if kv]
    if args.pairs:  # PRESET:TASK pairs, in this order
        todo = []
        for pair in args.pairs.split(","):
            preset, _, task = pair.partition(":")
            todo += jobs([preset], args.crops, [task])
    else:
        todo = jobs(args.presets.split(","), args.crops, args.tasks.split(","))
    if args.images:
        todo = [j for j in todo if j["image"] in args.images.split(",")]
    done = set()
    if args.results.exists():
        for line in args.results.read_text().splitlines():
            row = json.loads(line)
            if "error" not in row:
                done.add((row["preset"], row["task"], row["image"]))
    todo = [j for j in todo if (j["preset"], j["task"], j["image"]) not in done]
    for j in todo:
        j.update(device=args.device, threads=args.threads, overrides=variants[j["preset"]])
    print(f"{len(todo)} runs to do, {len(done)} already in {args.results}", flush=True)
    append_runs(_run, todo, args.results, args.workers, lambda row: (
        f"{row['preset']:>10} {row['task']:>8} {row['image']:>12}: "
        + (row["error"] if "error" in row else
           f"{row['score']:.2f} dB, {row['iterations']} steps, {row['seconds']:.0f} s")))


def append_runs(fn, todo: list[dict], results: Path, workers: int, describe,
                **pool_options) -> None:
    """Run ``fn`` on each job in ``workers`` fresh processes, appending each returned row to
    the JSON-lines ``results`` as it comes (so a stopped run resumes) and printing
    ``describe(row)``."""
    results.parent.mkdir(parents=True, exist_ok=True)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers, **pool_options) as pool, results.open("a") as out:
        for row in pool.imap_unordered(fn, todo):
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(describe(row), file=sys.stderr, flush=True)


def table(args: argparse.Namespace) -> None:
    missing = [str(path) for path in args.results if not path.exists()]
    if missing:
        sys.exit(f"no results file {', '.join(missing)}: run `presets.py run` first")
    rows = [json.loads(line) for path in args.results for line in path.read_text().splitlines()]
    rows = [r for r in rows if "error" not in r]
    step_s = {k: float(v) for k, v in (kv.split("=") for kv in args.cpu_step_seconds)}
    presets = sorted({r["preset"] for r in rows}, key=lambda p: (p != "paper", p))
    print("| task | preset | device | PSNR (dB) | paper peak (dB) | gap (dB) | steps | "
          "seconds/image | time vs paper |")
    print("|---|---|---|---|---|---|---|---|---|")
    for task, metric in (("denoise", "PSNR"), ("inpaint", "PSNR"), ("superres", "Y-PSNR")):
        paper = {r["image"]: r for r in rows if r["task"] == task and r["preset"] == "paper"}
        for preset in presets:
            mine = {r["image"]: r for r in rows if r["task"] == task and r["preset"] == preset}
            if not mine:
                continue
            names = sorted(set(mine) & set(paper)) if preset != "paper" else sorted(mine)
            if not names:
                continue
            # the paper's best moment: its peak (superres: the Y-PSNR of its final output;
            # the run records the RGB peak only)
            ref = [paper[n]["peak"] if paper[n]["peak"] is not None else paper[n]["score"]
                   for n in names]
            score = ([paper[n]["peak"] or paper[n]["score"] for n in names] if preset == "paper"
                     else [mine[n]["score"] for n in names])
            steps = statistics.fmean(mine[n]["iterations"] for n in names)
            devices = {mine[n]["device_name"] for n in names}
            secs = statistics.fmean(mine[n]["seconds"] for n in names)
            cpu_secs = secs
            if "cpu" not in devices and f"{preset}.{task}" in step_s:
                cpu_secs = steps * step_s[f"{preset}.{task}"]
            paper_secs = (statistics.fmean(paper[n]["iterations"] for n in names)
                          * step_s.get(f"paper.{task}", float("nan")))
            print(f"| {task} ({len(names)}) | {preset} | {','.join(sorted(devices))} | "
                  f"{statistics.fmean(score):.2f} | {statistics.fmean(ref):.2f} | "
                  f"{statistics.fmean(score) - statistics.fmean(ref):+.2f} | {steps:.0f} | "
                  f"{cpu_secs:.0f} (CPU) | {cpu_secs / paper_secs:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("--crops", type=Path, default=CROPS)
    p = sub.add_parser("run")
    p.add_argument("--presets", default="paper,fast")
    p.add_argument("--tasks", default="denoise,inpaint,superres")
    p.add_argument("--pairs", help="PRESET:TASK,... to run, in this order (instead of "
                                   "--presets x --tasks)")
    p.add_argument("--images", help="only these images (comma-separated names)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per worker [default: cores / workers]")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for the fast preset")
    p.add_argument("--variant", action="append", default=[], metavar="NAME:K=V;K=V",
                   help="another preset to try: the fast preset with these overrides")
    p.add_argument("--crops", type=Path, default=CROPS)
    p.add_argument("--results", type=Path,
                   help="where to append [default: benchmarks/results/presets_cpu.jsonl, "
                        "presets_gpu.jsonl for --device cuda]")
    p = sub.add_parser("table")
    p.add_argument("--results", type=Path, nargs="+", default=list(RESULTS.values()),
                   help="the runs' files, read together [default: benchmarks/results/"
                        "presets_cpu.jsonl and presets_gpu.jsonl]")
    p.add_argument("--cpu-step-seconds", nargs="*", default=[], metavar="PRESET.TASK=S",
                   help="measured CPU seconds per step, to put GPU runs in CPU time")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.crops)
    elif args.command == "run":
        if not args.threads:
            args.threads = max(1, (os.cpu_count() or 1) // args.workers)
        if args.results is None:
            args.results = RESULTS["cpu" if args.device == "cpu" else "gpu"]
        run(args)
    else:
        table(args)


if __name__ == "__main__":
    main()
