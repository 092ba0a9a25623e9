"""Pruning by the DessiLBI order, with the official slbi_toolbox semantics.

Scores come from the optimizer state that SLBI.end_epoch() (or the official update_prune_order)
wrote: prune_order = ||W_g|| - first_epoch per conv filter, |W_ij| - first_epoch per FC weight.
threshold = numpy.percentile(scores, percent); conv layers lose the whole filters scoring below
it (and their biases with prune_bias), FC layers keep only the weights scoring above it.

Scores tie massively (every FC weight Gamma never selected scores about -2000), so the nominal
percent is not the removed fraction: the report says what was actually removed.

Every function takes an SLBI optimizer or an optimizer state dict (ours, with param_names, or the
official format, with a 'name' in each state) plus the model, and matches parameters by name.
The weights before the first change are kept in the state as 'original_params' (the official key)
until recover() puts them back.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import UserError

StateLike = torch.optim.Optimizer | dict


def named_states(optimizer_or_state: StateLike) -> dict[str, dict]:
    """Parameter name -> its (mutable) optimizer state dict."""
    if isinstance(optimizer_or_state, torch.optim.Optimizer):
        opt, out = optimizer_or_state, {}
        for g in opt.param_groups:
            if "param_names" not in g:
                raise UserError("the optimizer does not know parameter names; build it from model.named_parameters()")
            out.update({n: opt.state[p] for n, p in zip(g["param_names"], g["params"])})
        return out
    sd = optimizer_or_state
    if not (isinstance(sd, dict) and isinstance(sd.get("state"), dict) and isinstance(sd.get("param_groups"), list)):
        raise UserError("expected an SLBI optimizer or an optimizer state dict with 'state' and 'param_groups'")
    out = {}
    for g in sd["param_groups"]:
        names = g.get("param_names")
        for k, idx in enumerate(g["params"]):
            st = sd["state"].setdefault(idx, {})
            name = names[k] if names else st.get("name")
            if not isinstance(name, str):
                raise UserError("the optimizer state does not name its parameters (no param_names, no 'name')")
            out[name] = st
    return out


def _lookup(
    optimizer_or_state: StateLike, model: nn.Module, layers: list[str] | str, need: str
) -> tuple[dict[str, dict], dict[str, Tensor], list[str]]:
    states = named_states(optimizer_or_state)
    params = dict(model.named_parameters())
    layers = [layers] if isinstance(layers, str) else list(layers)
    missing = [n for n in layers if n not in params]
    if missing:
        raise UserError(
            f"layers not in the model: {', '.join(missing)}; "
            f"tracked layers: {', '.join(n for n, s in states.items() if 'z_buffer' in s) or 'none'}"
        )
    lacking = [n for n in layers if need not in states.get(n, {})]
    if lacking:
        hint = (
            "run at least one epoch of SLBI (end_epoch writes it)"
            if need == "prune_order"
            else "SLBI does not track these weights"
        )
        raise UserError(f"no {need} for {', '.join(lacking)}: {hint}")
    return states, params, layers


def _keep_original(st: dict, p: Tensor) -> None:
    # Keep the weights from before the first change, so recover() undoes a chain of prunes.
    st.setdefault("original_params", p.detach().clone())


def _entry(kind: str, removed: int, total: int, **extra) -> dict:
    return {"kind": kind, "removed": removed, "total": total, "fraction": removed / total, **extra}


@torch.no_grad()
def prune(
    optimizer_or_state: StateLike, model: nn.Module, percent: float, layers: list[str] | str, prune_bias: bool = False
) -> dict:
    """Prune the named layers at `percent` (official prune_layer_by_order_by_list).

    Returns {"percent", "layers": {name: {kind: filters|weights, removed, total, fraction,
    threshold, weights_removed}}}.
    """
    if not 0 <= percent <= 100:
        raise UserError(f"prune percent must be in [0, 100] (got {percent})")
    states, params, layers = _lookup(optimizer_or_state, model, layers, "prune_order")
    report = {"percent": percent, "layers": {}}
    for name in layers:
        p, st = params[name], states[name]
        order = st["prune_order"].detach()
        threshold = float(np.percentile(order.cpu().numpy(), percent))
        order = order.to(p.device)
        _keep_original(st, p)
        if p.ndim >= 3:  # whole filters below the threshold
            drop = order < threshold
            p[drop] = 0.0
            bias = name.removesuffix("weight") + "bias" if name.endswith("weight") else None
            if prune_bias and bias in params:
                _keep_original(states.setdefault(bias, {}), params[bias])
                params[bias][drop] = 0.0
            n = int(drop.sum())
            report["layers"][name] = _entry(
                "filters", n, drop.numel(), threshold=threshold, weights_removed=n * p[0].numel()
            )
        else:  # single weights, kept only above the threshold
            keep = order > threshold
            p.mul_(keep)
            n = int((~keep).sum())
            report["layers"][name] = _entry("weights", n, keep.numel(), threshold=threshold, weights_removed=n)
    return report


@torch.no_grad()
def recover(optimizer_or_state: StateLike, model: nn.Module) -> list[str]:
    """Put back the weights that prune() or use_w_star() changed; returns the names restored."""
    params = dict(model.named_parameters())
    restored = []
    for name, st in named_states(optimizer_or_state).items():
        if "original_params" in st and name in params:
            params[name].copy_(st.pop("original_params"))
            restored.append(name)
    return restored


@torch.no_grad()
def use_w_star(optimizer_or_state: StateLike, model: nn.Module, layers: list[str] | None = None) -> dict:
    """Replace tracked weights by W* = W where Gamma != 0, else 0 (official use_w_star).

    Returns {"layers": {name: {kind, removed, total, fraction}}}: filters whose W* is all zero
    (conv), zero weights (FC). The official code counts FC weights > 0 as selected; we count
    non-zero ones.
    """
    states = named_states(optimizer_or_state)
    if layers is None:
        layers = [n for n, s in states.items() if "gamma_buffer" in s]
    states, params, layers = _lookup(optimizer_or_state, model, layers, "gamma_buffer")
    report = {"layers": {}}
    for name in layers:
        p, st = params[name], states[name]
        w_star = p * (st["gamma_buffer"].to(p.device) != 0)
        st["w_star"] = w_star
        _keep_original(st, p)
        p.copy_(w_star)
        if p.ndim >= 3:
            zero = w_star.flatten(1).abs().sum(1) == 0
            report["layers"][name] = _entry("filters", int(zero.sum()), zero.numel())
        else:
            report["layers"][name] = _entry("weights", int((w_star == 0).sum()), w_star.numel())
    return report


def selection(optimizer_or_state: StateLike) -> dict[str, dict]:
    """How much of each tracked layer Gamma has selected now: filters (conv) or weights (FC)."""
    out = {}
    for name, st in named_states(optimizer_or_state).items():
        if "gamma_buffer" not in st:
            continue
        nz = st["gamma_buffer"] != 0
        if nz.ndim >= 3:
            nz = nz.flatten(1).any(1)
        k, n = int(nz.sum()), nz.numel()
        out[name] = {
            "kind": "filters" if st["gamma_buffer"].ndim >= 3 else "weights",
            "selected": k,
            "total": n,
            "fraction": k / n,
        }
    return out


def format_report(report: dict) -> str:
    """A Markdown table of a prune()/use_w_star() report."""
    lines = ["| layer | unit | removed | total | fraction |", "|---|---|---:|---:|---:|"]
    for name, r in report["layers"].items():
        lines.append(f"| {name} | {r['kind']} | {r['removed']:,} | {r['total']:,} | {r['fraction']:.1%} |")
    return "\n".join(lines)
