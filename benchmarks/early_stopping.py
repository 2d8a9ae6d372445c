"""How close does automatic stopping come to the best moment of each run?

For every image the script runs ``dip.restore`` (the real path, default settings) with the
automatic rule observing but never stopping, so the whole trajectory is seen once: the PSNR of
the returned estimate at every step (the oracle's peak), and what each candidate stop rule
would have done. The live rule with the default config gives the table's "returned" figures;
other settings (window W, patience P, which image to keep) are replayed from the recorded
variance curves without rerunning the network, so they can be compared on the same runs.

Data: ``../shared/data/dip-paper`` (see its MANIFEST.md):
  denoise   the 9 colour images, the given sigma=25 *_noisy.png inputs
  inpaint   the 11 grey Table-1 images, 50% of pixels dropped with a fixed seed per image
  superres  Set5 x4, low-resolution input made with Lanczos from the ground truth

On a CPU use centre crops (``--crop 64``; a crop is NOT the paper's protocol and the table
says so). Full size (``--crop 0``) needs a GPU.

    python benchmarks/early_stopping.py --crop 64 --workers 2 --tasks denoise --iters 2000 \\
        --out benchmarks/results/es_denoise_crop64.json
    python benchmarks/early_stopping.py --replay benchmarks/results/es_*_crop64.json

``--members K`` replays each member of a group alone instead: every image is restored as K
restarts fitted together in one group (``dip.fitting.fit_group``, the path of ``--restarts K``,
automatic stop per member), then each member is fitted again ALONE with its own seed; the table
says where each stopped in the group and alone, and whether its image is the same (the stop
of one member must not depend on the others beside it):

    python benchmarks/early_stopping.py --members 3 --limit 3 --set preset=fast \\
        --out benchmarks/results/es_members_crop64.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

# $DIP_PAPER_DATA: the same folder carried elsewhere (a lent GPU machine has no ../shared)
DATA = Path(os.environ.get("DIP_PAPER_DATA") or Path(__file__).resolve().parents[2] / "shared"
            / "data" / "dip-paper" / "project-page")
DENOISE = ["F16", "baboon", "hill", "kodim01", "kodim02", "kodim03", "kodim12", "lena",
           "peppers"]
INPAINT = ["barbara", "boat", "Cameraman256", "couple", "fingerprint", "hill", "house",
           "Lena512", "man", "montage", "peppers256"]
SET5 = ["baby", "bird", "butterfly", "head", "woman"]
WINDOWS = (50, 100, 200)
KEEPS = ("output", "average", "window")


def centre_crop(t: torch.Tensor, size: int) -> torch.Tensor:
    if size <= 0:
        return t
    h, w = t.shape[-2:]
    size_h, size_w = min(size, h), min(size, w)
    top, left = (h - size_h) // 2, (w - size_w) // 2
    return t[..., top:top + size_h, left:left + size_w]


def make_case(task: str, name: str, crop: int, folder: Path, mask_seed: int | None = None) -> dict:
    """Write the (cropped) input, mask and reference for one image; return restore's args.
    The inpainting mask's seed is ``mask_seed``, or else derived from the image's name."""
    from dip import image, operators

    if task == "denoise":
        base = DATA / "Denoising" / "Color" / "25"
        clean = centre_crop(image.load_image(base / f"{name}_GT.png").pixels, crop)
        noisy = centre_crop(image.load_image(base / f"{name}_noisy.png").pixels, crop)
        image.save_image(image.Picture(noisy), folder / "input.png")
        image.save_image(image.Picture(clean), folder / "reference.png")
        return {"task": task}
    if task == "inpaint":
        base = DATA / "Reconstruction" / "Gray" / "50p"
        clean = centre_crop(image.load_image(base / f"{name}_GT.png").pixels, crop)
        # A fixed seed per image (not per run order): the same mask every time.
        g = torch.Generator().manual_seed(
            zlib.crc32(name.encode()) if mask_seed is None else mask_seed)
        holes, known = operators.drop_pixels(clean, 0.5, g)
        image.save_image(image.Picture(holes), folder / "input.png")
        image.save_image(image.Picture(1 - known), folder / "mask.png")
        image.save_image(image.Picture(clean), folder / "reference.png")
        return {"task": task, "mask": str(folder / "mask.png")}
    base = DATA / "SR" / "Set5" / "x4"
    clean = centre_crop(image.load_image(base / f"{name}_GT.png").pixels, crop)
    h, w = operators.valid_superres_size(*clean.shape[-2:], 4)
    clean = clean[..., :h, :w]
    small = image.resize(clean, (h // 4, w // 4), "lanczos")
    image.save_image(image.Picture(small), folder / "input.png")
    image.save_image(image.Picture(clean), folder / "reference.png")
    return {"task": task, "factor": 4}


def run_one(job: tuple[str, str, int, int | None, str, list[str]]) -> dict:
    """Run one image with observers; return its trajectory and the live rule's decision."""
    task, name, crop, iters, device, overrides = job
    torch.set_num_threads(int(os.environ.get("DIP_BENCH_THREADS", "1")))
    import dip
    from dip import config, image, metrics
    from dip.stopping import VarianceStop, build_stop_rule

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        args = make_case(task, name, crop, folder)
        ref = image.load_image(folder / "reference.png").pixels
        cfg = config.resolve(task, overrides=overrides,
                             explicit={"optim.iters": iters, "factor": args.get("factor")})
        live = build_stop_rule(dataclasses.replace(cfg.stop, rule="auto"))
        live_fired: dict = {}
        observers = {w: VarianceStop(w, 10 ** 9, "window", tolerance=0.0) for w in WINDOWS}
        curves: dict[str, list] = {"psnr_average": [], "psnr_output": []}
        for w in WINDOWS:
            curves[f"var_{w}"], curves[f"psnr_window_{w}"] = [], []
        rule_seconds = 0.0

        ref_on: dict = {}  # the reference on the fit's device, moved once

        def observe(p) -> None:
            nonlocal rule_seconds
            if "t" not in ref_on and task == "denoise":
                # the live rule sees what the fit's own rule sees: the noisy input, for the
                # noise floor (the other tasks' rules have none)
                live.start(image.load_image(folder / "input.png").pixels.to(p.estimate.device))
            ref_dev = ref_on.setdefault("t", ref.to(p.estimate.device))
            curves["psnr_average"].append(metrics.psnr(p.estimate.clamp(0, 1), ref_dev))
            curves["psnr_output"].append(metrics.psnr(p.output.clamp(0, 1), ref_dev))
            if not live_fired:
                start = time.perf_counter()
                fired = live.update(p.step, p.output, p.estimate)
                if live.variance is not None:
                    float(live.variance)  # include the device sync in the rule's cost
                rule_seconds += time.perf_counter() - start
                if fired:
                    step, img = live.chosen
                    live_fired.update(stop=p.step, returned=step,
                                      psnr=metrics.psnr(img.clamp(0, 1), ref_dev))
            for w, rule in observers.items():
                rule.update(p.step, p.output, p.estimate)
                curves[f"var_{w}"].append(None if rule.variance is None
                                          else float(rule.variance))
                curves[f"psnr_window_{w}"].append(
                    None if rule.variance is None
                    else metrics.psnr(rule.mean.clamp(0, 1), ref_dev))

        started = time.perf_counter()
        # The rule observes (stop.rule=fixed keeps the fit going past its decision), so one run
        # shows both the rule's choice and everything after it.
        dip.restore(task, folder / "input.png", mask=args.get("mask"), factor=args.get("factor"),
                    overrides=[*overrides, "stop.rule=fixed"], iters=iters, device=device,
                    write=False, progress=observe)
        seconds = time.perf_counter() - started
        if not live_fired:  # the budget ran out first: the rule returns its best so far
            chosen = live.chosen
            live_fired.update(stop=None, returned=chosen[0] if chosen else None,
                              psnr=metrics.psnr(chosen[1].clamp(0, 1).cpu(), ref) if chosen
                              else curves["psnr_average"][-1])
    return {"task": task, "image": name, "size": list(ref.shape[-2:]), "iters": len(
        curves["psnr_average"]), "seconds": seconds, "rule_seconds": rule_seconds,
            "config": _stop_settings(cfg.stop), "live": live_fired, "curves": curves}


