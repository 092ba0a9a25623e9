"""Optimizers whose step takes each group's learning rate as a 0-d device tensor, for the captured step
(graph.py): SGD (with momentum / Nesterov), Adam, AdamW here; Muon (muon.py: its other groups step by
`sgd_update`) and SLBI / SLBI-Adam (slbi.py: the Adam part is torch's functional Adam) likewise.

A captured step cannot read a Python float that changes (the schedule's lr would be baked into the
graph), nor read a tensor back to the host. So for the step only, each group's "lr" is a view of a
device tensor (`lrs_from`); the groups keep their float lrs otherwise. The host scheduler then works
in float64 as in an eager run (with tensor lrs torch's chainable schedules would compound float32
rounding on the device), and checkpoints and metrics hold torch's usual floats.

- Adam/AdamW are torch's own: capturable (set by lrs_from on CUDA, for the step only, so checkpoints
  hold what they held), they take a tensor lr and keep the step count on the device.
- SGD is one small rule here: torch's SGD applies a tensor lr as `alpha=-lr`, which reads it back to
  the host (every torch from 2.4 on; only its fused kernel takes a tensor, not on every device). Same
  formula (coupled weight decay, dampening, Nesterov), same state and state_dict as torch.optim.SGD.

`tensor_lr` (a class attribute) is what graph.why_not asks; `init_state()` creates, at zero, the state
the first step would create, so a captured step neither allocates it nor branches on it.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor


class TensorLR:
    """Mixin: the optimizer's step takes group["lr"] as a float or as a 0-d device tensor; it has
    init_state()."""

    tensor_lr = True


class GroupSteps:
    """Mixin for cifarlab's own optimizers (SGD, Muon, SLBI): step() is group_step(group) per group,
    then after_step(), the host's work (SLBI's solution path). While `host_deferred` (lrs_from: a step
    that may be captured) step() leaves after_step() to its caller: StepGraph calls it after each step."""

    host_deferred = False

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure_loss(closure)
        for group in self.param_groups:
            self.group_step(group)
        if not self.host_deferred:
            self.after_step()
        return loss

    def after_step(self) -> None:
        pass


@contextlib.contextmanager
def lrs_from(opt: torch.optim.Optimizer, lrs: Tensor | None):
    """Within: group i's lr is lrs[i] (a device tensor; None: the groups' own floats), and step()
    defers its host work (GroupSteps.after_step)."""
    if lrs is None:
        yield
        return
    saved = [(g["lr"], g.get("capturable")) for g in opt.param_groups]
    for g, lr in zip(opt.param_groups, lrs):
        g["lr"] = lr
        if lrs.is_cuda and "capturable" in g:  # torch's Adam takes a tensor lr on CUDA only so
            g["capturable"] = True
    opt.host_deferred = True
    try:
        yield
    finally:
        opt.host_deferred = False
        for g, (lr, capturable) in zip(opt.param_groups, saved):
            g["lr"] = lr
            if capturable is not None:
                g["capturable"] = capturable


def closure_loss(closure) -> Tensor | None:
    """What an optimizer's step(closure) returns: the closure's loss, computed with gradients on."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def add_lr(p: Tensor, d: Tensor, lr: float | Tensor) -> None:
    """p -= lr * d, with no host sync when lr is a tensor."""
    if isinstance(lr, Tensor):
        p.addcmul_(d, lr, value=-1)
    else:
        p.add_(d, alpha=-lr)


def foreach_add_lr(ps: list[Tensor], ds: list[Tensor], lr: float | Tensor) -> None:
    """ps[i] -= lr * ds[i] for every i, with no host sync when lr is a tensor."""
    if isinstance(lr, Tensor):
        torch._foreach_sub_(ps, torch._foreach_mul(ds, lr))
    else:
        torch._foreach_add_(ps, ds, alpha=-lr)


def momentum_direction(state: dict, group: dict, g: Tensor) -> Tensor:
    """torch.optim.SGD's momentum: buf = m * buf + (1 - dampening) * g (buf = g at the first step);
    the direction is buf, or g + m * buf with Nesterov. A zero buffer (init_state) gives that first step."""
    m = group["momentum"]
    if m == 0:
        return g
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = torch.clone(g).detach()
    else:
        buf.mul_(m).add_(g, alpha=1 - group.get("dampening", 0.0))
    return g.add(buf, alpha=m) if group["nesterov"] else buf


def zero_momentum(opt: torch.optim.Optimizer) -> None:
    """The momentum buffers the first step would create, at zero (groups with momentum only)."""
    for group in opt.param_groups:
        if group["momentum"] != 0:
            for p in group["params"]:
                if opt.state[p].get("momentum_buffer") is None:
                    opt.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def sgd_update(opt: torch.optim.Optimizer, group: dict) -> None:
    """One SGD step on a group's parameters that have a gradient (torch's rule; `maximize` unsupported)."""
    lr, wd = group["lr"], group["weight_decay"]
    for p in group["params"]:
        if p.grad is None:
            continue
        g = p.grad.add(p, alpha=wd) if wd else p.grad
        add_lr(p, momentum_direction(opt.state[p], group, g), lr)


class SGD(GroupSteps, TensorLR, torch.optim.SGD):
    """torch.optim.SGD (same arguments, state and state_dict) whose step takes a tensor lr."""

    def init_state(self) -> None:
        zero_momentum(self)

    def group_step(self, group: dict) -> None:
        if group.get("maximize"):
            raise ValueError("cifarlab's SGD does not take maximize=True")
        sgd_update(self, group)


def zero_adam_state(state: dict, group: dict, p: Tensor) -> None:
    """Zero moments and a float step count, as torch's Adam creates them; on CUDA the count lives on
    the device, where the capturable step (lrs_from) computes the bias corrections with no sync."""
    step = torch.as_tensor(state.get("step", 0.0), dtype=torch.float32)
    state["step"] = step.to(p.device) if p.is_cuda else step.cpu()
    for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group.get("amsgrad") else ()):
        state.setdefault(key, torch.zeros_like(p, memory_format=torch.preserve_format))


class _AdamState(TensorLR):
    def init_state(self) -> None:
        # torch warns once when a capturable step runs uncaptured: the warm-up and the epoch's last batch do
        self._warned_capturable_if_run_uncaptured = True
        for group in self.param_groups:
            for p in group["params"]:
                zero_adam_state(self.state[p], group, p)


class Adam(_AdamState, torch.optim.Adam):
    """torch.optim.Adam; with init_state() its step takes a tensor lr."""


class AdamW(_AdamState, torch.optim.AdamW):
    """torch.optim.AdamW; with init_state() its step takes a tensor lr."""
