"""K independent fits at once (dip.fitting.fit_group) against K separate fits one after another,
and how a fit behaves when the CPU is shared.

    python benchmarks/multifit.py throughput [--sizes 64,128,256] [--nets fast,paper] [--ks ...]
    python benchmarks/multifit.py contention           # alone / one busy process / two at once
    python benchmarks/multifit.py table                # both tables from the saved results

throughput  member-steps per second for K = 1, 2, 4, 8, 16 members (each its own network, code
            and Adam; the fast preset's or the paper's network) on one denoising image, in
            three ways measured in the same process:
              separate   K fits one after another, each with torch's threads (dip's default
                         of one fit per run before groups existed);
              group      one fit_group of K members (dip's engine: on the CPU each member on
                         one thread, the members spread over the cores);
              grouped    the K networks as ONE network with groups=K convolutions and
                         per-member BatchNorm channels (the alternative the issue named), one
                         Adam over it: the arithmetic of K fits in one set of kernels.
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
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
NETS = {"fast": 32, "paper": 128}  # channels at every scale (configs/fast/denoise.yaml)


def _member(seed: int, size: int, channels: int):
    from dip.fitting import Member
    from dip.inputs import make_code
    from dip.nets import build_net
    from dip.operators import Identity

    torch.manual_seed(seed)
    net = build_net("skip", 32, 3, channels_down=[channels] * 5, channels_up=[channels] * 5)
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(100 + seed))
    return Member(net, make_code("noise", 32, (size, size), 0.1, g), Identity(), y, g)


def separate(k: int, size: int, channels: int, steps: int) -> float:
    from dip.fitting import fit

    members = [_member(i, size, channels) for i in range(k)]
    started = time.perf_counter()
    for m in members:
        fit(m.net, m.code, m.operator, m.observation, iters=steps, generator=m.generator)
    return time.perf_counter() - started


def group(k: int, size: int, channels: int, steps: int) -> float:
    from dip.fitting import Settings, fit_group

    members = [_member(i, size, channels) for i in range(k)]
    started = time.perf_counter()
    fit_group(members, Settings(iters=steps), threads=torch.get_num_threads())
    return time.perf_counter() - started


# --- the alternative: K networks as one with groups=K convolutions ---------------------

def _block(c_in: int, c_out: int, kernel: int, k: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in * k, c_out * k, kernel, stride=stride, padding=kernel // 2, groups=k,
                  padding_mode="reflect" if kernel > 1 else "zeros"),
        nn.BatchNorm2d(c_out * k), nn.LeakyReLU(0.2, inplace=True))


class _GroupedScale(nn.Module):
    def __init__(self, c_in: int, c: int, deeper: nn.Module | None, k: int) -> None:
        super().__init__()
        self.k, self.deeper = k, deeper
        self.skip = _block(c_in, 4, 1, k)
        self.down = nn.Sequential(_block(c_in, c, 3, k, 2), _block(c, c, 3, k))
        self.decoder = nn.Sequential(nn.BatchNorm2d((4 + c) * k), _block(4 + c, c, 3, k),
                                     _block(c, c, 1, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.deeper is not None:
            y = self.deeper(y)
        y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        n, _, h, w = x.shape
        s = self.skip(x)  # each member's skip channels beside its own upsampled ones
        merged = torch.cat([s.view(n, self.k, -1, h, w), y.view(n, self.k, -1, h, w)], 2)
        return self.decoder(merged.view(n, -1, h, w))


class GroupedSkip(nn.Module):
    """The skip network (5 scales, skip width 4) for ``k`` members in one: member i owns
    channel block i of every layer."""

    def __init__(self, k: int, channels: int) -> None:
        super().__init__()
        self.k = k
        deeper = None
        for i in reversed(range(5)):
            deeper = _GroupedScale(32 if i == 0 else channels, channels, deeper, k)
        self.body = deeper
        self.head = nn.Sequential(nn.Conv2d(channels * k, 3 * k, 1, groups=k), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))


def grouped(k: int, size: int, channels: int, steps: int) -> float:
    torch.manual_seed(0)
    net = GroupedSkip(k, channels)
    opt = torch.optim.Adam(net.parameters(), lr=0.01, fused=True)
    z = torch.rand(1, 32 * k, size, size) * 0.1
    y = torch.rand(1, 3 * k, size, size)
    started = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        # the sum of the members' own mean squared errors: each member's gradient is its own
        loss = ((net(z + torch.randn_like(z) / 30) - y) ** 2).view(k, -1).mean(1).sum()
        loss.backward()
        opt.step()
        loss.item()
    return time.perf_counter() - started


WAYS = {"separate": separate, "group": group, "grouped": grouped}


def throughput(args: argparse.Namespace) -> None:
    out = args.out or RESULTS / "multifit_throughput.json"
    rows = json.loads(out.read_text()) if out.exists() else []
    done = {(r["net"], r["size"], r["k"], r["way"]) for r in rows}
    for net in args.nets.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            for k in (int(k) for k in args.ks.split(",")):
                ways = [w for w in args.ways.split(",") if (net, size, k, w) not in done
                        # all K members' activations at once: beyond this machine
                        and not (w == "grouped" and NETS[net] * k * size ** 2
                                 > 128 * 4 * 256 ** 2)]
                times: dict[str, list[float]] = {w: [] for w in ways}
                for way in ways:
                    WAYS[way](k, size, NETS[net], 1)  # warm-up: allocator, oneDNN's kernels
                for _ in range(args.repeats):  # the ways in turn: a drift hits them alike
                    for way in ways:
                        times[way].append(WAYS[way](k, size, NETS[net], args.steps))
                for way in ways:
                    seconds = statistics.median(times[way])
                    row = {"net": net, "size": size, "k": k, "way": way, "steps": args.steps,
                           "seconds": round(seconds, 3), "repeats": args.repeats,
                           "member_steps_per_s": round(k * args.steps / seconds, 3),
                           "threads": torch.get_num_threads(), "cores": os.cpu_count()}
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
    out = RESULTS / "multifit_contention.json"
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


def tables(path: Path | None = None) -> None:
    path = path or RESULTS / "multifit_throughput.json"
    if path.exists():
        rows = json.loads(path.read_text())
        by = {(r["net"], r["size"], r["k"], r["way"]): r["member_steps_per_s"] for r in rows}
        print("| net | size | K | separate (member-steps/s) | group | grouped convs |")
        print("|---|---|---|---|---|---|")
        for net, size, k in sorted({key[:3] for key in by}, key=lambda t: (t[0] != "fast",
                                                                           t[1], t[2])):
            base = by.get((net, size, k, "separate"))
            cells = []
            for way in ("group", "grouped"):
                v = by.get((net, size, k, way))
                cells.append("–" if v is None or base is None else f"{v:.2f} ({v / base:.2f}×)")
            print(f"| {net} | {size} | {k} | {base if base is not None else '–'} | "
                  + " | ".join(cells) + " |")
    path = RESULTS / "multifit_contention.json"
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--sizes", default="64,128,256")
    t.add_argument("--nets", default="fast,paper")
    t.add_argument("--ks", default="1,2,4,8,16")
    t.add_argument("--ways", default="separate,group,grouped")
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--repeats", type=int, default=1, help="median of this many, ways in turn")
    t.add_argument("--out", type=Path, help="results file [default: "
                                            "results/multifit_throughput.json]")
    c = sub.add_parser("contention")
    c.add_argument("--steps", type=int, default=200)
    o = sub.add_parser("one")
    o.add_argument("setup")
    o.add_argument("steps", type=int)
    sub.add_parser("table")
    args = parser.parse_args(argv)
    if args.what == "one":
        print(one_run(args.setup, args.steps))
    elif args.what == "throughput":
        throughput(args)
    elif args.what == "contention":
        contention(args)
    if args.what != "one":
        tables(getattr(args, "out", None))


if __name__ == "__main__":
    main()