def members_one(job: tuple[str, str, int, int, int | None, list[str]]) -> dict:
    """One image as K members fitted together, then each member alone (same seed)."""
    task, name, crop, k, iters, overrides = job
    from dip import image, metrics, run
    from dip.fitting import fit_group
    from dip.request import RunRequest

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        args = make_case(task, name, crop, folder)
        ref = image.load_image(folder / "reference.png").pixels
        options = {key: args[key] for key in ("mask", "factor") if key in args}
        request = RunRequest(task=task, input=str(folder / "input.png"), write=False,
                             device="cpu", restarts=k, iters=iters,
                             overrides=tuple(overrides), task_args=options)
        the_plan = run.plan(request)
        loaded = run.load(the_plan)
        setup = run.build(the_plan, loaded)
        settings = run._settings(the_plan.cfg)
        started = time.perf_counter()
        group = fit_group([setup.member(i) for i in range(k)], settings, threads=min(2, k))
        group_seconds = time.perf_counter() - started
        started = time.perf_counter()
        alone = [fit_group([setup.member(i)], settings, threads=1)[0] for i in range(k)]
        alone_seconds = time.perf_counter() - started
    rows = [{"member": i, "group_stop": g.iterations, "alone_stop": a.iterations,
             "group_reason": g.stop_reason, "alone_reason": a.stop_reason,
             "same_image": bool(torch.equal(g.image, a.image)),
             "psnr": round(metrics.psnr(g.image.clamp(0, 1).cpu(), ref), 4)}
            for i, (g, a) in enumerate(zip(group, alone))]
    return {"task": task, "image": name, "k": k, "budget": the_plan.cfg.optim.iters,
            "preset": the_plan.cfg.preset, "members": rows,
            "group_seconds": round(group_seconds, 2), "alone_seconds": round(alone_seconds, 2)}


