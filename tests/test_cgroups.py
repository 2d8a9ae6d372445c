"""A CPU run uses what its container or cluster job allows (dip.cgroups), not the machine's
figures. Memory: MemAvailable is the machine's, and a run sized by it inside a 1.5 GB
container (``--preset paper`` on a 600 px photo, even ``dip run --dry-run``) was killed
without a word; ``ulimit -v`` binds too. CPUs: a CFS quota (``docker run --cpus 1``) is not
an affinity mask, and a fit on more threads than it allows waits at every period's end.
Also the memory a run's estimate starts from, the advice when memory runs out, and the same
figures on macOS and Windows (psutil), where there is no /proc to read."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from dip import cgroups, estimate, run, threads
from dip.cli.main import cli

from conftest import save, synthetic

GB = 2 ** 30
#: the tests that read this process's own memory figures need Linux's /proc
LINUX = pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="needs /proc")


def _write(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / (name if "." in name else name.replace("_", ".", 1))).write_text(text)


def _membership(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "cgroup"
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def test_cgroup_v2_limit_less_usage_with_droppable_cache_counted_free(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    _write(root, **{"cgroup.controllers": "cpu memory"})
    _write(root / "job", memory_max=str(2 * GB), memory_current=str(GB),
           memory_stat=f"anon {GB // 2}\ninactive_file {GB // 4}\n")
    membership = _membership(tmp_path, "0::/job")
    assert cgroups.memory_headroom(root, membership) == GB + GB // 4


def test_cgroup_v2_the_tightest_group_above_decides(tmp_path: Path) -> None:
    # a cluster job's step inside its job: the job's limit binds its steps too
    root = tmp_path / "fs"
    _write(root, **{"cgroup.controllers": "memory"})
    _write(root / "job", memory_max=str(3 * GB), memory_current=str(2 * GB),
           memory_stat="inactive_file 0\n")
    _write(root / "job" / "step", memory_max="max", memory_current=str(GB),
           memory_stat="inactive_file 0\n")
    assert cgroups.memory_headroom(root, _membership(tmp_path, "0::/job/step")) == GB


def test_cgroup_v2_without_a_limit_is_none(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    _write(root, **{"cgroup.controllers": "memory"})
    _write(root / "user", memory_max="max", memory_current=str(GB), memory_stat="")
    assert cgroups.memory_headroom(root, _membership(tmp_path, "0::/user")) is None


def test_a_containers_group_path_it_cannot_see_is_read_at_the_mounts_root(
        tmp_path: Path) -> None:
    # inside a container /proc/self/cgroup may name the host's path; the mount shows its own
    root = tmp_path / "fs"
    _write(root, **{"cgroup.controllers": "memory", "memory.max": str(GB),
                    "memory.current": str(GB // 2), "memory.stat": "inactive_file 0\n"})
    membership = _membership(tmp_path, "0::/docker/0123abcd")
    assert cgroups.memory_headroom(root, membership) == GB // 2


def test_cgroup_v1_hierarchical_limit_and_inactive_cache(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    unlimited = str(9223372036854771712)
    _write(root / "memory" / "slurm" / "job_7", memory_limit_in_bytes=unlimited,
           memory_usage_in_bytes=str(GB),
           memory_stat=f"cache 5\nhierarchical_memory_limit {2 * GB}\n"
                       f"total_inactive_file {GB // 2}\n")
    membership = _membership(tmp_path, "5:cpu,cpuacct:/slurm/job_7",
                             "4:memory:/slurm/job_7", "0::/slurm/job_7")
    assert cgroups.memory_headroom(root, membership) == GB + GB // 2
    _write(root / "memory" / "slurm" / "job_7",
           memory_stat=f"hierarchical_memory_limit {unlimited}\ntotal_inactive_file 0\n")
    assert cgroups.memory_headroom(root, membership) is None


def test_no_cgroups_to_read_is_none(tmp_path: Path) -> None:
    assert cgroups.memory_headroom(tmp_path / "none", tmp_path / "missing") is None
    garbled = _membership(tmp_path, "not a cgroup line")
    assert cgroups.memory_headroom(tmp_path / "none", garbled) is None


@LINUX
def test_the_cpus_free_memory_is_the_least_of_machine_group_and_address_space(
        monkeypatch) -> None:
    # what the process holds (a run's estimate counts it) and what it may still take
    resource = pytest.importorskip("resource")
    cpu = torch.device("cpu")
    own = {"vms": 3 * GB, "rss": GB // 2}
    monkeypatch.setattr(estimate, "_own_memory", lambda kind: own[kind])
    monkeypatch.setattr(estimate, "_mem_available", lambda: 20 * GB)
    assert estimate.free_bytes(cpu) == 20 * GB + GB // 2
    monkeypatch.setattr(cgroups, "memory_headroom", lambda: GB // 3)
    assert estimate.free_bytes(cpu) == GB // 3 + GB // 2
    # ulimit -v: what it allows less what the process already maps (3 GB)
    monkeypatch.setattr(resource, "getrlimit",
                        lambda which: (3 * GB + GB // 8, resource.RLIM_INFINITY))
    assert estimate.free_bytes(cpu) == GB // 8 + GB // 2


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:114] data. DefaultCPUAllocator: not enough "
                 "memory: you tried to allocate 1000000000 bytes."),  # the CPU's, on Windows
    MemoryError()])
def test_out_of_memory_as_windows_and_python_say_it_is_one_line(tmp_path: Path, monkeypatch,
                                                                error: Exception) -> None:
    def no_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr(run, "fit_group", no_memory)
    path = save(synthetic(24), tmp_path / "in.png")
    result = CliRunner().invoke(cli, ["denoise", str(path), "-o", str(tmp_path / "o.png"),
                                      "--iters", "2", "--restarts", "1"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.strip().splitlines()[-1].startswith(
        "dip: error: out of memory on cpu for a 24x24 result")


@pytest.mark.parametrize("side, tile, advised", [(32, "off", None), (100, "off", "--tile 64"),
                                                 (300, "off", "--tile 256"),
                                                 (96, "64", "--tile 32")])
def test_out_of_memory_advises_tiles_smaller_than_the_result(tmp_path: Path, monkeypatch,
                                                             side: int, tile: str,
                                                             advised: str | None) -> None:
    # a 128 px result out of memory was told to try --tile 256, which changes nothing
    def no_memory(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to "
                           "allocate 1000000000 bytes.")

    monkeypatch.setattr(run, "fit_group", no_memory)
    path = save(synthetic(side), tmp_path / "in.png")
    result = CliRunner().invoke(cli, ["denoise", str(path), "-o", str(tmp_path / "o.png"),
                                      "--iters", "2", "--tile", tile, "--restarts", "1"])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"dip: error: out of memory on cpu for a {side}x{side} result; try "
                           f"a smaller image"), last
    assert ("--tile" in last) == (advised is not None) and (advised or "") in last, last


@pytest.mark.parametrize("job, step, cpus", [("200000 100000", "max 100000", 2),
                                             ("150000 100000", "max", 2),
                                             ("400000 100000", "50000 100000", 1),
                                             ("max 100000", "max 100000", None)])
def test_cgroup_v2_cpu_quota_in_cpus_rounded_up_the_tightest_group_deciding(
        tmp_path: Path, job: str, step: str, cpus: int | None) -> None:
    root = tmp_path / "fs"
    _write(root, **{"cgroup.controllers": "cpu memory"})
    _write(root / "job", **{"cpu.max": job})
    _write(root / "job" / "step", **{"cpu.max": step})
    assert cgroups.cpu_quota(root, _membership(tmp_path, "0::/job/step")) == cpus


@pytest.mark.parametrize("mount", ["cpu", "cpu,cpuacct"])
def test_cgroup_v1_cpu_quota(tmp_path: Path, mount: str) -> None:
    root = tmp_path / "fs"
    _write(root / mount / "docker" / "abc", **{"cpu.cfs_quota_us": "250000",
                                               "cpu.cfs_period_us": "100000"})
    membership = _membership(tmp_path, "6:memory:/docker/abc", "3:cpu,cpuacct:/docker/abc")
    assert cgroups.cpu_quota(root, membership) == 3
    _write(root / mount / "docker" / "abc", **{"cpu.cfs_quota_us": "-1"})
    assert cgroups.cpu_quota(root, membership) is None


def test_a_quotas_free_cores_count_the_load_over_the_cores_it_may_run_on(monkeypatch) -> None:
    # a --cpus 2 container on an 8-core host whose other 4 cores are busy: 2 free, not 1 (the
    # host's busy half was taken of the quota's 2)
    monkeypatch.setattr(cgroups, "cpu_quota", lambda: 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    samples = iter([(0.0, 0.0), (400.0, 800.0)])  # (busy, total) jiffies: half of 8 busy
    monkeypatch.setattr(threads, "_cpu_times", lambda cpus: next(samples))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    assert threads.free_cores() == 2
    monkeypatch.setattr(threads, "_cpu_times", lambda cpus: (0.0, 0.0))
    neighbours = threads.Neighbours()
    neighbours.last = (0.0, 0.0, 0.0)
    monkeypatch.setattr(neighbours, "_now", lambda: (30.0, 0.0, 10.0))  # 3 of 8 busy
    assert neighbours.free() == 2


def test_a_cpu_quota_caps_the_cores_a_fit_uses(monkeypatch) -> None:
    cores = threads.usable_cores()
    monkeypatch.setattr(cgroups, "cpu_quota", lambda: 1)
    assert threads.usable_cores() == 1 and threads.free_cores(0.01) == 1
    monkeypatch.setattr(cgroups, "cpu_quota", lambda: 10 ** 6)
    assert threads.usable_cores() == cores


def test_no_home_folder_runs_without_a_calibration_cache(tmp_path: Path, monkeypatch) -> None:
    # a container run as a user id with no account and no HOME (OpenShift's way): Path.home()
    # raises, and every run ended in a traceback before its first step
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setattr(Path, "home", no_home)
    path = save(synthetic(24), tmp_path / "in.png")
    result = CliRunner().invoke(cli, ["denoise", str(path), "-o", str(tmp_path / "o.png"),
                                      "--iters", "2", "--restarts", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o.png").is_file() and estimate._cache_path() is None


@LINUX
def test_a_processs_base_does_not_grow_with_what_its_first_fit_keeps(monkeypatch) -> None:
    # a batch's first fit kept ~200 MB (libraries, caches): counted in every later job's
    # base, it tiled or refused (over --max-memory) the jobs the first's estimate let through
    monkeypatch.setattr(estimate, "_first_resident", [])
    first = estimate.process_bytes()
    kept = bytearray(estimate.FIRST_FIT_BYTES // 2)  # what a first fit keeps, touched
    kept[::4096] = b"x" * len(kept[::4096])
    assert estimate.process_bytes() == first
    more = bytearray(estimate.FIRST_FIT_BYTES)  # and the process grows on: it counts
    more[::4096] = b"x" * len(more[::4096])
    assert estimate.process_bytes() > first + estimate.FIRST_FIT_BYTES // 4
    del kept, more


def test_a_relative_cache_home_is_ignored(tmp_path: Path, monkeypatch) -> None:
    # XDG_CACHE_HOME=cache made a cache folder in whatever folder dip ran in
    monkeypatch.setenv("XDG_CACHE_HOME", "cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    assert estimate._cache_path() == tmp_path / "home" / ".cache" / "dip" / "calibration.json"


def test_a_home_folder_that_does_not_exist_is_not_made(tmp_path: Path, monkeypatch) -> None:
    # HOME=/nonexistent (nobody's, which is not to exist) was made, to hold dip's cache
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "nonexistent"))
    estimate.remember("a key", torch.device("cpu"), 0.5)
    assert estimate._cache_path() is None and not (tmp_path / "nonexistent").exists()


def test_the_calibration_cache_keeps_the_rates_written_last(tmp_path: Path,
                                                             monkeypatch) -> None:
    # a key per picture size, threads, network ...: it grew for ever, read and written whole
    # by every run
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(estimate, "CACHE_MOST", 3)
    cpu = torch.device("cpu")
    for size in (16, 24, 32, 16, 48):  # 16 again: the newest, kept
        estimate.remember(f"{size} px", cpu, size / 1000)
    kept = json.loads((tmp_path / "dip" / "calibration.json").read_text())
    assert [key.split("|")[-1] for key in kept] == ["32 px", "16 px", "48 px"]


def test_cgroup_v1_a_limiting_parent_counts_its_other_childrens_usage(tmp_path: Path) -> None:
    # two steps of one cluster job under the job's 4 GB: the other step's 2.5 GB counts
    root = tmp_path / "fs"
    unlimited = str(9223372036854771712)
    _write(root / "memory" / "job", memory_limit_in_bytes=str(4 * GB),
           memory_usage_in_bytes=str(3 * GB), memory_stat="total_inactive_file 0\n")
    _write(root / "memory" / "job" / "step1", memory_limit_in_bytes=unlimited,
           memory_usage_in_bytes=str(GB // 2),
           memory_stat=f"hierarchical_memory_limit {4 * GB}\ntotal_inactive_file 0\n")
    membership = _membership(tmp_path, "4:memory:/job/step1")
    assert cgroups.memory_headroom(root, membership) == GB


def test_a_group_that_cannot_be_read_is_skipped_not_every_limit(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    _write(root, **{"cgroup.controllers": "cpu memory"})
    _write(root / "job", **{"cpu.max": "200000 100000", "memory.max": str(2 * GB),
                            "memory.current": str(GB), "memory.stat": "inactive_file 0\n"})
    _write(root / "job" / "step", **{"cpu.max": "garbled", "memory.max": "x",
                                     "memory.current": "0",
                                     "memory.stat": "a line without a value\ninactive_file 5\n"})
    membership = _membership(tmp_path, "0::/job/step")
    assert cgroups.cpu_quota(root, membership) == 2
    assert cgroups.memory_headroom(root, membership) == GB


def test_a_v1_controller_listed_but_not_mounted_reads_v2(tmp_path: Path) -> None:
    root = tmp_path / "fs"
    _write(root, **{"cgroup.controllers": "memory", "memory.max": str(GB),
                    "memory.current": "0", "memory.stat": ""})
    membership = _membership(tmp_path, "4:memory:/gone", "0::/")
    assert cgroups.memory_headroom(root, membership) == GB


# --- macOS and Windows: no /proc, no sched_getaffinity -----------------------------------------

def _times(**fields: float):
    return collections.namedtuple("scputimes", fields)(**fields)


def test_without_proc_the_cores_load_is_read_through_psutil(monkeypatch) -> None:
    # a Mac or a Windows machine has no /proc/stat: the load was taken as nil, so a fit chose
    # every core beside a busy process (2.6-16x slower than one thread, benchmarks/README.md)
    import psutil

    def no_proc(cpus):
        raise OSError("no /proc/stat")

    monkeypatch.setattr(threads, "_proc_stat_times", no_proc)
    monkeypatch.setattr(threads, "_affinity", lambda: {0, 1})
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)
    mac = iter([[_times(user=0, nice=0, system=0, idle=0)] * 2,
                # core 0 busy the whole second (user and nice), core 1 idle
                [_times(user=0.7, nice=0.3, system=0, idle=0), _times(user=0, nice=0,
                                                                      system=0, idle=1)]])
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu: next(mac))
    assert threads.free_cores() == 1
    # Windows' interrupt and DPC times are within its system time: not counted twice
    windows = iter([[_times(user=0, system=0, idle=0, interrupt=0, dpc=0)] * 2,
                    [_times(user=0, system=0.1, idle=0.9, interrupt=0.05, dpc=0.05)] * 2])
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu: next(windows))
    assert threads.free_cores() == 2
    monkeypatch.setattr(psutil, "cpu_times", lambda percpu: [
        _times(user=5, system=0.1, idle=0.9, interrupt=0.05, dpc=0.05)] * 2)
    assert threads._cpu_times({1}) == pytest.approx((5.1, 6.0))


def test_without_sched_getaffinity_the_cpus_are_psutils_or_all(monkeypatch) -> None:
    import psutil

    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(psutil.Process, "cpu_affinity", lambda self: [0, 2], raising=False)
    assert threads._affinity() == {0, 2}  # Windows: the process's affinity, through psutil

    def unsupported(self):
        raise AttributeError("cpu_affinity")

    monkeypatch.setattr(psutil.Process, "cpu_affinity", unsupported, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 10)
    assert threads._affinity() == set(range(10))  # macOS: none, so every CPU


@LINUX
def test_psutils_memory_figures_are_linuxs_own() -> None:
    # psutil reads the same counters dip read from /proc before, and reads them on a Mac too
    meminfo = dict(line.split(":") for line in Path("/proc/meminfo").read_text().splitlines())
    available = int(meminfo["MemAvailable"].split()[0]) * 1024
    assert estimate._mem_available() == pytest.approx(available, rel=0.05)
    pages = [int(v) * os.sysconf("SC_PAGE_SIZE") for v in
             Path("/proc/self/statm").read_text().split()[:2]]
    assert estimate._own_memory("vms") == pytest.approx(pages[0], rel=0.05)
    assert estimate._own_memory("rss") == pytest.approx(pages[1], rel=0.05)


def test_apples_gpu_holds_no_more_than_metal_recommends(monkeypatch) -> None:
    # mps shares the machine's memory; there was no budget at all (every run whole)
    monkeypatch.setattr(estimate, "_own_memory", lambda kind: GB // 2)
    monkeypatch.setattr(estimate, "_mem_available", lambda: 20 * GB)
    monkeypatch.setattr(cgroups, "memory_headroom", lambda: None)
    monkeypatch.setattr(estimate, "_address_space_headroom", lambda: None)
    monkeypatch.setattr(torch.mps, "recommended_max_memory", lambda: 12 * GB, raising=False)
    monkeypatch.setattr(torch.mps, "driver_allocated_memory", lambda: 4 * GB, raising=False)
    mps = torch.device("mps")
    assert estimate.free_bytes(mps) == 8 * GB + GB // 2
    assert estimate.free_bytes(torch.device("cpu")) == 20 * GB + GB // 2
    monkeypatch.setattr(estimate, "_mem_available", lambda: 2 * GB)  # the machine is the less
    assert estimate.free_bytes(mps) == 2 * GB + GB // 2

    def older_torch():
        raise AttributeError("recommended_max_memory")

    monkeypatch.setattr(torch.mps, "recommended_max_memory", older_torch, raising=False)
    assert estimate.free_bytes(mps) == 2 * GB + GB // 2


def test_a_macs_usable_cores_are_itsperformance_cores(monkeypatch) -> None:
    # an M-series Mac with 4 performance and 4 efficiency cores: a parallel region split in
    # 8 equal parts waits for the 4 an efficiency core runs slowly
    import ctypes
    import sys

    class Libc:
        def __init__(self, answer: int | None) -> None:
            self.answer = answer

        def sysctlbyname(self, name, value, size, new, new_size) -> int:
            assert name == b"hw.perflevel0.logicalcpu"
            if self.answer is None:  # an Intel Mac has no such key
                return -1
            ctypes.cast(value, ctypes.POINTER(ctypes.c_int)).contents.value = self.answer
            return 0

    monkeypatch.setattr(threads, "_affinity", lambda: set(range(8)))
    monkeypatch.setattr(cgroups, "cpu_quota", lambda: None)
    assert threads.usable_cores() == 8  # Linux: no such cores to count
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc(4))
    assert threads.usable_cores() == 4
    monkeypatch.setattr(ctypes, "CDLL", lambda name: Libc(None))
    assert threads.usable_cores() == 8


@pytest.mark.parametrize("cached", [float("nan"), float("inf"), -1.0, 0.0, True, 1e308])
def test_a_cached_rate_no_step_takes_is_measured_again(monkeypatch, cached: float) -> None:
    # a NaN in the cache (json writes and reads it) ended every run in a traceback from the
    # estimate's round(nan); infinity said "about inf days"
    import torch

    monkeypatch.setattr(estimate, "_read_cache", lambda: {"k": cached})
    monkeypatch.setattr(estimate, "_full_key", lambda key, device: key)
    monkeypatch.setattr(estimate, "remember", lambda *args: None)
    assert estimate.calibrate("k", torch.device("cpu"), lambda n: 0.25) == 0.25
    monkeypatch.setattr(estimate, "_read_cache", lambda: {"k": 0.5})
    assert estimate.calibrate("k", torch.device("cpu"), lambda n: 0.25) == 0.5


def test_omp_num_threads_is_the_threads_auto_takes(monkeypatch) -> None:
    # the usual way to fix torch's threads was ignored: a fit alone took the free cores,
    # and its image followed the machine's load
    from dip import threads

    assert threads.environment_threads({"OMP_NUM_THREADS": "3"}) == 3
    assert threads.environment_threads({"OMP_NUM_THREADS": "4,2"}) == 4
    for unset in ({}, {"OMP_NUM_THREADS": ""}, {"OMP_NUM_THREADS": "0"},
                  {"OMP_NUM_THREADS": "many"}, {"OMP_NUM_THREADS": "10000000"}):
        assert threads.environment_threads(unset) is None
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.setattr(threads, "free_cores", lambda: 2)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    assert threads.resolve_threads("auto", 1) == 3  # a fit alone: as the variable says
    assert threads.resolve_threads("auto", 4) == 8  # members: one thread each, side by side
    assert threads.resolve_threads("2", 1) == 2  # the config's own number wins
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert threads.resolve_threads("auto", 1) == 2
