"""K independent fits at once (dip.fitting.fit_group) against K separate fits one after another,
and how a fit behaves when the CPU is shared.

    python benchmarks/multifit.py throughput [--sizes 64,128,256] [--nets fast,paper] [--ks ...]
    python benchmarks/multifit.py contention           # alone / one busy process / two at once
    python benchmarks/multifit.py table                # both tables from the saved results

throughput  member-steps per second for K = 1, 2, 4, 8, 16 members (each its own network, code
            and Adam; the fast preset's or the paper's network) on one denoising image, after
            each fit's warm-up steps (its first; on CUDA the graph's eager steps and capture),
            in three ways measured in the same process (--device cpu|cuda):
              separate   K fits one after another, each as dip fits one image there (the
                         CPU: torch's threads; CUDA: a CUDA graph per fit);
              group      one fit_group of K members as dip runs it there (the CPU: each
                         member on one thread, the members spread over the cores; CUDA: one
                         stack, below);
              stacked    one stack (dip.stack, perf.stack=on): the K networks as grouped
                         convolutions under torch.func.vmap, one Adam over all their
                         weights, one CUDA graph: the arithmetic of K fits in one set of
                         kernels. (Older CPU rows hold "grouped", the same idea as a
                         hand-built network.)
              stacked_bf16  the same stack under bfloat16 autocast (perf.precision=bfloat16;
                         CUDA only): whether cuDNN's grouped convolutions, at half the dense
                         ones' rate in float32, gain more from it than a single fit did.
            The figure to read is each way's throughput over separate's.
contention  200 steps of one 128 px fast-preset fit (the issue's measurement), alone, beside
            one busy Python process, and as two such runs started together, for: 2 threads,
            1 thread, dip's automatic choice (perf.threads=auto), and a group of two members
            (restarts) per run. Each run is a fresh process.

Results: benchmarks/results/multifit_{throughput,contention}.json. Run alone on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
NETS = {"fast": 32, "paper": 128}  # channels at every scale (configs/fast/denoise.yaml)


def _member(seed: int, size: int, channels: int, device: str = "cpu"):
    from dip.fitting import Member
    from dip.inputs import make_code
    from dip.nets import build_net
    from dip.operators import Identity

    torch.manual_seed(seed)
    net = build_net("skip", 32, 3, channels_down=[channels] * 5, channels_up=[channels] * 5)
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(100 + seed))
    code = make_code("noise", 32, (size, size), 0.1, g)
    if device != "cpu":
        g = torch.Generator(device=device).manual_seed(seed)
    return Member(net.to(device), code.to(device), Identity().to(device), y.to(device), g)


def _perf(device: str, stack: str = "auto", precision: str = "float32"):
    """dip's own choice of how steps run on ``device`` (on CUDA: graphs), with ``stack`` and
    ``precision``."""
    from dip.config import PerfConfig
    from dip.engine import resolve_perf

    return resolve_perf(PerfConfig(stack=stack, precision=precision), torch.device(device))


def _timed(fits: int, perf, run) -> float:
    """Seconds of ``fits`` fits' steps after their warm-up steps (the first, and a CUDA
    graph's eager steps and capture: dip.engine.warm_steps), as dip's estimate times them:
    ``run(on_step, steps)`` runs them, calling ``on_step()`` after each member-step."""
    from dip.engine import warm_steps

    marks: list[float] = []

    def on_step() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    run(on_step)
    timed = marks[fits * warm_steps(perf) - 1:]
    return timed[-1] - timed[0]


def separate(k: int, size: int, channels: int, steps: int, device: str) -> float:
    """K fits one after another, each as dip fits one image on ``device``."""
    from dip.engine import warm_steps
    from dip.fitting import fit

    perf = _perf(device)
    seconds = 0.0
    for i in range(k):
        m = _member(i, size, channels, device)
        seconds += _timed(1, perf, lambda on_step: fit(
            m.net, m.code, m.operator, m.observation, iters=steps + warm_steps(perf),
            generator=m.generator, perf=perf, callback=lambda p: on_step()))
    return seconds


def _together(stack: str, precision: str = "float32"):
    def way(k: int, size: int, channels: int, steps: int, device: str) -> float:
        from dip.engine import warm_steps
        from dip.fitting import Settings, fit_group

        perf = _perf(device, stack, precision)
        members = [_member(i, size, channels, device) for i in range(k)]
        return _timed(k, perf, lambda on_step: fit_group(
            members, Settings(iters=steps + warm_steps(perf)), perf=perf,
            threads=torch.get_num_threads(), callback=lambda i, p: on_step()))
    return way


#: group: dip's engine as it runs K members on the device (the CPU: side by side on one
#: thread each; CUDA: one stack); stacked: one stack on any device (dip.stack: the K networks
#: as grouped convolutions under torch.func.vmap, one Adam over all rows)
WAYS = {"separate": separate, "group": _together("auto"), "stacked": _together("on"),
        "stacked_bf16": _together("on", "bfloat16")}


def throughput(args: argparse.Namespace) -> None:
    out = args.out or RESULTS / "multifit_throughput.json"
    rows = json.loads(out.read_text()) if out.exists() else []
    device = args.device
    done = {(r["net"], r["size"], r["k"], r["way"]) for r in rows
            if r.get("device", "cpu") == device}
    for net in args.nets.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            for k in (int(k) for k in args.ks.split(",")):
                ways = [w for w in args.ways.split(",") if (net, size, k, w) not in done
                        and not (k == 1 and w != "separate")  # one member: one fit
                        # all K members' activations at once: beyond this CPU
                        and not (device == "cpu" and w == "stacked"
                                 and NETS[net] * k * size ** 2 > 128 * 4 * 256 ** 2)]
                times: dict[str, list[float]] = {w: [] for w in ways}
                for way in ways:  # warm-up: allocator, oneDNN's and cuDNN's kernels
                    WAYS[way](k if way != "separate" else min(k, 2), size, NETS[net], 1,
                              device)
                for _ in range(args.repeats):  # the ways in turn: a drift hits them alike
                    for way in ways:
                        times[way].append(WAYS[way](k, size, NETS[net], args.steps, device))
                for way in ways:
                    seconds = statistics.median(times[way])
                    row = {"net": net, "size": size, "k": k, "way": way, "steps": args.steps,
                           "seconds": round(seconds, 4), "repeats": args.repeats,
                           "member_steps_per_s": round(k * args.steps / seconds, 3),
                           "device": device, "warm_up_excluded": True,
                           "threads": torch.get_num_threads(), "cores": os.cpu_count()}
                    if device != "cpu":
                        row["gpu"] = torch.cuda.get_device_name()
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    out.write_text(json.dumps(rows, indent=1) + "\n")


# --- contention ---------------------------------------------------------------------------------

SETUPS = {"2 threads": ("2", 1), "1 thread": ("1", 1), "auto": ("auto", 1),
          "2 members, auto": ("auto", 2)}


def one_run(setup: str, steps: int) -> float:
    """One fresh ``dip``-like run: threads resolved as ``dip`` resolves them, ``steps`` steps
    of the fast network at 128 px; prints the seconds of its steps."""
    from dip.fitting import Settings, fit_group
    from dip.threads import resolve_threads

    setting, members = SETUPS[setup]
    threads = resolve_threads(setting, members)
    fits = [_member(i, 128, NETS["fast"]) for i in range(members)]
    started = time.perf_counter()
    fit_group(fits, Settings(iters=steps), threads=threads, adapt_threads=setting == "auto")
    return time.perf_counter() - started


def _launch(setup: str, steps: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "one", setup, str(steps)],
                            stdout=subprocess.PIPE, text=True)


def contention(args: argparse.Namespace) -> None:
    out = args.out or RESULTS / "multifit_contention.json"
    rows = []
    for setup in SETUPS:
        members = SETUPS[setup][1]
        for scene in ("alone", "one busy process", "two at once"):
            busy = (subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    if scene == "one busy process" else None)
            try:
                time.sleep(1 if busy else 0)
                procs = [_launch(setup, args.steps) for _ in range(2 if scene == "two at once"
                                                                   else 1)]
                seconds = [float(p.communicate()[0].split()[-1]) for p in procs]
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            row = {"setup": setup, "scene": scene, "steps": args.steps, "members": members,
                   "seconds": [round(s, 2) for s in seconds],
                   "seconds_per_member_step": round(max(seconds) / (args.steps * members), 4)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")


def tables(path: Path | None = None, contended: Path | None = None) -> None:
    path = path or RESULTS / "multifit_throughput.json"
    if path.exists():
        rows = json.loads(path.read_text())
        by = {(r.get("device", "cpu"), r["net"], r["size"], r["k"], r["way"]):
              r["member_steps_per_s"] for r in rows}
        for device in sorted({key[0] for key in by}):
            ways = [w for w in ("group", "stacked", "stacked_bf16", "grouped")
                    if any(key[0] == device and key[4] == w for key in by)]
            print(f"\n{device}: member-steps per second (each way over separate)\n")
            print("| net | size | K | separate | " + " | ".join(ways) + " |")
            print("|---|---|---|---|" + "---|" * len(ways))
            for net, size, k in sorted({key[1:4] for key in by if key[0] == device},
                                       key=lambda t: (t[0] != "fast", t[1], t[2])):
                base = by.get((device, net, size, k, "separate"))
                cells = []
                for way in ways:
                    v = by.get((device, net, size, k, way))
                    cells.append("–" if v is None or base is None
                                 else f"{v:.2f} ({v / base:.2f}×)")
                print(f"| {net} | {size} | {k} | {base if base is not None else '–'} | "
                      + " | ".join(cells) + " |")
    path = contended or RESULTS / "multifit_contention.json"
    if path.exists():
        rows = json.loads(path.read_text())
        print("\n| setup | alone | one busy process | two at once |  (s per member-step)")
        print("|---|---|---|---|")
        for setup in SETUPS:
            cells = {r["scene"]: r["seconds_per_member_step"] for r in rows
                     if r["setup"] == setup}
            print(f"| {setup} | " + " | ".join(
                f"{cells[s]:.3f}" if s in cells else "–"
                for s in ("alone", "one busy process", "two at once")) + " |")
        alone = statistics.fmean(r["seconds_per_member_step"] for r in rows
                                 if r["setup"] == "2 threads" and r["scene"] == "alone")
        print(f"\n(2 threads alone: {alone:.3f} s per step)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--sizes", default="64,128,256")
    t.add_argument("--nets", default="fast,paper")
    t.add_argument("--ks", default="1,2,4,8,16")
    t.add_argument("--ways", default="separate,group,stacked")
    t.add_argument("--device", default="cpu", help="cpu | cuda")
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--repeats", type=int, default=1, help="median of this many, ways in turn")
    t.add_argument("--out", type=Path, help="results file [default: "
                                            "results/multifit_throughput.json]")
    c = sub.add_parser("contention")
    c.add_argument("--steps", type=int, default=200)
    c.add_argument("--out", type=Path, help="results file [default: "
                                            "results/multifit_contention.json]")
    o = sub.add_parser("one")
    o.add_argument("setup")
    o.add_argument("steps", type=int)
    tb = sub.add_parser("table")
    tb.add_argument("--out", type=Path, help="the throughput results file to print")
    args = parser.parse_args(argv)
    if args.what == "one":
        print(one_run(args.setup, args.steps))
    elif args.what == "throughput":
        throughput(args)
    elif args.what == "contention":
        contention(args)
    if args.what != "one":
        out = getattr(args, "out", None)
        tables(*((None, out) if args.what == "contention" else (out, None)))


if __name__ == "__main__":
    main()