def members_table(runs: list[dict]) -> str:
    out = ["| task | image | member | stop in the group | stop alone | same image | PSNR |",
           "|---|---|---|---|---|---|---|"]
    same = total = 0
    for r in runs:
        for m in r["members"]:
            total += 1
            agree = m["group_stop"] == m["alone_stop"] and m["same_image"]
            same += agree
            out.append(f"| {r['task']} | {r['image']} | {m['member']} | {m['group_stop']} "
                       f"({m['group_reason']}) | {m['alone_stop']} ({m['alone_reason']}) | "
                       f"{'yes' if m['same_image'] else 'NO'} | {m['psnr']:.2f} |")
    group = sum(r["group_seconds"] for r in runs)
    alone = sum(r["alone_seconds"] for r in runs)
    out.append(f"\n{same} of {total} members stopped at the same step with the same image in "
               f"the group as alone; the groups took {group:.0f} s, the members one after "
               f"another alone {alone:.0f} s ({alone / group:.2f}x).")
    return "\n".join(out)


def members_main(args: argparse.Namespace, jobs: list) -> None:
    runs = []
    for task, name, crop, iters, _device, overrides in jobs:
        runs.append(members_one((task, name, crop, args.members, iters, overrides)))
        print(f"done {task} {name}", file=sys.stderr, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"crop": args.crop, "members": args.members,
                                        "torch": torch.__version__, "runs": runs}))
    print(members_table(runs))


# --- replay of other rule settings on the recorded curves -------------------------------------

def _stop_settings(stop) -> dict:
    """The rule's settings as recorded with a run (everything in ``stop`` but its name)."""
    return {k: v for k, v in dataclasses.asdict(stop).items() if k != "rule"}


def replay(variances: list, patience_fn, tolerance: float = 0.0,
           check_every: int = 10) -> tuple[int | None, int | None]:
    """(stop step or None, step of the chosen minimum) for a patience rule on a VAR curve,
    exactly as VarianceStop decides: the minimum so far, the latest step within
    ``tolerance`` of it, a check every ``check_every`` steps."""
    best, best_step = math.inf, None
    for i, v in enumerate(variances):
        step = i + 1
        if v is None:
            continue
        best = min(best, v)
        if v <= best * (1 + tolerance):
            best_step = step
        if (best_step is not None and step % check_every == 0
                and step - best_step >= patience_fn(best_step)):
            return step, best_step
    return None, best_step


