"""Santurkar et al. (2018) probes of the loss landscape along the gradient, and cheap proxies.

At weights w_t with gradient g_t = grad L(w_t) on a batch (x, y), `probe_step` evaluates, for every
step size eta of a grid and on the same batch:
  - loss variation:          L(w_t - eta g_t)                      (reported as its range over eta)
  - gradient predictiveness: ||grad L(w_t - eta g_t) - g_t||_2     (all parameters; range over eta)
  - effective beta-smoothness: max over eta of ||grad L(w_t - eta g_t) - g_t|| / ||eta g_t||
The probe never changes the model: it uses torch.func.functional_call with detached parameters and
COPIES of the buffers (BN in train mode normalizes with batch statistics as in training and writes
its running statistics into the copies), never touches .grad or requires_grad, and restores the
RNG state, which it also resets before every evaluation so that dropout draws the same mask for
every eta. All step sizes are evaluated at once with torch.func.vmap over stacked parameter sets
(method="vmap"; "auto" uses it on accelerators), or one by one (method="loop", the CPU choice of
"auto", and the fallback when an op has no batching rule).

`run_probes` runs the probes at a saved checkpoint's weights (`cifarlab inspect RUN probes`): one
probe_step per batch, written to probes.json and probes.png.

The proxies (`grad_change_proxy`) only use the training trajectory and are NOT the probes above;
`ics_measure` is the internal-covariate-shift measure of Santurkar et al. (Definition 2.1).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap
from torch.func import grad as func_grad

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Params = dict[str, torch.Tensor]


# ---------------------------------------------------------------- helpers


def trainable_params(model: nn.Module) -> Params:
    """Detached views of the parameters that require grad, in registration (forward) order."""
    return {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}


def model_grads(model: nn.Module) -> Params:
    """Copies of the .grad of every trainable parameter (zeros where a parameter got no gradient)."""
    return {
        n: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
        if p.requires_grad
    }


def _norm(ts) -> torch.Tensor:
    """Global L2 norm of a collection of tensors (float32 accumulation, stays on device)."""
    return torch.sqrt(sum(t.float().pow(2).sum() for t in ts))


class _RngKeeper:
    """Saves the CPU (and the model device's CUDA) RNG state; `reset()` puts it back.

    Resetting before each evaluation makes random layers (dropout) draw the same numbers for
    every step size, the training gradient included when the probe computes it itself.
    """

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device
        self.cpu_state = torch.get_rng_state()
        self.cuda_state = torch.cuda.get_rng_state(device) if self.cuda else None

    def reset(self) -> None:
        torch.set_rng_state(self.cpu_state)
        if self.cuda:
            torch.cuda.set_rng_state(self.cuda_state, self.device)


def _loss_and_grad_fn(model: nn.Module, loss_fn: LossFn, x: torch.Tensor, y: torch.Tensor, frozen: Params):
    """fn(params, buffers) -> (grads, loss) for torch.func; frozen holds parameters not differentiated."""

    def loss_of(params: Params, buffers: Params) -> tuple[torch.Tensor, torch.Tensor]:
        out = functional_call(model, ({**frozen, **params}, buffers), (x,))
        loss = loss_fn(out, y)
        if loss.dim() != 0:
            raise ValueError("probe: loss_fn must return a scalar")
        return loss, loss.detach()

    return func_grad(loss_of, has_aux=True)


def _buffer_copies(model: nn.Module, batch: int | None = None) -> Params:
    bufs = {n: b.detach() for n, b in model.named_buffers()}
    if batch is None:
        return {n: b.clone() for n, b in bufs.items()}
    return {n: b.unsqueeze(0).expand(batch, *b.shape).clone() for n, b in bufs.items()}


def _frozen_params(model: nn.Module) -> Params:
    return {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}


def batched_grads(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    stacked: Params,
    method: str = "auto",
    chunk_size: int | None = None,
    rng: _RngKeeper | None = None,
) -> tuple[torch.Tensor, Params, str]:
    """Loss and gradient at each of B parameter sets (tensors stacked on dim 0), model untouched.

    method: "vmap", "loop" or "auto": vmap on accelerators (a loop if vmap fails), a loop on CPU,
    where the grouped convolutions vmap turns batched weights into measured 2-3x slower than a loop.
    Returns (losses (B,), grads {name: (B, ...)}, the method used). The RNG is reset to `rng`'s
    state (default: the state at the call) before each evaluation and left in that state, so
    dropout draws one mask for all sets (per chunk when chunk_size is given).
    """
    if method not in ("auto", "vmap", "loop"):
        raise ValueError(f"probe: method must be auto, vmap or loop, got {method!r}")
    rng = rng or _RngKeeper(x.device)
    if method == "auto" and x.device.type == "cpu":
        method = "loop"
    try:
        return _batched_grads(model, loss_fn, x, y, stacked, method, chunk_size, rng)
    finally:
        rng.reset()


def _batched_grads(model, loss_fn, x, y, stacked, method, chunk_size, rng):
    B = next(iter(stacked.values())).shape[0]
    fn = _loss_and_grad_fn(model, loss_fn, x, y, _frozen_params(model))
    if method in ("auto", "vmap"):
        try:
            rng.reset()
            # "same": one dropout mask shared by every parameter set, as in the unbatched call
            grads, losses = vmap(fn, in_dims=(0, 0), randomness="same", chunk_size=chunk_size)(
                stacked, _buffer_copies(model, B)
            )
            return losses, grads, "vmap"
        except Exception:
            if method == "vmap":
                raise
    losses, grads = [], []
    for b in range(B):
        rng.reset()
        g, loss = fn({n: v[b] for n, v in stacked.items()}, _buffer_copies(model))
        losses.append(loss)
        grads.append(g)
    return torch.stack(losses), {n: torch.stack([g[n] for g in grads]) for n in grads[0]}, "loop"


# ---------------------------------------------------------------- the probe


def probe_step(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    etas: list[float],
    grad: Params | None = None,
    *,
    method: str = "auto",
    chunk_size: int | None = None,
) -> dict:
    """Loss variation, gradient predictiveness and effective beta-smoothness along -g at w_t.

    grad: g_t by parameter name (e.g. `model_grads(model)` after backward); computed on (x, y)
    with the model's current mode when None. The model is never changed (see the module doc).
    Returns floats and per-eta numpy arrays: etas, loss (L(w_t - eta g)), grad_diff
    (||grad L(w_t - eta g) - g||), beta (grad_diff / ||eta g||), loss_min/loss_max,
    gradpred_min/gradpred_max, beta_smooth, loss_t (L(w_t), when computed here), grad_norm, method.
    """
    if len(etas) == 0:
        raise ValueError("probe: etas must not be empty")
    rng = _RngKeeper(x.device)
    try:
        params = trainable_params(model)
        loss_t = float("nan")
        if grad is None:
            rng.reset()
            fn = _loss_and_grad_fn(model, loss_fn, x, y, _frozen_params(model))
            grad, lt = fn(params, _buffer_copies(model))
            loss_t = float(lt)
        g = {n: grad[n].detach().to(params[n].dtype) for n in params}
        eta = torch.tensor([float(e) for e in etas], dtype=torch.float64)
        stacked = {
            n: p.unsqueeze(0) - eta.to(p.device, p.dtype).view(-1, *[1] * p.dim()) * g[n].unsqueeze(0)
            for n, p in params.items()
        }
        losses, grads, used = batched_grads(model, loss_fn, x, y, stacked, method, chunk_size, rng)
        diff = torch.sqrt(sum((grads[n] - g[n].unsqueeze(0)).double().pow(2).flatten(1).sum(1) for n in g))
        g_norm = torch.sqrt(sum(v.double().pow(2).sum() for v in g.values()))
        beta = diff / (eta.to(diff.device).abs() * g_norm)
        loss_np = losses.detach().double().cpu().numpy()
        diff_np = diff.cpu().numpy()
        beta_np = beta.cpu().numpy()
    finally:
        rng.reset()
    return {
        "etas": eta.numpy(),
        "loss": loss_np,
        "grad_diff": diff_np,
        "beta": beta_np,
        "loss_min": float(loss_np.min()),
        "loss_max": float(loss_np.max()),
        "gradpred_min": float(diff_np.min()),
        "gradpred_max": float(diff_np.max()),
        "beta_smooth": float(beta_np.max()),
        "loss_t": loss_t,
        "grad_norm": float(g_norm),
        "method": used,
    }


# ---------------------------------------------------------------- proxies and ICS


def grad_change_proxy(g_prev: Params, g: Params, w_prev: Params, w: Params) -> dict[str, torch.Tensor]:
    """PROXIES of smoothness from the trajectory, not Santurkar's probes.

    grad_change = ||g_t - g_{t-1}||, grad_change_ratio = ||g_t - g_{t-1}|| / ||w_t - w_{t-1}||.
    Returned as 0-d tensors on the device (no host sync).
    """
    dg = _norm(g[n] - g_prev[n] for n in g)
    dw = _norm(w[n] - w_prev[n] for n in g)
    return {"grad_change": dg, "grad_change_ratio": dg / dw}


def weight_layers(model: nn.Module) -> list[str]:
    """Names of the weight tensors of the layers (conv/linear: ndim >= 2), in forward order."""
    return [n for n, p in model.named_parameters() if p.requires_grad and p.dim() >= 2]


def ics_measure(
    model: nn.Module,
    loss_fn: LossFn,
    x: torch.Tensor,
    y: torch.Tensor,
    before: Params,
    after: Params,
    layers: list[str] | None = None,
    *,
    method: str = "auto",
) -> dict:
    """Internal covariate shift of Santurkar et al. (2018, Definition 2.1) for each layer i:

    G_i  = grad wrt W_i of L at w_t (`before`),
    G'_i = grad wrt W_i of L with every parameter registered before W_i at w_{t+1} (`after`)
           and the rest at w_t,
    returned as ||G_i - G'_i|| and cos(G_i, G'_i), on the same batch; the model is not changed.
    """
    layers = layers or weight_layers(model)
    names = list(before)
    order = {n: k for k, n in enumerate(names)}
    missing = [n for n in layers if n not in order]
    if missing:
        raise ValueError(f"ics: unknown layer weights {missing}")
    rng = _RngKeeper(x.device)
    try:
        # set 0 is w_t itself (gives every G_i); set i+1 updates the parameters before layer i
        sets = [before] + [{n: (after[n] if order[n] < order[layer] else before[n]) for n in names} for layer in layers]
        stacked = {n: torch.stack([s[n] for s in sets]) for n in names}
        _, grads, _ = batched_grads(model, loss_fn, x, y, stacked, method, rng=rng)
        norms, coss = [], []
        for i, layer in enumerate(layers):
            G, Gp = grads[layer][0].double().flatten(), grads[layer][i + 1].double().flatten()
            norms.append(float((G - Gp).norm()))
            coss.append(float(torch.nn.functional.cosine_similarity(G, Gp, dim=0)))
    finally:
        rng.reset()
    return {"layers": layers, "norm": np.array(norms), "cos": np.array(coss)}


# ---------------------------------------------------------------- the probes at a checkpoint


def run_probes(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    etas: Sequence[float],
    out_dir: str | Path,
    *,
    loss_fn: LossFn | None = None,
    bn: str = "train",
    method: str = "auto",
    data: dict | None = None,
    title: str = "",
) -> dict:
    """probe_step on each batch at the model's weights, along that batch's own gradient.

    bn: "train" normalizes with batch statistics as in training (Santurkar et al. probe the training
    network; the running statistics stay untouched), "eval" with the running ones; dropout is off
    either way (landscape.bn_mode), so the probes are a function of the weights and the batch.
    The summary numbers are bn-study's: loss_variation and gradient_predictiveness are the means
    over batches of (max - min over eta), beta_smooth the mean over batches of probe_step's
    beta_smooth. Writes probes.json (these, the per-batch, per-eta arrays, data) and probes.png.
    """
    from cifarlab.errors import UserError
    from cifarlab.run import atomic_write_json

    from .landscape import bn_mode

    etas = [float(e) for e in etas]
    if not etas or not all(e > 0 and np.isfinite(e) for e in etas):
        raise UserError(f"probe step sizes must be positive numbers, got {etas} (--etas min:max:num with min > 0)")
    if not batches:
        raise UserError("the probes need at least one batch of data")
    with bn_mode(model, bn):
        steps = [probe_step(model, loss_fn or F.cross_entropy, x, y, etas, method=method) for x, y in batches]
    loss, diff, beta = (np.stack([p[k] for p in steps]) for k in ("loss", "grad_diff", "beta"))  # batches x etas
    out = {
        "loss_variation": float(np.mean(loss.max(1) - loss.min(1))),
        "gradient_predictiveness": float(np.mean(diff.max(1) - diff.min(1))),
        "beta_smooth": float(np.mean([p["beta_smooth"] for p in steps])),
        "etas": etas,
        "n_batches": len(steps),
        "batch_sizes": [int(len(y)) for _, y in batches],
        "bn": bn,
        "method": steps[0]["method"],
        "per_batch": {
            "loss_t": [p["loss_t"] for p in steps],
            "grad_norm": [p["grad_norm"] for p in steps],
            "beta_smooth": [p["beta_smooth"] for p in steps],
            "loss": loss.tolist(),  # L(w - eta g), batches x etas
            "grad_diff": diff.tolist(),  # ||grad L(w - eta g) - g||
            "beta": beta.tolist(),  # grad_diff / ||eta g||
        },
        "data": data,
    }
    out_dir = Path(out_dir)
    atomic_write_json(out_dir / "probes.json", out)
    out["figures"] = [str(save_probes_figure(out, out_dir / "probes", title))]
    return out


def save_probes_figure(res: dict, path: str | Path, title: str = "") -> Path:
    """The three probes against eta, one line per batch: what the summary numbers are ranges of."""
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    from .plotting import figure, save_figure

    fig = figure(10, 3.2)
    axes = fig.subplots(1, 3)
    etas, per = res["etas"], res["per_batch"]
    panels = (
        ("loss", f"loss variation (mean range {res['loss_variation']:.3g})", "L(w - eta g)"),
        (
            "grad_diff",
            f"gradient predictiveness (mean range {res['gradient_predictiveness']:.3g})",
            "||grad L(w - eta g) - g||",
        ),
        ("beta", f"effective beta-smoothness (mean max {res['beta_smooth']:.3g})", "grad_diff / ||eta g||"),
    )
    for ax, (key, name, ylabel) in zip(axes, panels):
        for b, values in enumerate(per[key]):
            ax.plot(etas, values, marker="o", ms=3, lw=1, label=f"batch {b + 1}")
        ax.set(title=name, xlabel="step size eta", ylabel=ylabel)
        ax.title.set_fontsize(9)
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, few ticks: the panels are small
            axis.set_major_locator(MaxNLocator(nbins=4))
            axis.set_major_formatter(FormatStrFormatter("%g"))
    if res["n_batches"] <= 8:
        axes[0].legend(fontsize=7)
    fig.suptitle(f"Santurkar et al. probes along -g ({title}, BN {res['bn']})" if title else "Santurkar et al. probes")
    return save_figure(fig, path)
