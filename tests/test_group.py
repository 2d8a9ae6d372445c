"""Many fits in one step (dip.fitting.fit_group): members are independent, each keeps its own
guard and stop, a finished member stops costing, and the threads cannot change a result."""

from __future__ import annotations

import pytest
import torch

from dip import operators
from dip.errors import RunError
from dip.fitting import Member, Settings, fit_group
from dip.inputs import make_code
from dip.nets import build_net
from dip.stopping import StopRule
from dip.threads import Lanes, plan_lanes

from conftest import synthetic

SMALL = dict(channels_down=[8, 8, 8], channels_up=[8, 8, 8], channels_skip=[2, 2, 2])


def _member(seed: int, operator: torch.nn.Module | None = None, stop_rule=None,
            size: int = 32) -> Member:
    torch.manual_seed(seed)
    net = build_net("skip", 8, 3, **SMALL)
    g = torch.Generator().manual_seed(seed)
    code = make_code("noise", 8, (size, size), 0.1, g)
    noisy = (synthetic(size) + 0.1 * torch.randn(1, 3, size, size,
                                                generator=torch.Generator().manual_seed(seed)))
    return Member(net, code, operator or operators.Identity(), noisy.clamp(0, 1), g, stop_rule)


class _Counting(torch.nn.Module):
    """The identity, counting its calls; NaN on the chosen ones (a wrecked step)."""

    def __init__(self, bad: set[int] | None = None, always: bool = False) -> None:
        super().__init__()
        self.calls, self.bad, self.always = 0, bad or set(), always

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x * float("nan") if self.always or self.calls in self.bad else x


class _StopAt(StopRule):
    name = "auto"

    def __init__(self, at: int) -> None:
        self.at = at

    def update(self, step, output, estimate) -> bool:
        return step >= self.at


SETTINGS = Settings(iters=25)


def test_a_member_alone_and_beside_others_returns_the_same_image() -> None:
    alone, = fit_group([_member(1)], SETTINGS, threads=1)
    together = fit_group([_member(0), _member(1), _member(2)], SETTINGS, threads=2)
    assert torch.equal(alone.image, together[1].image)
    assert not torch.equal(together[0].image, together[1].image)  # other seeds, other fits


def test_a_diverging_member_is_restored_without_touching_the_others() -> None:
    alone, = fit_group([_member(0)], SETTINGS, threads=1)
    spiking = _Counting(bad={5, 6, 12})
    a, b = fit_group([_member(0), _member(1, spiking)], SETTINGS, threads=2)
    assert b.history["restores"] == [5, 5, 10]  # its steps 5 (twice) and 10 were undone
    assert b.iterations == 25 and torch.isfinite(b.image).all()
    assert a.history["restores"] == [] and torch.equal(a.image, alone.image)


def test_a_member_that_cannot_recover_ends_alone_and_the_others_finish() -> None:
    a, b = fit_group([_member(0), _member(1, _Counting(always=True))], SETTINGS, threads=2)
    assert isinstance(b, RunError) and "diverged" in str(b)
    assert a.iterations == 25


def test_a_member_that_stopped_stops_costing() -> None:
    early, late = _Counting(), _Counting()
    a, b = fit_group([_member(0, early, _StopAt(5)), _member(1, late)], SETTINGS, threads=2)
    assert (a.iterations, a.stop_reason, b.iterations, b.stop_reason) == (5, "auto", 25,
                                                                          "budget")
    assert (early.calls, late.calls) == (5, 25)  # its network stepped no more after its stop


def test_each_member_reports_its_own_steps_one_callback_at_a_time() -> None:
    seen: dict[int, list[int]] = {0: [], 1: []}
    fit_group([_member(0), _member(1)], Settings(iters=6), threads=2,
              callback=lambda i, p: seen[i].append(p.step))
    assert seen == {0: [1, 2, 3, 4, 5, 6], 1: [1, 2, 3, 4, 5, 6]}


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_keeps_every_members_estimate_when_asked(workers: int) -> None:
    def interrupt(i: int, p) -> None:
        if p.step == 4:
            raise KeyboardInterrupt

    results = fit_group([_member(0), _member(1)], SETTINGS, threads=workers,
                        callback=interrupt, keep_on_interrupt=True)
    assert all(r.stop_reason == "interrupted" and r.iterations < 25 for r in results)
    with pytest.raises(KeyboardInterrupt):
        fit_group([_member(0), _member(1)], SETTINGS, threads=workers, callback=interrupt)


