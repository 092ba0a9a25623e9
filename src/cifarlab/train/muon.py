"""Muon (Keller Jordan, 2024) for the hidden weight matrices and conv filters, Nesterov SGD for the rest.

Muon takes the (Nesterov) momentum of a filter bank's gradient, reshaped to a matrix
(out_channels x in*kh*kw), and replaces it by its nearest semi-orthogonal matrix U V^T, computed
with a few Newton-Schulz iterations (bf16 on a GPU): every direction of the update gets the same size,
so rarely-excited directions learn as fast as dominant ones. As in airbench94_muon, each filter
bank is first rescaled to Frobenius norm sqrt(out_channels) (`normalize`), which fixes the
weights' scale (BN follows every conv) and stands in for weight decay.

One torch Optimizer holds both kinds of groups (key "muon"), so the engine's one scheduler,
checkpointing and zero_grad work unchanged. The non-Muon groups step by torch.optim.SGD's rule
(tensor_lr.sgd_update: coupled weight decay, dampening 0, Nesterov when asked). The step takes its
learning rates as floats or as device tensors (the captured step, graph.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .tensor_lr import GroupSteps, TensorLR, add_lr, momentum_direction, sgd_update, zero_momentum


def newton_schulz(g: torch.Tensor, steps: int = 3, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T for g = U S V^T (2-D), by the quintic iteration of Muon.

    Its coefficients maximise the slope at zero, so small singular values grow fast; the result's
    singular values land in roughly [0.7, 1.2] rather than exactly 1, which trains as well."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16() if g.is_cuda else g.float()  # bf16 where matmuls are fast in it (CPUs mostly lack that)
    x = x / (x.norm() + eps)  # top singular value <= 1
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if tall else x


def orthogonalize(g: torch.Tensor, steps: int) -> torch.Tensor:
    """steps > 0: Newton-Schulz; steps == 0: the exact U V^T by SVD (slow; for checks)."""
    if steps > 0:
        return newton_schulz(g, steps)
    u, _, vh = torch.linalg.svd(g.float(), full_matrices=False)
    return u @ vh


class Muon(GroupSteps, TensorLR, torch.optim.Optimizer):
    """Groups with muon=True: Muon on each parameter (ndim >= 2); the others: SGD with momentum."""

    def __init__(
        self,
        params,
        lr: float = 0.02,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 0.0,
        muon: bool = True,
        ns_steps: int = 3,
        normalize: bool = True,
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            muon=muon,
            ns_steps=ns_steps,
            normalize=normalize,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ValueError("Muon groups take matrices and filters only (ndim >= 2)")
        self._orthogonalize: Callable = orthogonalize

    def compile_step(self) -> None:
        """Compile the Newton-Schulz iteration (worth it on a GPU; the engine does it under train.compile)."""
        self._orthogonalize = torch.compile(orthogonalize)

    def init_state(self) -> None:
        zero_momentum(self)

    def group_step(self, group: dict) -> None:
        if group["muon"]:
            self._muon_step(group)
        else:
            sgd_update(self, group)

    def _muon_step(self, group: dict) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            g = momentum_direction(self.state[p], group, p.grad)
            if group["normalize"]:
                p.mul_(p.shape[0] ** 0.5 / p.norm())
            elif wd:
                p.mul_(1 - lr * wd)  # decoupled: the update's size is fixed, decay acts on the weight
            update = self._orthogonalize(g.reshape(len(g), -1), group["ns_steps"]).view_as(p)
            add_lr(p, update.to(p.dtype), lr)
