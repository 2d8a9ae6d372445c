"""How many CPU threads a fit uses, and how a group's members share the cores.

Measured on the 2-core development machine (benchmarks/multifit.py, fast network, 128 px):

- one fit with 2 intra-op threads is 1.15-1.45x faster than with 1 thread when it has the CPU
  to itself, but 2.6-16x SLOWER when one other busy process shares the cores: every small
  operation ends at an OpenMP barrier that waits for a thread the kernel has descheduled;
- two fits on one thread each, side by side in two Python threads (PyTorch releases the GIL
  inside its kernels), do 1.3-1.6x the work of the same fits one after another on 2
  threads, and a thread that runs alone in its operations never waits at a barrier, so
  sharing the CPU slows it only by the share it loses;
- one network with ``groups=K`` convolutions for K members gave 0.4-1.2x on the CPU: oneDNN
  runs the groups one after another.

So a group of two or more members runs each member on ONE intra-op thread, members spread over
up to one worker thread per core: the arithmetic of a member is then the same whichever worker
runs it and whatever else shares its step, so its result does not depend on the machine's load.
A fit alone uses the cores that are free when it starts (measured over a fraction of a second
from the CPUs' busy times): all of them on an idle machine, one when another process is busy; and,
with ``perf.threads: auto``, it keeps watching (:class:`Neighbours`): when another process
starts later (two ``dip`` started together both see idle cores) it drops to the free cores,
and climbs back when they are idle again. A thread count changes a fit's rounding, so such a
run's image depends on what else ran; the record lists the changes, and ``perf.threads: N``
fixes the threads (the same command and seed then give the same image, busy or not), as
``OMP_NUM_THREADS=N`` does for a fit alone where ``perf.threads`` is ``auto``
(:func:`environment_threads`; ``dip run``'s workers, which split the cores, leave it out).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass

import psutil

from dip import cgroups
from dip.errors import ConfigError

#: how long the CPU's idle time is sampled to count the free cores
SAMPLE_SECONDS = 0.25


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask: ``taskset``, cgroups' cpusets),
    at most the CPUs' worth its CPU quota allows (:func:`dip.cgroups.cpu_quota`: ``docker
    run --cpus``, a Kubernetes CPU limit), where a thread beyond the quota only makes every
    thread wait at the end of each period it has used up; and on Apple silicon at most its
    performance cores (:func:`performance_cores`)."""
    cores = _affinity_cores()
    return min(cores, cgroups.cpu_quota() or cores, performance_cores() or cores)


def performance_cores() -> int | None:
    """Apple silicon's performance cores (macOS's ``hw.perflevel0.logicalcpu``), None on
    other machines. ATen and OpenMP split a parallel region into equal parts, and the whole
    region waits for the part an efficiency core runs at a fraction of the speed (the reason
    pytorch/pytorch#123038 gives for making these cores torch's default, which dip's thread
    count, set from all the cores, overrode). Not measured here: no Mac runs dip's CI."""
    if sys.platform != "darwin":
        return None
    import ctypes

    value, size = ctypes.c_int(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_int))
    with contextlib.suppress(OSError, AttributeError):
        if ctypes.CDLL(None).sysctlbyname(b"hw.perflevel0.logicalcpu", ctypes.byref(value),
                                          ctypes.byref(size), None, ctypes.c_size_t(0)) == 0:
            return value.value if value.value > 0 else None
    return None  # an Intel Mac: one kind of core


def _affinity_cores() -> int:
    return len(_affinity())


def _affinity() -> set[int]:
    """The CPUs this process may run on: its affinity mask (Linux's ``taskset`` and cpusets,
    Windows' through psutil), all of the machine's where there is none (macOS)."""
    with contextlib.suppress(AttributeError, OSError):
        return set(os.sched_getaffinity(0)) or {0}
    with contextlib.suppress(AttributeError, OSError, psutil.Error):
        return set(psutil.Process().cpu_affinity()) or {0}
    return set(range(max(1, os.cpu_count() or 1)))


def _cpu_times(cpus: set[int]) -> tuple[float, float]:
    """(busy, total) seconds summed over ``cpus`` since the machine started: Linux's
    ``/proc/stat`` (its lines name each CPU, so a set with an offline CPU between its members
    is read right), and psutil's per-CPU times elsewhere (macOS, Windows), where the list's
    position is the CPU's number."""
    try:
        return _proc_stat_times(cpus)
    except OSError:  # no /proc: not Linux
        busy = total = 0.0
        for cpu, times in enumerate(psutil.cpu_times(percpu=True)):
            if cpu in cpus:
                # nice is macOS's and Linux's, apart from user; Windows' interrupt and DPC
                # times are within its system time
                used = times.user + times.system + getattr(times, "nice", 0.0)
                busy += used
                total += used + times.idle
        return busy, total


def _proc_stat_times(cpus: set[int]) -> tuple[float, float]:
    busy = total = 0.0
    with open("/proc/stat") as stat:
        for line in stat:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                continue
            values = [float(v) for v in fields[:8]]
            idle = values[3] + values[4]  # idle + iowait
            busy += sum(values) - idle
            total += sum(values)
    return busy / CLOCK_TICKS, total / CLOCK_TICKS