def test_the_threads_do_not_change_a_members_result() -> None:
    """Each member runs on one intra-op thread in a group, whatever the workers: a busy machine
    (fewer workers) gives the same images as an idle one."""
    one = fit_group([_member(0), _member(1)], SETTINGS, threads=1)
    two = fit_group([_member(0), _member(1)], SETTINGS, threads=2)
    assert all(torch.equal(x.image, y.image) for x, y in zip(one, two))


def test_lanes_one_fit_takes_every_thread_a_group_one_thread_per_member() -> None:
    assert plan_lanes(1, 2) == Lanes(workers=1, intra=2)
    assert plan_lanes(3, 2) == Lanes(workers=2, intra=1)
    assert plan_lanes(2, 8) == Lanes(workers=2, intra=1)


def test_members_built_when_their_turn_comes_at_most_at_once_alive() -> None:
    """A large photo's many tiles: built a few at a time, each released when it is done."""
    import gc
    import weakref

    alive: list[weakref.ref] = []
    most = 0

    def factory(seed: int):
        def build() -> Member:
            nonlocal most
            gc.collect()
            most = max(most, sum(r() is not None for r in alive) + 1)
            m = _member(seed)
            alive.append(weakref.ref(m.net))
            return m
        return build

    results = fit_group([factory(s) for s in range(5)], Settings(iters=4), threads=2,
                        at_once=2)
    assert [r.iterations for r in results] == [4] * 5
    assert most <= 2
    eager, = fit_group([_member(3)], Settings(iters=4), threads=1)
    assert torch.equal(results[3].image, eager.image)  # built late, fitted the same


def test_neighbours_count_the_cores_other_processes_keep_busy(monkeypatch) -> None:
    """The cores' busy time minus this process's own: a neighbour busy on one of two cores
    leaves one free; an idle machine leaves both."""
    import os

    from dip import threads

    clock = {"busy": 0.0, "own": 0.0, "now": 0.0}
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    # two cores, whatever this machine has (the load is counted over the affinity's)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threads, "_cpu_times", lambda cpus: (clock["busy"], 0.0))
    monkeypatch.setattr(threads.time, "process_time", lambda: clock["own"])
    monkeypatch.setattr(threads.time, "monotonic", lambda: clock["now"])
    watch = threads.Neighbours()
    clock.update(busy=2.0, own=1.0, now=1.0)  # two cores busy for a second, one of them ours
    assert watch.free() == 1
    clock.update(busy=3.0, own=2.0, now=2.0)  # only ours
    assert watch.free() == 2
    clock["now"] = watch.next_look - 0.1
    assert not watch.due()
    clock["now"] = watch.next_look
    assert watch.due()


def test_a_fit_alone_drops_to_the_free_threads_and_says_so(monkeypatch) -> None:
    """perf.threads auto: when another process takes a core mid-fit, the fit steps on the
    threads left free from the next look on, and its result lists the change."""
    from dip import fitting

    class Busy:
        def due(self) -> bool:
            return True

        def free(self) -> int:
            return 1

    monkeypatch.setattr(fitting, "Neighbours", Busy)
    seen: list[int] = []
    before = torch.get_num_threads()
    result, = fit_group([_member(0)], Settings(iters=5), threads=2, adapt_threads=True,
                        callback=lambda i, p: seen.append(torch.get_num_threads()))
    assert result.thread_changes == [(1, 1)]
    assert seen[0] == 2 and set(seen[1:]) == {1}
    assert torch.get_num_threads() == before  # the process's threads are given back
    still, = fit_group([_member(0)], Settings(iters=5), threads=2)
    assert still.thread_changes == []