def evaluate(run: dict, window: int, patience_fn, keep: str, tolerance: float = 0.0) -> dict:
    c = run["curves"]
    stop, chosen = replay(c[f"var_{window}"], patience_fn, tolerance)
    curve = {"output": c["psnr_output"], "average": c["psnr_average"],
             "window": c[f"psnr_window_{window}"]}[keep]
    # The oracle: the best PSNR over the run of the output average or of the kind of image the
    # rule keeps, whichever is higher (the strictest reference for the gap).
    peak, peak_step = -math.inf, 0
    for values in (c["psnr_average"], curve):
        for i, v in enumerate(values):
            if v is not None and v > peak:
                peak, peak_step = v, i + 1
    returned = curve[chosen - 1] if chosen else c["psnr_average"][-1]
    return {"peak": peak, "peak_step": peak_step, "returned": returned, "gap": peak - returned,
            "stop": stop, "chosen": chosen}


def summarise(rows: list[dict]) -> dict:
    gaps = [r["gap"] for r in rows]
    ratios = [(r["stop"] or r["budget"]) / r["peak_step"] for r in rows]
    return {"mean_gap": sum(gaps) / len(gaps), "max_gap": max(gaps),
            "mean_stop_ratio": sum(ratios) / len(ratios), "min_stop_ratio": min(ratios),
            "fired": sum(r["stop"] is not None for r in rows)}


def tables(runs: list[dict], crop: int) -> str:
    """The per-image table for dip's CURRENT default rule of each task, replayed on the runs.

    Replaying is exact (the rule only observes the fit); where the runs were made with the
    same settings, the replay is checked against the live rule's decisions.
    """
    from dip import config

    out = []
    note = (f"centre crops {crop}x{crop} (NOT the paper's full-size protocol)" if crop
            else "full size")
    out.append(f"# Early stopping: returned vs peak PSNR, {note}\n")
    out.append("Peak = the best PSNR reached during the run by the output average or by the "
               "kind of image the rule keeps, whichever is higher (an oracle that sees the "
               "clean image); returned = what the automatic rule returns; stop/peak = step "
               "the rule stopped at / step of the peak (the budget when it never fired).\n")
    for task in ("denoise", "inpaint", "superres"):
        task_runs = [r for r in runs if r["task"] == task]
        if not task_runs:
            continue
        stop = config.resolve(task).stop
        pfn = (lambda st: lambda best: max(st.patience, int(st.patience_ratio * best)))(stop)
        out.append(f"\n## {task}: W={stop.window}, patience max({stop.patience}, "
                   f"{stop.patience_ratio} t*), tolerance {stop.tolerance}, keep "
                   f"{stop.returns}\n")
        out.append("| image | peak PSNR | peak step | returned PSNR | gap | stop step | "
                   "returned step | stop/peak |")
        out.append("|---|---|---|---|---|---|---|---|")
        rows = []
        for r in task_runs:
            e = evaluate(r, stop.window, pfn, stop.returns, stop.tolerance)
            e["budget"] = r["iters"]
            rows.append(e)
            same = r["config"] == _stop_settings(stop)
            if same and (e["stop"], e["chosen"]) != (r["live"]["stop"], r["live"]["returned"]):
                out.append(f"| {r['image']} | replay {e['stop']}/{e['chosen']} differs from "
                           f"the live rule {r['live']['stop']}/{r['live']['returned']} |")
            stop_text = e["stop"] if e["stop"] is not None else f"budget {r['iters']}"
            ratio = (e["stop"] or r["iters"]) / e["peak_step"]
            out.append(f"| {r['image']} | {e['peak']:.2f} | {e['peak_step']} | "
                       f"{e['returned']:.2f} | {e['gap']:.2f} | {stop_text} | {e['chosen']} | "
                       f"{ratio:.2f} |")
        s = summarise(rows)
        mean_peak = sum(e["peak"] for e in rows) / len(rows)
        mean_ret = sum(e["returned"] for e in rows) / len(rows)
        cost = sum(r["rule_seconds"] for r in task_runs) / sum(r["seconds"] for r in task_runs)
        out.append(f"| **mean** | {mean_peak:.2f} | | {mean_ret:.2f} | {s['mean_gap']:.2f} "
                   f"(max {s['max_gap']:.2f}) | fired {s['fired']}/{len(rows)} | | "
                   f"{s['mean_stop_ratio']:.2f} (min {s['min_stop_ratio']:.2f}) |")
        out.append(f"\nThe rule's own cost: {100 * cost:.2f}% of the run's time (measured "
                   f"around the live rule's update, device sync included).")
    return "\n".join(out)


