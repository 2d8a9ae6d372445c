"""Stacks (dip.stack.StackedEngine, perf.stack): K members in one step stay K independent fits.

On the CPU a stack is slower than members side by side (dip.threads), so dip stacks only on
CUDA; these tests force it on (``Perf(stack=True)``) to check the arithmetic on any machine,
and again on CUDA where there is one."""

from __future__ import annotations

import pytest
import torch
from test_group import SETTINGS, SMALL, _Counting, _member, _StopAt

from dip import metrics, operators
from dip.config import PerfConfig
from dip.engine import Perf, resolve_perf
from dip.errors import ConfigError, RunError
from dip.fitting import Settings, fit_group
from dip.stack import Slot, StackedEngine

from conftest import save, synthetic

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _perf(device: str) -> Perf:
    """A stack of eager steps (a wrecked step comes from an operator's Python code, which a
    CUDA graph would not run again; the graph is tested on its own below)."""
    return Perf(keep_cpu_memory=device == "cpu", stack=True)


def _on(member, device: str):
    if device == "cpu":
        return member
    member.net, member.code = member.net.to(device), member.code.to(device)
    member.operator, member.observation = (member.operator.to(device),
                                           member.observation.to(device))
    member.generator = torch.Generator(device=device).manual_seed(member.generator.initial_seed())
    return member


@pytest.mark.parametrize("device", DEVICES)
def test_a_member_in_a_stack_depends_on_no_other_member(device: str) -> None:
    """The same stack shape with a healthy or a wrecked neighbour: bit for bit the same image
    (nothing of the neighbour reaches it); alone on its own engine: the same image up to float
    rounding (a grouped convolution adds in another order)."""
    perf = _perf(device)
    alone, = fit_group([_on(_member(0), device)], SETTINGS, perf=perf)
    spiking = _Counting(bad={5, 6, 12})
    # cuDNN's own choice of kernels may add in a different order from run to run
    with torch.backends.cudnn.flags(enabled=True, deterministic=True, benchmark=False):
        beside_healthy, _ = fit_group([_on(_member(0), device), _on(_member(1), device)],
                                      SETTINGS, perf=perf)
        beside_spiking, b = fit_group([_on(_member(0), device),
                                       _on(_member(1, spiking), device)], SETTINGS, perf=perf)
    if device == "cpu":
        assert torch.equal(beside_healthy.image, beside_spiking.image)
    else:  # CUDA's bilinear upsampling adds its gradients atomically, in any order
        assert metrics.psnr(beside_healthy.image, beside_spiking.image) > 45
    assert b.history["restores"] == [5, 5, 10]  # its steps 5 (twice) and 10 were undone
    assert beside_spiking.history["restores"] == []
    assert torch.isfinite(b.image).all() and b.iterations == 25
    assert metrics.psnr(beside_healthy.image, alone.image) > 45


def test_a_member_that_cannot_recover_ends_alone_and_the_stack_goes_on() -> None:
    a, b = fit_group([_member(0), _member(1, _Counting(always=True))], SETTINGS,
                     perf=_perf("cpu"))
    assert isinstance(b, RunError) and "diverged" in str(b)
    assert a.iterations == 25 and torch.isfinite(a.image).all()


def test_stopped_members_leave_the_stack_and_waiting_ones_take_their_rows() -> None:
    """Four members, two rows: each member keeps its own stop, the rows are packed again as
    members finish, and a member carried into a new stack goes on from where it was (the
    same image as a stack that never changed)."""
    early, late = _Counting(), _Counting()
    results = fit_group([_member(0, early, _StopAt(5)), _member(1, late, _StopAt(12)),
                         _member(2), _member(3, stop_rule=_StopAt(7))], SETTINGS,
                        perf=_perf("cpu"), at_once=2)
    assert [(r.iterations, r.stop_reason) for r in results] == [
        (5, "auto"), (12, "auto"), (25, "budget"), (7, "auto")]
    assert (early.calls, late.calls) == (5, 12)  # a finished member's row is not stepped
    # member 1 went from a stack with member 0 into one with member 2 at step 5
    pair = fit_group([_member(1, stop_rule=_StopAt(12)), _member(4)], SETTINGS,
                     perf=_perf("cpu"))
    assert metrics.psnr(results[1].image, pair[0].image) > 45


