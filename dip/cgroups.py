"""What this process's control groups allow it: a container's (Docker, Kubernetes) or a
cluster job's (Slurm) memory limit and CPU quota, which the machine-wide figures a process
sees otherwise (``/proc/meminfo``, the CPUs it may run on) do not show.

Both cgroup versions are read: v2's one tree (``memory.max``, ``cpu.max``) and v1's tree of
each controller (``memory.limit_in_bytes`` and ``hierarchical_memory_limit``; the CFS quota).
Every group from the process's own up to the mount's root binds it, so the tightest decides;
a group that cannot be read, or holds what is not a number, is skipped.
Inside a container ``/proc/self/cgroup`` may name the host's path, which the container's
mount does not show: the mount's root is then the process's group. Where nothing can be read
(not Linux, no cgroups mounted) every answer is None: no limit known.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
MEMBERSHIP = Path("/proc/self/cgroup")
#: a cgroup v1 memory limit this high is no limit (the kernel's "unlimited", page-rounded)
_NO_LIMIT = 2 ** 62


def memory_headroom(root: Path = ROOT, membership: Path = MEMBERSHIP) -> int | None:
    """Bytes this process's groups may still take: each limit less its group's usage, where
    the page cache the group could drop (its inactive files, as ``docker stats`` counts them)
    is free; the least over the process's group and the groups above it with a limit (a
    limiting parent's usage counts its other children too: parallel steps of one cluster
    job), None where none has one."""
    rooms = []
    for folder, v1 in _groups(root, membership, "memory"):
        with contextlib.suppress(OSError, ValueError):  # a group that cannot be read: skipped
            stat = _stat(folder)
            text = _read(folder, "memory.limit_in_bytes" if v1 else "memory.max", "max")
            # v1 also states the limit of the groups above, which a container may not show
            limit = min(_NO_LIMIT if text == "max" else int(text),
                        stat.get("hierarchical_memory_limit", _NO_LIMIT))
            if limit < _NO_LIMIT:
                used = int(_read(folder, "memory.usage_in_bytes" if v1 else "memory.current"))
                cache = stat.get("total_inactive_file" if v1 else "inactive_file", 0)
                rooms.append(max(0, limit - used + cache))
    return min(rooms, default=None)


def cpu_quota(root: Path = ROOT, membership: Path = MEMBERSHIP) -> int | None:
    """The CPUs' worth of time this process's groups may use (a CFS quota: ``docker run
    --cpus 2``, a Kubernetes CPU limit), rounded up; the least over its group and the groups
    above it with a quota, None where none has one. A quota is not a set of cores: a process
    that runs more threads than it allows is stopped for the rest of each period once it has
    used it up."""
    quotas = []
    for folder, v1 in _groups(root, membership, "cpu"):
        with contextlib.suppress(OSError, ValueError):
            if v1:
                quota = int(_read(folder, "cpu.cfs_quota_us", "-1"))
                period = int(_read(folder, "cpu.cfs_period_us", "100000"))
            else:
                text, _, per = _read(folder, "cpu.max", "max").partition(" ")
                quota, period = (-1 if text == "max" else int(text)), int(per or 100000)
            if quota > 0 and period > 0:
                quotas.append(max(1, math.ceil(quota / period)))
    return min(quotas, default=None)


def _groups(root: Path, membership: Path, controller: str) -> Iterator[tuple[Path, bool]]:
    """This process's group of ``controller`` and each group above it up to the mount's root,
    with whether they are v1's: v1's tree of that controller where v1 runs it (a v2 line
    stands beside v1 controllers on hybrid systems: v1's is taken first), else v2's one tree.
    Nothing where cgroups cannot be read."""
    try:
        lines = _lines(membership)
    except (OSError, ValueError):
        return
    for controllers, path in lines:
        if controller in controllers:  # v1: mounted alone, or with others as cpu,cpuacct
            mount = root / controller
            mount = mount if mount.is_dir() else root / ",".join(controllers)
            if mount.is_dir():
                yield from ((folder, True) for folder in _up(mount, path))
                return
    if (root / "cgroup.controllers").is_file():
        for controllers, path in lines:
            if not controllers:
                yield from ((folder, False) for folder in _up(root, path))
                return


def _lines(membership: Path) -> list[tuple[list[str], str]]:
    """``/proc/self/cgroup``: ``ID:CONTROLLERS:PATH`` lines as (controllers, path)."""
    lines = []
    for line in membership.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        lines.append((controllers.split(",") if controllers else [], path))
    return lines


def _up(mount: Path, path: str) -> Iterator[Path]:
    """The group at ``path`` under ``mount`` (the mount's root where the mount does not show
    it: a container's own view) and each group above it, up to the mount's root."""
    folder = mount / path.lstrip("/")
    folder = folder if folder.is_dir() else mount
    while True:
        yield folder
        if folder == mount or mount not in folder.parents:
            return
        folder = folder.parent


def _read(folder: Path, name: str, missing: str | None = None) -> str:
    path = folder / name
    if missing is not None and not path.is_file():
        return missing
    return path.read_text().strip()


def _stat(folder: Path) -> dict[str, int]:
    """``memory.stat``'s ``key value`` lines (one that is not is skipped)."""
    stat = {}
    for line in _read(folder, "memory.stat", "").splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            stat[key] = int(value)
    return stat
