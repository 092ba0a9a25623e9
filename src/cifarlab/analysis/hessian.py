"""Curvature of the loss at the trained weights: Hessian-vector products with torch.func, the top
eigenvalues by power iteration with deflation, and the trace by Hutchinson's estimator.

H is the Hessian of the mean loss over the given data (several batches are averaged, weighted by
their sizes) with respect to all parameters, BN in eval mode. Vectors are dicts name -> tensor
shaped like the parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp

from cifarlab.errors import UserError
from cifarlab.run import atomic_write_json

from .landscape import LossFn, Tensors, bn_mode, check_counts, grid_directions, parse_range, weights_of
from .plotting import figure, save_arrays, save_figure

Hvp = Callable[[Tensors], Tensors]


def _dot(a: Tensors, b: Tensors) -> torch.Tensor:
    return sum((a[n] * b[n]).sum() for n in a)


def _normalized(v: Tensors) -> Tensors:
    norm = _dot(v, v).sqrt()
    return {n: t / norm for n, t in v.items()}


def _orthogonalized(v: Tensors, basis: Sequence[Tensors]) -> Tensors:
    """v minus its components along the (orthonormal) basis: deflation of the found eigenvectors."""
    for u in basis:
        c = _dot(v, u)
        v = {n: t - c * u[n] for n, t in v.items()}
    return v


def make_hvp(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: LossFn | None = None,
    params: Tensors | None = None,
    mode: str = "auto",
) -> tuple[Hvp, Tensors]:
    """(hvp, params): hvp(v) = H v at `params` (default: the model's parameters) over the batches.

    mode "fwd": forward-over-reverse (jvp of grad, the cheap one); "rev": reverse-over-reverse
    (double backward); "auto": fwd, switching to rev if some op has no forward-mode rule.
    """
    if mode not in ("auto", "fwd", "rev"):
        raise UserError(f"unknown Hessian-vector mode {mode!r}; use auto, fwd or rev")
    if not batches:
        raise UserError("the Hessian needs at least one batch of data")
    loss_fn = loss_fn or F.cross_entropy
    params = weights_of(model) if params is None else params
    total = sum(len(y) for _, y in batches)
    state = {"mode": mode}

    def loss_at(p: Tensors, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return loss_fn(functional_call(model, p, (x,)), y)

    def hvp_fwd(v: Tensors, x, y) -> Tensors:
        return jvp(lambda p: grad(loss_at)(p, x, y), (params,), (v,))[1]

    def hvp_rev(v: Tensors, x, y) -> Tensors:
        p = {n: t.detach().requires_grad_(True) for n, t in params.items()}
        with torch.enable_grad():
            g = torch.autograd.grad(loss_at(p, x, y), list(p.values()), create_graph=True)
            hv = torch.autograd.grad(g, list(p.values()), grad_outputs=[v[n] for n in p])
        return dict(zip(p, hv))

    def one(v: Tensors, x, y) -> Tensors:
        if state["mode"] == "rev":
            return hvp_rev(v, x, y)
        try:
            return hvp_fwd(v, x, y)
        except (RuntimeError, NotImplementedError) as e:
            if state["mode"] == "fwd":
                raise
            warnings.warn(
                f"forward-mode HVP failed ({str(e).splitlines()[0][:200]}); using double backward", stacklevel=2
            )
            state["mode"] = "rev"
            return hvp_rev(v, x, y)

    def hvp(v: Tensors) -> Tensors:
        out = {n: torch.zeros_like(t) for n, t in params.items()}
        with bn_mode(model, "eval"):
            for x, y in batches:
                hv = one(v, x, y)
                for n in out:
                    out[n] += hv[n].detach() * (len(y) / total)
        return out

    return hvp, params


def top_eigenvalues(
    hvp: Hvp, params: Tensors, k: int = 1, iters: int = 100, tol: float = 1e-4, generator: torch.Generator | None = None
) -> tuple[list[float], list[Tensors]]:
    """The k eigenvalues of H largest in magnitude, by power iteration; each next one is searched
    orthogonally to the eigenvectors found so far (deflation). Stops an eigenvalue when the Rayleigh
    quotient changes by less than tol (relative) between iterations."""
    values: list[float] = []
    vectors: list[Tensors] = []
    for _ in range(k):
        v = {n: torch.randn(t.shape, generator=generator, dtype=torch.float64).to(t) for n, t in params.items()}
        v = _normalized(_orthogonalized(v, vectors))
        lam = None
        for _ in range(iters):
            hv = _orthogonalized(hvp(v), vectors)
            new = float(_dot(v, hv))
            v = _normalized(hv)
            if lam is not None and abs(new - lam) <= tol * (abs(lam) + 1e-12):
                lam = new
                break
            lam = new
        values.append(lam)
        vectors.append(v)
    return values, vectors


def largest_eigenvalue(
    hvp: Hvp, params: Tensors, top: float, iters: int = 100, tol: float = 1e-4, generator: torch.Generator | None = None
) -> float:
    """The largest algebraic eigenvalue, given `top`, the one largest in magnitude. If top < 0, every
    eigenvalue is >= top, so power iteration on H - top*I (all eigenvalues >= 0) finds lambda_max - top."""
    if top >= 0:
        return top

    def shifted(v: Tensors) -> Tensors:
        hv = hvp(v)
        return {n: hv[n] - top * v[n] for n in v}

    (value,), _ = top_eigenvalues(shifted, params, 1, iters, tol, generator)
    return value + top


def rademacher(params: Tensors, generator: torch.Generator | None = None) -> Tensors:
    """A random vector of +-1 entries shaped like params (drawn on the CPU, so seeds reproduce)."""
    return {n: (torch.randint(0, 2, t.shape, generator=generator) * 2 - 1).to(t) for n, t in params.items()}


def hutchinson_trace(
    hvp: Hvp, params: Tensors, samples: int = 100, generator: torch.Generator | None = None
) -> tuple[float, np.ndarray]:
    """tr(H) = E[v^T H v] for Rademacher v: (mean over samples, the per-sample values v^T H v)."""
    values = []
    for _ in range(samples):
        v = rademacher(params, generator)
        values.append(float(_dot(v, hvp(v))))
    values = np.array(values)
    return float(values.mean()), values


def batches_of(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]


def run_hessian(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    out_dir: str | Path,
    *,
    k: int = 3,
    iters: int = 100,
    tol: float = 1e-4,
    trace_samples: int = 50,
    batch_size: int = 500,
    seed: int = 0,
    loss_fn: LossFn | None = None,
    mode: str = "auto",
    data: dict | None = None,
    title: str = "",
) -> dict:
    """Top-k Hessian eigenvalues and the Hutchinson trace of the mean loss on (x, y).

    Writes hessian.json (eigenvalues, trace, its standard error, settings, `data`: which images),
    hessian.npz (the per-sample Hutchinson values) and, with k >= 1, hessian_spectrum.png (title:
    what the images were, e.g. "resnet20, 1000 train images"); returns the same numbers.
    """
    check_counts(k=(k, 1), iters=(iters, 1), trace_samples=(trace_samples, 0), batch_size=(batch_size, 1))
    out_dir = Path(out_dir)
    hvp, params = make_hvp(model, batches_of(x, y, batch_size), loss_fn, mode=mode)
    g = torch.Generator().manual_seed(seed)
    eigs, _ = top_eigenvalues(hvp, params, k, iters, tol, g)
    largest = largest_eigenvalue(hvp, params, eigs[0], iters, tol, g) if eigs else float("nan")
    trace, samples = hutchinson_trace(hvp, params, trace_samples, g) if trace_samples else (float("nan"), np.array([]))
    se = float(samples.std(ddof=1) / math.sqrt(len(samples))) if len(samples) > 1 else float("nan")
    out = {
        "eigenvalues": eigs,  # the k largest in magnitude (kept under this name for existing readers)
        "largest_magnitude_eigenvalue": eigs[0] if eigs else float("nan"),
        "largest_eigenvalue": largest,  # the largest algebraic one: the sharpness
        "trace": trace,
        "trace_std_error": se,
        "trace_samples": int(len(samples)),
        "n_images": int(len(y)),
        "n_params": int(sum(t.numel() for t in params.values())),
        "k": k,
        "iters": iters,
        "tol": tol,
        "seed": seed,
        "data": data,
    }
    atomic_write_json(out_dir / "hessian.json", out)
    out["arrays"] = str(save_arrays(out_dir / "hessian", eigenvalues=np.array(eigs), trace_samples=samples))
    if eigs:
        fig = spectrum_figure(eigs, largest, trace, se, title)
        out["figures"] = [str(save_figure(fig, out_dir / "hessian_spectrum"))]
    return out


def spectrum_figure(eigs: Sequence[float], largest: float, trace: float, trace_se: float, title: str = ""):
    """The top eigenvalues as stems at index 1..k (by magnitude), the largest algebraic one as a
    dashed line (it differs from the first stem when the dominant eigenvalue is negative), the trace
    in the legend; plain numbers. No density estimate: power iteration finds only the top few."""
    from matplotlib.ticker import FormatStrFormatter, MaxNLocator

    idx = np.arange(1, len(eigs) + 1)
    fig = figure(5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    stems = ax.stem(idx, eigs, basefmt="none", label=f"{len(eigs)} largest in magnitude")
    stems.markerline.set_gid("largest_magnitude")
    ax.axhline(0, color="grey", lw=0.6)
    if math.isfinite(largest):
        ax.axhline(largest, color="tab:red", ls="--", lw=1, label=f"largest algebraic {largest:.4g}", gid="largest")
    if len(eigs) <= 10:  # each stem's value: the numbers are the point of this figure
        for i, v in zip(idx, eigs):
            ax.annotate(f"{v:.4g}", (i, v), textcoords="offset points", xytext=(6, 0), fontsize=7, va="center")
    if math.isfinite(trace):
        se = f" ± {trace_se:.2g}" if math.isfinite(trace_se) else ""
        ax.plot([], [], " ", label=f"trace {trace:.4g}{se} (Hutchinson)")
    ax.set_xlim(0.5, len(eigs) + 0.5 + 0.3 * (len(eigs) <= 10))  # room for the labels on the right
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("eigenvalue index (by magnitude)")
    ax.set_ylabel("Hessian eigenvalue")
    ax.set_title(f"Hessian spectrum: {title}" if title else "Hessian spectrum", fontsize=9)
    ax.legend(fontsize=7)
    return fig


def top_eigenvalue_grid(
    model: nn.Module,
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    directions: Sequence[Tensors],
    axes: Sequence[np.ndarray],
    *,
    loss_fn: LossFn | None = None,
    iters: int = 20,
    tol: float = 1e-3,
    seed: int = 0,
    mode: str = "auto",
) -> np.ndarray:
    """The top Hessian eigenvalue at w + a*d1 + b*d2 for each point of a (coarse) 2D grid."""
    w = weights_of(model)
    out = np.full((len(axes[0]), len(axes[1])), np.nan)
    for i, a in enumerate(axes[0]):
        for j, b in enumerate(axes[1]):
            p = {n: t + float(a) * directions[0].get(n, 0) + float(b) * directions[1].get(n, 0) for n, t in w.items()}
            hvp, p = make_hvp(model, batches, loss_fn, params=p, mode=mode)
            out[i, j] = top_eigenvalues(hvp, p, 1, iters, tol, torch.Generator().manual_seed(seed))[0][0]
    return out


def run_hessian_grid(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    out_dir: str | Path,
    *,
    xrange: str = "-1:1:5",
    yrange: str | None = None,
    norm: str = "filter",
    ignore: str = "biasbn",
    seed: int = 0,
    iters: int = 20,
    tol: float = 1e-3,
    batch_size: int = 500,
    loss_fn: LossFn | None = None,
) -> dict:
    """The top eigenvalue over a coarse grid of the landscape's directions (the same directions.pt
    as run_landscape in out_dir, made if absent). Writes hessian_grid.npz and hessian_grid.png."""
    check_counts(iters=(iters, 1), batch_size=(batch_size, 1))
    out_dir = Path(out_dir)
    dirs = grid_directions(model, out_dir, 2, norm, ignore, seed)
    axes = [parse_range(xrange), parse_range(yrange or xrange)]
    top = top_eigenvalue_grid(
        model, batches_of(x, y, batch_size), dirs, axes, loss_fn=loss_fn, iters=iters, tol=tol, seed=seed
    )
    fig = figure(5, 4.3)
    ax = fig.add_subplot(1, 1, 1)
    X, Y = np.meshgrid(*axes, indexing="ij")
    im = ax.pcolormesh(X, Y, top, cmap="magma", shading="nearest")
    fig.colorbar(im, ax=ax, label="top Hessian eigenvalue")
    ax.set_xlabel("d1")
    ax.set_ylabel("d2")
    ax.set_title(f"top Hessian eigenvalue ({norm}-normalized directions)", fontsize=9)
    figure_path = save_figure(fig, out_dir / "hessian_grid")
    arrays = save_arrays(out_dir / "hessian_grid", top_eigenvalue=top, xs=axes[0], ys=axes[1])
    return {"top_eigenvalue": top.tolist(), "figures": [str(figure_path)], "arrays": str(arrays)}