def test_a_stack_needs_one_shape_and_other_shapes_wait_their_turn(monkeypatch) -> None:
    """Members of other sizes, or of a network that differs only in what its weights do not
    show (upsampling, padding, activation), never share a stack: they wait and make stacks of
    their own, one per shape however the members are ordered."""
    from dip import fitting
    from dip.nets import build_net
    from dip.stack import signature

    small, large = _member(0, size=32), _member(1, size=64)
    with pytest.raises(ValueError, match="same shape"):
        StackedEngine([Slot(m.net, m.code, m.operator, m.observation) for m in (small, large)],
                      [0.01, 0.01], perturb_std=0.0)
    for option in ({"upsample": "nearest"}, {"padding": "zero"}, {"activation": "relu"}):
        other = build_net("skip", 8, 3, **{**SMALL, **option})
        assert signature(other, small.code) != signature(small.net, small.code), option
    stacks: list[int] = []

    class Counting(StackedEngine):
        def __init__(self, slots, *args, **kwargs) -> None:
            stacks.append(len(slots))
            super().__init__(slots, *args, **kwargs)

    monkeypatch.setattr(fitting, "StackedEngine", Counting)
    sizes = [32, 64, 32, 64, 32]
    results = fit_group([_member(i, size=n) for i, n in enumerate(sizes)], Settings(iters=4),
                        perf=_perf("cpu"), at_once=3)
    assert [r.image.shape[-1] for r in results] == sizes
    assert stacks == [3, 2]  # the three of 32 px, then the two of 64 px


def test_ctrl_c_in_a_stack_keeps_every_members_estimate_when_asked() -> None:
    def interrupt(i: int, p) -> None:
        if p.step == 4:
            raise KeyboardInterrupt

    results = fit_group([_member(0), _member(1)], SETTINGS, perf=_perf("cpu"),
                        callback=interrupt, keep_on_interrupt=True)
    assert all(r.stop_reason == "interrupted" and r.iterations < 25 for r in results)
    with pytest.raises(KeyboardInterrupt):
        fit_group([_member(0), _member(1)], SETTINGS, perf=_perf("cpu"), callback=interrupt)


def test_a_stacks_adam_is_torchs_adam_row_by_row() -> None:
    """One member's slice of the stack's Adam against torch.optim.Adam on the same gradients,
    each member at its own rate."""
    torch.manual_seed(0)
    stack = StackedEngine([Slot(torch.nn.Linear(2, 1), torch.zeros(1, 2),
                                operators.Identity(), torch.zeros(1, 1)) for _ in range(2)],
                          [0.01, 0.003], perturb_std=0.0, checkpoint=False)
    mine = [w[1].detach().clone().requires_grad_(True) for w in stack.weights]
    adam = torch.optim.Adam(mine, lr=0.003)
    for step in range(5):
        grads = [torch.randn_like(w) for w in stack.weights]
        stack._adam(grads)
        for p, g in zip(mine, grads):
            p.grad = g[1].clone()
        adam.step()
        for w, p in zip(stack.weights, mine):
            assert torch.allclose(w[1], p, atol=1e-7), step


