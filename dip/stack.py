"""Many members' steps as ONE step: K generators of the same shape fitted side by side.

A 128 px fit of the paper's network is far too little work for a GPU: one step is hundreds of
small kernels, and even replayed as a CUDA graph (:class:`dip.engine.StepEngine`) it leaves
most of the chip idle. :class:`StackedEngine` fits K members in one set of kernels: each of
their weights is stacked into one ``(K, ...)`` tensor, the network runs under
``torch.func.vmap`` over them (each convolution becomes one grouped convolution with a group
per member, each BatchNorm a per-member channel block), and Adam updates every member's
weights in the same elementwise kernels. The members stay independent -- no member's
arithmetic reads another's weights, activations or loss:

- the loss is the sum of the members' own losses, so each member's gradient is its own;
- BatchNorm normalises each member's channels over its own pixels (batch 1, as alone);
- Adam is elementwise, with a learning rate and a step count per member (the divergence
  guard halves one member's rate without touching the others';
  :class:`dip.fitting.Guard`);
- the guard's undo is per member: a rejected member's slice (row ``k`` of every stacked
  tensor) is put back from its snapshot.

A member's image alone (:class:`dip.engine.StepEngine`) and in a stack agree up to float
rounding: a grouped convolution adds the same products in another order.

BatchNorm's running statistics are not kept: the paper's generator always normalises with the
batch's own statistics (``train()``), so they never reach an output.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call, replace_all_batch_norm_modules_, vmap

from dip.engine import GRAPH_WARMUP, Perf, mse, on_side_stream
from dip.errors import outside_dip

#: Adam's constants (torch.optim.Adam's defaults, which StepEngine uses)
BETAS, EPS = (0.9, 0.999), 1e-8


@dataclass
class Carried:
    """One member's optimisation state, taken out of a stack to go into the next one: its
    slice of each state tensor (weights, Adam's moments, Adam's step), now and as last
    accepted by the guard."""

    now: list[torch.Tensor]
    good: list[torch.Tensor]


@dataclass
class Slot:
    """What a stack needs of one member: its network (weights to start from, when nothing is
    ``carried``), code, corruption, observation, loss and perturbation source."""

    net: nn.Module
    code: torch.Tensor
    operator: nn.Module
    observation: torch.Tensor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None  # None: mse
    generator: torch.Generator | None = None
    carried: Carried | None = None


def signature(net: nn.Module, code: torch.Tensor) -> tuple:
    """Members with the same signature can share a stack: the same network (its structure as
    its repr shows it -- padding, activations, upsampling -- and its weights' names and
    shapes), the same code shape, dtype and device."""
    return (repr(net), tuple((name, tuple(p.shape)) for name, p in net.named_parameters()),
            tuple(code.shape), code.dtype, str(code.device))


class StackedEngine:
    """Runs one step for every member of a stack (see the module docstring).

    ``step()`` returns the members' outputs ``(K, 1, C, H, W)`` and losses ``(K,)`` (the loss
    of the weights each started the step from); ``accept(k)`` / ``reject(k)`` record the
    guard's verdict on member k, and ``commit()`` applies them all: an accepted member's
    starting state becomes its last good one, a rejected member gets its last good state
    back (weights and Adam's moments).

    Args:
        slots: the members, all of one :func:`signature`.
        rates: each member's learning rate to start with.
        perturb_std: std of each code's Gaussian perturbation at each step.
        perf: how to run (:func:`dip.engine.resolve_perf`): a CUDA graph, bfloat16 autocast.
        checkpoint: keep the snapshots ``reject`` needs (the divergence guard).
        warmup: eager steps before a CUDA graph is captured; they are real steps.
    """

    def __init__(self, slots: Sequence[Slot], rates: Sequence[float], *, perturb_std: float,
                 perf: Perf = Perf(), checkpoint: bool = True,
                 warmup: int = GRAPH_WARMUP) -> None:
        if not slots:
            raise ValueError("a stack needs at least one member")
        first = slots[0]
        shape = signature(first.net, first.code)
        for s in slots[1:]:
            if signature(s.net, s.code) != shape:
                raise ValueError("the members of a stack need the same network (structure "
                                 "and weights of the same shape) and codes of the same shape")
        self.k, self.perf = len(slots), perf
        self.slots = list(slots)
        device = first.code.device
        # the network's structure only: the weights come from the stack at each call
        self.template = copy.deepcopy(first.net).to("meta")
        replace_all_batch_norm_modules_(self.template)
        self.template.train()
        k = self.k
        # each weight stacked over the members, (K, *shape): a leaf of its own, as a network's
        # weights are
        self.names = [name for name, _ in first.net.named_parameters()]
        weights = [dict(s.net.named_parameters()) for s in slots]
        with torch.no_grad():
            self.weights = [torch.stack([w[name].detach() for w in weights]).requires_grad_(True)
                            for name in self.names]
        self.m = [torch.zeros_like(w) for w in self.weights]
        self.v = [torch.zeros_like(w) for w in self.weights]
        self.t = torch.zeros(k, 1, dtype=torch.float32, device=device)  # Adam's step count
        self.lr = torch.tensor([[float(r)] for r in rates], dtype=torch.float32, device=device)
        self._rates = [float(r) for r in rates]
        self.state = [*self.weights, *self.m, *self.v, self.t]
        self.checkpoint = checkpoint
        # two snapshots of the state, as StepEngine: the state this step started from, and
        # the last one the guard accepted
        self.snapshots = ([[t.detach().clone() for t in self.state] for _ in range(2)]
                          if checkpoint else None)
        self.good = 0
        with torch.no_grad():
            for i, s in enumerate(slots):
                if s.carried is not None:
                    for target, value in zip(self.state, s.carried.now):
                        target[i].copy_(value)
                    if self.snapshots is not None:
                        for target, value in zip(self.snapshots[self.good], s.carried.good):
                            target[i].copy_(value)
        self.codes = torch.stack([s.code for s in slots])  # (K, 1, C_z, H, W)
        self.noise = torch.empty_like(self.codes)
        self.input = torch.empty_like(self.codes)
        self.perturb_std = perturb_std
        self.verdicts: dict[int, bool] = {}
        self.graph: torch.cuda.CUDAGraph | None = None
        self.graphs = perf.graphs
        self.warmup = warmup if perf.graphs else 0
        self.steps = 0
        self.out: torch.Tensor | None = None
        self.losses: torch.Tensor | None = None

    # --- the step ---------------------------------------------------------------------------

    def _draw_input(self) -> None:
        if self.perturb_std <= 0:
            self.input.copy_(self.codes)
            return
        # each member draws from its own generator, exactly as it would alone
        for i, s in enumerate(self.slots):
            self.noise[i].normal_(generator=s.generator)
        torch.add(self.codes, self.noise, alpha=self.perturb_std, out=self.input)

    def _call(self, weights: dict[str, torch.Tensor], code: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template, weights, (code,))

    def _forward_backward(self) -> tuple[torch.Tensor, torch.Tensor]:
        autocast = (torch.autocast(self.input.device.type, dtype=self.perf.autocast,
                                   cache_enabled=False)
                    if self.perf.autocast is not None else contextlib.nullcontext())
        with autocast:
            out = vmap(self._call)(dict(zip(self.names, self.weights)), self.input)
        out = out.float()
        # each member's own loss; their sum gives each member exactly its own gradient
        losses = torch.stack([(s.loss or mse)(s.operator(out[i]), s.observation)
                              for i, s in enumerate(self.slots)])
        grads = torch.autograd.grad(losses.sum(), self.weights)
        self._adam(grads)
        return out.detach(), losses.detach()

    @torch.no_grad()
    def _adam(self, grads: Sequence[torch.Tensor]) -> None:
        """Adam (Kingma & Ba, ICLR 2015, Algorithm 1; torch.optim.Adam's arithmetic) on every
        member's weights at once, with a rate and a step count per member."""
        b1, b2 = BETAS
        self.t.add_(1)
        torch._foreach_lerp_(self.m, list(grads), 1 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, list(grads), list(grads), value=1 - b2)
        step_size = self.lr / (1 - b1 ** self.t)  # (K, 1)
        root = (1 - b2 ** self.t).sqrt()
        for w, m, v in zip(self.weights, self.m, self.v):
            per_member = (self.k,) + (1,) * (w.dim() - 1)
            denom = (v.sqrt() / root.view(per_member)).add_(EPS)
            w.sub_(step_size.view(per_member) * m / denom)

    def step(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of every member; returns ``(outputs, losses)``, both overwritten by the
        next step."""
        if self.snapshots is not None:
            with torch.no_grad():  # a copy in grad mode would tie the snapshot to autograd
                torch._foreach_copy_(self.snapshots[1 - self.good], self.state)
        self._draw_input()
        if not self.graphs:
            self.out, self.losses = self._forward_backward()
        elif self.steps < self.warmup:
            self.out, self.losses = on_side_stream(self._forward_backward)
        else:
            if self.graph is None:
                self._capture()
            if self.graph is not None:
                self.graph.replay()
            else:
                self.out, self.losses = self._forward_backward()
        self.steps += 1
        return self.out, self.losses

    def _capture(self) -> None:
        """Record one whole step as a CUDA graph; a step that cannot be captured runs eagerly
        from then on (the same arithmetic, slower), with a warning."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                out, losses = self._forward_backward()
        except torch.cuda.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            warnings.warn(f"a stack's step could not be captured as a CUDA graph ({exc}); "
                          f"its steps run eagerly", stacklevel=outside_dip())
            self.graphs = False
            torch.cuda.synchronize()
            return
        self.graph, self.out, self.losses = graph, out, losses

    def set_rates(self, rates: Sequence[float]) -> None:
        """Each member's learning rate from the next step on (a tensor on the device: a
        captured graph reads the new rates, nothing is captured again)."""
        rates = [float(r) for r in rates]
        if rates != self._rates:
            self._rates = rates
            self.lr.copy_(torch.tensor(rates, dtype=self.lr.dtype).view(-1, 1))

    # --- the guard's verdicts ----------------------------------------------------------------

    def accept(self, i: int) -> None:
        self.verdicts[i] = True

    def reject(self, i: int) -> None:
        if self.snapshots is None:
            raise RuntimeError("reject() needs checkpoint=True")
        self.verdicts[i] = False

    @torch.no_grad()
    def commit(self) -> None:
        """Apply this step's verdicts (a member without one -- it has finished -- counts as
        accepted: its row no longer matters)."""
        verdicts, self.verdicts = self.verdicts, {}
        if self.snapshots is None:
            return
        rejected = [i for i, ok in verdicts.items() if not ok]
        if not rejected:  # the usual case: what this step started from is the new good state
            self.good = 1 - self.good
            return
        accepted = [i for i in range(self.k) if i not in rejected]
        good, pending = self.snapshots[self.good], self.snapshots[1 - self.good]
        if accepted:
            idx = torch.tensor(accepted, device=self.t.device)
            for g, p in zip(good, pending):
                g.index_copy_(0, idx, p.index_select(0, idx))
        idx = torch.tensor(rejected, device=self.t.device)
        for now, g in zip(self.state, good):
            now.index_copy_(0, idx, g.index_select(0, idx))

    def carry(self, i: int) -> Carried:
        """Member ``i``'s state, to go on in another stack (after :meth:`commit`)."""
        with torch.no_grad():
            now = [t[i].detach().clone() for t in self.state]
            good = ([t[i].clone() for t in self.snapshots[self.good]]
                    if self.snapshots is not None else now)
        return Carried(now, good)