# (minimum patience, ratio): patience after a minimum at t* is max(minimum, ratio * t*)
PATIENCE = [(1000, 0.0), (500, 0.0), (200, 0.0), (200, 0.25), (200, 0.5)]
TOLERANCES = (0.0, 0.02, 0.05)


def alternatives(runs: list[dict]) -> str:
    out = ["\n# Alternatives replayed on the same runs\n"]
    for task in ("denoise", "inpaint", "superres"):
        task_runs = [r for r in runs if r["task"] == task]
        if not task_runs:
            continue
        out.append(f"\n## {task}\n")
        out.append("| W | patience | tolerance | keep | mean gap | max gap | stop/peak | "
                   "min stop/peak | fired |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for w in WINDOWS:
            for floor, ratio in PATIENCE:
                pname = f"max({floor}, {ratio}t*)" if ratio else str(floor)
                pfn = (lambda f, q: lambda best: max(f, int(q * best)))(floor, ratio)
                for tol in TOLERANCES:
                    for keep in (KEEPS if tol == 0 else ("window",)):
                        rows = []
                        for r in task_runs:
                            e = evaluate(r, w, pfn, keep, tol)
                            e["budget"] = r["iters"]
                            rows.append(e)
                        s = summarise(rows)
                        out.append(f"| {w} | {pname} | {tol} | {keep} | {s['mean_gap']:.2f} | "
                                   f"{s['max_gap']:.2f} | {s['mean_stop_ratio']:.2f} | "
                                   f"{s['min_stop_ratio']:.2f} | {s['fired']}/{len(rows)} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crop", type=int, default=64, help="centre crop size (0: full size)")
    ap.add_argument("--tasks", default="denoise,inpaint,superres")
    ap.add_argument("--limit", type=int, default=0, help="images per task (0: all)")
    ap.add_argument("--iters", type=int, default=None, help="budget (default: the preset's)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", type=int, default=1, help="processes (1 thread each)")
    ap.add_argument("--set", dest="overrides", action="append", default=["preset=paper"],
                    help="config override for every run, as dip's --set [default: "
                         "preset=paper, the settings the tables below were measured with]")
    ap.add_argument("--out", type=Path, help="save runs (JSON) for --replay")
    ap.add_argument("--replay", type=Path, nargs="+", help="print the tables of saved runs")
    ap.add_argument("--members", type=int, default=0,
                    help="K: fit K restarts together, then each alone, and compare their stops")
    args = ap.parse_args(argv)

    if args.replay:
        saved = [json.loads(p.read_text()) for p in args.replay]
        # a glob such as es_*_crop64.json takes the --members file too: its own table
        alone = [s for s in saved if "members" not in s]
        runs = [run for s in alone for run in s["runs"]]
        if runs:
            print(tables(runs, alone[0]["crop"]))
            print(alternatives(runs))
        grouped = [run for s in saved if "members" in s for run in s["runs"]]
        if grouped:
            print(members_table(grouped))
        return
    if not DATA.exists():
        sys.exit(f"benchmark data not found at {DATA}")
    names = {"denoise": DENOISE, "inpaint": INPAINT, "superres": SET5}
    jobs = []
    for task in args.tasks.split(","):
        for name in names[task][: args.limit or None]:
            jobs.append((task, name, args.crop, args.iters, args.device, args.overrides))
    started = time.perf_counter()
    if args.members:
        members_main(args, jobs)
        return
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            runs = []
            for run in pool.map(run_one, jobs):
                runs.append(run)
                print(f"done {run['task']} {run['image']} in {run['seconds']:.0f} s",
                      file=sys.stderr, flush=True)
    else:
        runs = []
        for job in jobs:
            runs.append(run_one(job))
            print(f"done {job[0]} {job[1]}", file=sys.stderr, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"crop": args.crop, "seconds": time.perf_counter() - started,
                                        "torch": torch.__version__, "runs": runs}))
    print(tables(runs, args.crop))
    print(alternatives(runs))


if __name__ == "__main__":
    main()