def test_perf_stack_is_on_for_cuda_off_on_the_cpu_and_refuses_channels_last() -> None:
    assert not resolve_perf(PerfConfig(), torch.device("cpu")).stack
    assert resolve_perf(PerfConfig(stack="on"), torch.device("cpu")).stack
    with pytest.raises(ConfigError, match="perf.stack"):
        resolve_perf(PerfConfig(stack="sometimes"), torch.device("cpu"))
    with pytest.raises(ConfigError, match="channels_last"):
        resolve_perf(PerfConfig(stack="on", channels_last="on"), torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_stack_denoises_as_well_as_its_members_alone() -> None:
    """Three restarts on CUDA, stacked and replayed as a graph, against each alone on its own
    CUDA-graph engine: the same quality and nearly the same images."""
    clean = synthetic(48).cuda()
    perf = resolve_perf(PerfConfig(), torch.device("cuda"))
    assert perf.stack and perf.graphs

    def member(seed: int):
        m = _on(_member(seed, size=48), "cuda")
        m.observation = (clean + 0.1 * torch.randn(clean.shape, device="cuda",
                                                   generator=torch.Generator("cuda")
                                                   .manual_seed(7))).clamp(0, 1)
        m.operator = operators.Identity().cuda()
        return m

    settings = Settings(iters=150, average=0.9)
    stacked = fit_group([member(s) for s in range(3)], settings, perf=perf)
    for seed, together in enumerate(stacked):
        alone, = fit_group([member(seed)], settings, perf=perf)
        assert abs(metrics.psnr(together.image, clean) - metrics.psnr(alone.image, clean)) < 0.3
        assert metrics.psnr(together.image, alone.image) > 30


@pytest.mark.parametrize("budget_gb, stacked_most", [(64.0, True), (None, False)])
def test_an_accelerator_stacks_as_many_tiles_as_its_memory_holds(
        tmp_path, monkeypatch, budget_gb, stacked_most) -> None:
    """On CUDA (here a pretend one: its free memory is the test's) the tiles of a large photo
    go in stacks of up to STACK_MOST, fewer when the memory budget is smaller, and the
    estimated peak counts every member of a stack as computing at once."""
    from dip import estimate, layout, run
    from dip.request import RunRequest

    picture = save(synthetic(256), tmp_path / "big.png")
    request = RunRequest(task="denoise", device="cpu", input=picture, write=False, restarts=1,
                         overrides=("tile.size=64", "net.channels_down=[8,8,8,8,8]",
                                    "net.channels_up=[8,8,8,8,8]"))
    p = run.plan(request)
    loaded = run.load(p)
    problem = p.task.problem(loaded.inputs, p.cfg)
    monkeypatch.setattr(estimate, "free_bytes", lambda device: 100 * 2 ** 30)
    monkeypatch.setattr(estimate, "process_bytes", lambda: 2 ** 30)
    cuda = torch.device("cuda")
    lone = layout.plan_layout(p.cfg, problem, 3, cuda, lambda t: p.task.solved(t, p.args))
    assert (lone.at_once, lone.stacked) == (layout.GPU_AT_ONCE, False)
    if budget_gb is None:  # a budget that holds a stack of three, not of four

        def stack(n: int) -> int:
            return layout.peak_bytes(p.cfg, problem, 3, (64, 64), n, n,
                                     layout.STACK_STEP_MEMORY)

        budget_gb = (stack(3) + stack(4)) / 2 / 2 ** 30
    p.cfg.perf.max_memory = budget_gb
    stacked = layout.plan_layout(p.cfg, problem, 3, cuda, lambda t: p.task.solved(t, p.args),
                                  stack=True)
    assert len(stacked.parts) == 25 and stacked.stacked
    if stacked_most:
        assert stacked.at_once == layout.STACK_MOST
    else:
        assert stacked.at_once == 3
    assert stacked.peak_bytes <= stacked.budget
    assert layout.side_by_side(stacked) == stacked.at_once
    assert stacked.peak_bytes > lone.peak_bytes  # its members compute at once
    assert stacked.packed_bytes == stacked.peak_bytes  # in a pack, the same stack


def test_a_step_leaves_no_autograd_history_in_the_stacks_state() -> None:
    """The snapshots the guard keeps are plain copies: one tied to the step's autograd graph
    would keep the graph alive into the next step (memory, and a CUDA graph's capture fails
    on a gradient node kept from the eager steps before it)."""
    members = [_member(0), _member(1)]
    stack = StackedEngine([Slot(m.net, m.code, m.operator, m.observation, None, m.generator)
                           for m in members], [0.01, 0.01], perturb_std=1 / 30)
    for _ in range(2):
        stack.step()
        stack.commit()
    assert all(t.grad_fn is None for snapshot in stack.snapshots for t in snapshot)
    assert all(w.is_leaf for w in stack.weights)
    assert stack.out.grad_fn is None and stack.losses.grad_fn is None


def test_a_stack_forced_on_the_cpu_is_laid_out_and_timed_as_a_stack(tmp_path) -> None:
    """perf.stack=on on the CPU: one stack on every thread, and its rate cached apart from
    the rate of members side by side (so a default run's estimate is not misled by it)."""
    from dip import layout, run
    from dip.request import RunRequest

    picture = save(synthetic(96), tmp_path / "photo.png")

    def setup(*overrides: str):
        request = RunRequest(task="denoise", device="cpu", input=picture, write=False,
                             restarts=1,
                             overrides=("tile.size=64", "noise.objective=mse",  # 1 pass a step
                                        "net.channels_down=[8,8,8,8,8]",
                                        "net.channels_up=[8,8,8,8,8]", *overrides))
        p = run.plan(request)
        s = run.build(p, run.load(p))
        return p, s

    p, stacked = setup("perf.stack=on")
    _, side_by_side = setup()
    assert stacked.perf.stack and stacked.layout.stacked
    assert stacked.layout.at_once == len(stacked.layout.parts) == 4
    assert not side_by_side.perf.stack and not side_by_side.layout.stacked
    key = layout.calibration_key(p.cfg, stacked.problem, stacked.layout, 3, (64, 64))
    assert "stacked" in key
    assert key != layout.calibration_key(p.cfg, side_by_side.problem, side_by_side.layout, 3,
                                           (64, 64))