#: /proc/stat's units per second
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_cores(seconds: float = SAMPLE_SECONDS) -> int:
    """The usable cores that other processes leave idle, rounded down, at least 1: what was
    busy during ``seconds`` (this process idles meanwhile) is taken by someone else. The
    load is counted over the cores this process may run on (a busy half of a 64-core host
    leaves 32 idle), then capped by the usable cores (a quota of 2 CPUs: 2)."""
    cores = usable_cores()
    cpus = _affinity()
    try:
        busy0, total0 = _cpu_times(cpus)
        time.sleep(seconds)
        busy1, total1 = _cpu_times(cpus)
    except (AttributeError, OSError, ValueError, psutil.Error):  # unreadable: idle
        return cores
    if total1 <= total0:
        return cores
    taken = (busy1 - busy0) / (total1 - total0) * len(cpus)
    # a core counts as taken once it is more than half busy
    return max(1, min(cores, len(cpus) - int(taken + 0.5)))


class Neighbours:
    """How busy the other processes keep this process's cores, measured as a fit runs: the
    cores' busy time (:func:`_cpu_times`) minus this process's own CPU time, since the last
    look. A fit alone on several threads looks every :data:`LOOK_SECONDS` (:meth:`due`) and
    drops to the threads the others leave free (one when another process is busy), and climbs
    back when they are idle again. The look is by the clock, not by steps: two fits on two
    threads each on two cores take 1.7-2.5 s per step instead of 0.03-0.05 (every parallel
    region waits at a barrier for a descheduled thread), so twenty steps before the first
    look would cost most of a short run."""

    def __init__(self) -> None:
        self.cores = usable_cores()  # at most (a CPU quota)
        self.cpus = _affinity()  # the load is counted over these
        self.last = self._now()
        self.next_look = time.monotonic() + LOOK_SECONDS

    def due(self) -> bool:
        """Whether :data:`LOOK_SECONDS` have passed since the last look."""
        now = time.monotonic()
        if now < self.next_look:
            return False
        self.next_look = now + LOOK_SECONDS
        return True

    def _now(self) -> tuple[float, float, float] | None:
        try:
            busy, _ = _cpu_times(self.cpus)
        except (OSError, ValueError, psutil.Error):
            return None
        return busy, time.process_time(), time.monotonic()

    def free(self) -> int:
        """The cores the other processes left idle since the last call (at least 1)."""
        now, last = self._now(), self.last
        self.last = now
        if now is None or last is None or now[2] <= last[2]:
            return self.cores
        others = max(0.0, (now[0] - last[0]) - (now[1] - last[1])) / (now[2] - last[2])
        return max(1, min(self.cores, len(self.cpus) - int(others + 0.5)))


#: seconds between two looks at the neighbours (:class:`Neighbours`): /proc/stat's counters
#: tick every 10 ms, so half a second reads the load to a few percent
LOOK_SECONDS = 0.5


@dataclass(frozen=True)
class Lanes:
    """How a group runs on the CPU: ``workers`` threads stepping members, each member's
    operations on ``intra`` threads."""

    workers: int
    intra: int


def plan_lanes(members: int, threads: int) -> Lanes:
    """``threads`` CPU threads for a group of ``members``: one fit alone gets them all for its
    operations; two or more run on one thread each, ``min(members, threads)`` at a time."""
    threads = max(1, threads)
    if members <= 1:
        return Lanes(1, threads)
    return Lanes(min(members, threads), 1)


#: the most threads ``perf.threads`` takes: 100000 crashed OpenMP itself, with a traceback
MAX_THREADS = 1024


def check_threads(setting: str) -> None:
    """``perf.threads`` is ``auto`` or a number from 1 to :data:`MAX_THREADS`."""
    if setting != "auto" and not (setting.isdecimal() and 1 <= int(setting) <= MAX_THREADS):
        raise ConfigError(f"config key 'perf.threads' must be auto or a number of threads "
                          f"from 1 to {MAX_THREADS}, got {setting!r}")


def environment_threads(environ: dict[str, str] | os._Environ = os.environ) -> int | None:
    """The threads ``OMP_NUM_THREADS`` asks for (its first level: ``4,2`` is 4), None where
    it is unset or not a number from 1 to :data:`MAX_THREADS`."""
    first = environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdecimal() and 1 <= int(first) <= MAX_THREADS else None


def fixed_threads(setting: str | int) -> int | None:
    """The threads a fit alone is held to: ``perf.threads``'s number, else (``auto``)
    ``OMP_NUM_THREADS``'s; None where they follow the machine's load."""
    return int(setting) if setting != "auto" else environment_threads()


def resolve_threads(setting: str | int, members: int) -> int:
    """``perf.threads`` -> a number: ``auto`` is every usable core for a group (its members run
    on one thread each, so a busy neighbour cannot stall them), and the free cores for a fit
    alone."""
    if setting != "auto":
        return int(setting)
    # OMP_NUM_THREADS, the usual way to fix torch's threads, fixes a fit alone's (it was
    # ignored: its image followed the machine's load); a group's members run on one thread
    # each whatever it says
    return usable_cores() if members > 1 else fixed_threads(setting) or free_cores()
