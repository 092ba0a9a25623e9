"""Loss landscapes (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets").

The loss and accuracy at w + a*d1 + b*d2 on a fixed data subset, for filter-normalized random
directions d1, d2 (or the direction between two checkpoints, or the top-2 PCA directions of a
training trajectory). Many grid points are evaluated at once: the perturbed parameter sets of a
chunk of K points are stacked and one torch.func.functional_call is vmapped over them, so every
data batch is read once per chunk and the GPU sees K times more work per kernel. A plain
point-by-point loop stays as the reference (tests and bench/landscape.py compare the two).

Grids are saved after every chunk (landscape.npz with a `done` mask), so an interrupted grid
resumes where it stopped; `shard=(i, n)` splits the points across workers and merge_shards joins them.
"""

from __future__ import annotations

import contextlib
import hashlib
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import LogNorm
from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from cifarlab.errors import UserError
from cifarlab.run import atomic_torch_save

from .layers import model_device
from .plotting import figure, save_arrays, save_figure, with_suffix

Tensors = dict[str, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, y) -> mean loss of the batch


# ---------------------------------------------------------------- directions


def weights_of(model: nn.Module) -> Tensors:
    """Detached copies of the model's parameters (the point w the landscape is centred on)."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def normalize_direction(direction: Tensors, weights: Tensors, norm: str = "filter", ignore: str = "biasbn") -> Tensors:
    """Rescale a direction like Li et al.'s code, in place.

    norm "filter": each filter (slice along dim 0: a conv output channel, a Linear row) of d gets the
    norm of the matching filter of w; "layer": each tensor gets the norm of its weight; "none": as is.
    1-D tensors (biases, BN weight/bias): zeroed with ignore="biasbn"; with ignore="none" they are
    set to the weights themselves, as the reference code does.
    """
    if norm not in ("filter", "layer", "none"):
        raise UserError(f"unknown direction norm {norm!r}; use filter, layer or none")
    if ignore not in ("biasbn", "none"):
        raise UserError(f"unknown ignore {ignore!r}; use biasbn or none")
    for name, d in direction.items():
        w = weights[name]
        if d.dim() <= 1:
            d.zero_() if ignore == "biasbn" else d.copy_(w)
        elif norm == "filter":
            dn = d.reshape(len(d), -1).norm(dim=1)
            wn = w.reshape(len(w), -1).norm(dim=1)
            d.mul_((wn / (dn + 1e-10)).view(-1, *[1] * (d.dim() - 1)))
        elif norm == "layer":
            d.mul_(w.norm() / (d.norm() + 1e-10))
    return direction


def random_direction(
    model: nn.Module, norm: str = "filter", ignore: str = "biasbn", generator: torch.Generator | None = None
) -> Tensors:
    """A Gaussian direction in parameter space, normalized as in normalize_direction.

    Drawn on the CPU from `generator` (so a seed gives the same direction on any device), then moved
    to the parameters' device.
    """
    w = weights_of(model)
    d = {n: torch.randn(t.shape, generator=generator, dtype=torch.float32).to(t) for n, t in w.items()}
    return normalize_direction(d, w, norm, ignore)


def state_difference(state_a: dict, state_b: dict) -> tuple[Tensors, Tensors]:
    """(base, direction) = (a, b - a) over the floating tensors of two state dicts (parameters and BN
    running statistics), so base + t * direction interpolates both checkpoints at t in [0, 1]."""
    if set(state_a) != set(state_b):
        raise UserError("the two checkpoints have different tensors; are they of the same model?")
    base, direction = {}, {}
    for k, a in state_a.items():
        if torch.is_tensor(a) and a.is_floating_point():
            if a.shape != state_b[k].shape:
                raise UserError(
                    f"checkpoints differ in the shape of {k}: {tuple(a.shape)} vs {tuple(state_b[k].shape)}"
                )
            base[k] = a.detach().float()
            direction[k] = state_b[k].detach().float() - base[k]
    return base, direction


# ---------------------------------------------------------------- evaluation of points


@contextlib.contextmanager
def bn_mode(model: nn.Module, bn: str = "eval"):
    """Eval mode; with bn="train", BN layers normalize with batch statistics but never update the
    real model's running statistics (track_running_stats off while inside)."""
    if bn not in ("eval", "train"):
        raise UserError(f"unknown BN mode {bn!r}; use eval or train")
    was_training = model.training
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)] if bn == "train" else []
    tracked = [m.track_running_stats for m in bns]
    model.eval()
    for m in bns:
        m.train()
        m.track_running_stats = False
    try:
        yield
    finally:
        for m, t in zip(bns, tracked):
            m.track_running_stats = t
        model.train(was_training)


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _batches(x: torch.Tensor, y: torch.Tensor, batch_size: int):
    for i in range(0, len(x), batch_size):
        yield x[i : i + batch_size], y[i : i + batch_size]


def _moving(directions: Sequence[Tensors]) -> list[str]:
    """Names that any direction moves: only these need a copy per grid point."""
    names = {n for d in directions for n, t in d.items() if bool(torch.any(t != 0))}
    return sorted(names)


def _point_tensors(base: Tensors, directions: Sequence[Tensors], names: list[str], coeffs: torch.Tensor) -> Tensors:
    """base + sum_j coeffs[..., j] * d_j for the moving names; coeffs is (ndir,) or (K, ndir)."""
    out = {}
    for n in names:
        t = base[n].expand(*coeffs.shape[:-1], *base[n].shape).clone() if coeffs.dim() == 2 else base[n].clone()
        for j, d in enumerate(directions):
            if n in d:
                c = coeffs[..., j].to(t).view(*coeffs.shape[:-1], *[1] * d[n].dim())
                t += c * d[n]
        out[n] = t
    return out


@torch.no_grad()
def evaluate_points_loop(
    model: nn.Module,
    base: Tensors,
    directions: Sequence[Tensors],
    coeffs: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 500,
    loss_fn: LossFn | None = None,
    bn: str = "eval",
    amp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The plain reference: one point at a time, one functional_call per data batch.

    coeffs: K x ndir. Returns (mean loss, accuracy), each of length K, on the CPU.
    """
    loss_fn = loss_fn or F.cross_entropy
    names = _moving(directions)
    fixed = {n: t for n, t in base.items() if n not in names}
    losses, accs = torch.zeros(len(coeffs), dtype=torch.float64), torch.zeros(len(coeffs), dtype=torch.float64)
    with bn_mode(model, bn), _autocast(x.device, amp):
        for k, c in enumerate(coeffs):
            params = _point_tensors(base, directions, names, c)
            loss_sum, correct = 0.0, 0
            for xb, yb in _batches(x, y, batch_size):
                logits = functional_call(model, (params, fixed), (xb,)).float()
                loss_sum += loss_fn(logits, yb).double() * len(yb)
                correct += (logits.argmax(1) == yb).sum()
            losses[k], accs[k] = float(loss_sum) / len(y), float(correct) / len(y)
    return losses, accs


@torch.no_grad()
def evaluate_points_vmap(
    model: nn.Module,
    base: Tensors,
    directions: Sequence[Tensors],
    coeffs: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 500,
    loss_fn: LossFn | None = None,
    bn: str = "eval",
    amp: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All K points of coeffs at once: stacked parameter sets, functional_call vmapped over them.

    Same contract as evaluate_points_loop; memory grows with K x (parameters + activations of a batch).
    """
    loss_fn = loss_fn or F.cross_entropy
    names = _moving(directions)
    fixed = {n: t for n, t in base.items() if n not in names}
    stacked = _point_tensors(base, directions, names, coeffs)
    K = len(coeffs)
    loss_sum = torch.zeros(K, dtype=torch.float64, device=x.device)
    correct = torch.zeros(K, dtype=torch.float64, device=x.device)
    with bn_mode(model, bn), _autocast(x.device, amp):
        for xb, yb in _batches(x, y, batch_size):
            logits = vmap(lambda p: functional_call(model, (p, fixed), (xb,)))(stacked).float()  # noqa: B023 (called at once)  K x B x C
            for k in range(K):
                loss_sum[k] += loss_fn(logits[k], yb).double() * len(yb)
            correct += (logits.argmax(2) == yb).sum(1)
    return (loss_sum / len(y)).cpu(), (correct / len(y)).cpu()


# ---------------------------------------------------------------- grids, resume, shards


def parse_range(spec: str | Sequence[float] | np.ndarray) -> np.ndarray:
    """'-1:1:51' -> 51 evenly spaced values from -1 to 1 (both included); a list passes through."""
    if isinstance(spec, str):
        try:
            lo, hi, n = spec.split(":")
            values = np.linspace(float(lo), float(hi), int(n))
        except ValueError:
            raise UserError(f"bad grid range {spec!r}; write min:max:num, e.g. -1:1:51") from None
        if int(n) < 1:
            raise UserError(f"bad grid range {spec!r}: num must be at least 1")
        return values
    return np.asarray(spec, dtype=np.float64)


def _checksum(tensors: Tensors) -> str:
    """A stable fingerprint of named tensors (sums in float64 on the CPU, rounded)."""
    h = hashlib.sha256()
    for n in sorted(tensors):
        t = tensors[n].detach().cpu().double()
        h.update(f"{n}:{tuple(t.shape)}:{float(t.sum()):.9g}:{float(t.abs().sum()):.9g};".encode())
    return h.hexdigest()[:16]


def fingerprint(
    base: Tensors,
    directions: Sequence[Tensors],
    axes: Sequence[np.ndarray],
    x: torch.Tensor,
    y: torch.Tensor,
    bn: str,
    amp: bool,
) -> str:
    """What a saved grid was computed for (weights, directions, axes, data, BN mode, precision);
    a resumed or merged grid must match it exactly."""
    h = hashlib.sha256()
    for tensors in [base, *directions, {"x": x, "y": y}]:
        h.update(_checksum(tensors).encode())
    for a in axes:
        h.update(np.asarray(a, dtype=np.float64).tobytes())
    h.update(f"{bn}:{amp}".encode())
    return h.hexdigest()[:16]


def shard_path(path: str | Path, shard: tuple[int, int]) -> Path:
    path = with_suffix(path, ".npz")
    i, n = shard
    return path if n == 1 else path.with_name(f"{path.name[:-4]}.shard{i}of{n}.npz")


def _save_grid(path: Path, res: dict) -> None:
    axes = res["axes"]
    save_arrays(
        path,
        loss=res["loss"],
        acc=res["acc"],
        done=res["done"],
        xs=axes[0],
        **({"ys": axes[1]} if len(axes) > 1 else {}),
        fingerprint=np.array(res["fingerprint"]),
        shard=np.array(res["shard"]),
        bn=np.array(res["bn"]),
    )


def check_counts(**counts: tuple[int, int]) -> None:
    """name=(value, lowest), checked before anything is written: --chunk 0 would loop forever or fail
    after directions.pt is made, --iters 0 or --k 0 would write NaN as a result."""
    for name, (value, lowest) in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise UserError(f"--{name.replace('_', '-')} must be an integer >= {lowest}, got {value!r}")


def load_grid(path: str | Path) -> dict:
    """A saved grid (complete or partial) as a dict: axes, loss, acc, done, fingerprint, shard, bn."""
    try:
        with np.load(Path(path)) as z:
            axes = [z["xs"]] + ([z["ys"]] if "ys" in z.files else [])
            return {
                "axes": axes,
                "loss": z["loss"],
                "acc": z["acc"],
                "done": z["done"],
                "fingerprint": str(z["fingerprint"]),
                "shard": tuple(int(v) for v in z["shard"]),
                "bn": str(z["bn"]),
            }
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:  # a file cut short by a kill
        raise UserError(
            f"cannot read landscape grid {path} ({str(e).splitlines()[0] or type(e).__name__}); "
            "delete it to start that grid again"
        ) from None


def evaluate_grid(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    directions: Sequence[Tensors],
    axes: Sequence[np.ndarray],
    *,
    base: Tensors | None = None,
    path: str | Path | None = None,
    shard: tuple[int, int] = (0, 1),
    method: str = "auto",
    chunk: int = 8,
    batch_size: int = 500,
    loss_fn: LossFn | None = None,
    bn: str = "eval",
    amp: bool = False,
    progress: bool = True,
) -> dict:
    """Loss and accuracy at base + sum_j axes_j[i_j] * directions[j] for every grid point of this shard.

    base defaults to the model's parameters; directions and axes have one entry per grid dimension
    (1 or 2). method: "vmap" (batched points), "loop" (one point at a time) or "auto" (vmap on
    CUDA, loop on CPU). With `path`, results are saved after every chunk of `chunk` points and a run finds and
    resumes its own partial file (shard files are named path.shard<i>of<n>.npz). x, y: the data
    subset on the model's device (x normalized), evaluated in batches of batch_size.
    Returns {"axes", "loss", "acc", "done", "fingerprint", "shard", "bn", "evaluated"}; points of
    other shards (or not yet done) are NaN with done False.
    """
    check_counts(chunk=(chunk, 1), batch_size=(batch_size, 1))
    if len(directions) != len(axes) or len(axes) not in (1, 2):
        raise UserError("a landscape needs 1 or 2 directions, one axis each")
    if method not in ("auto", "vmap", "loop"):
        raise UserError(f"unknown landscape evaluator {method!r}; use auto, vmap or loop")
    if method == "auto":  # vmapped convs become grouped convs, which CPUs run slower than K plain ones
        method = "vmap" if x.device.type == "cuda" else "loop"
    i_shard, n_shards = shard
    if not (n_shards >= 1 and 0 <= i_shard < n_shards):
        raise UserError(f"bad shard {shard}: need 0 <= i < n")
    axes = [np.asarray(a, dtype=np.float64) for a in axes]
    base = weights_of(model) if base is None else base
    fp = fingerprint(base, directions, axes, x, y, bn, amp and x.device.type == "cuda")
    path = shard_path(path, shard) if path is not None else None
    res = _start_grid(axes, fp, (i_shard, n_shards), bn, path)
    flat = np.arange(int(np.prod([len(a) for a in axes])))
    todo = [p for p in flat[flat % n_shards == i_shard] if not res["done"].flat[p]]
    coords = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(axes))
    bar = tqdm(total=len(todo), desc="landscape", unit="pt", disable=not progress)
    evaluator = evaluate_points_vmap if method == "vmap" else evaluate_points_loop
    options = {"batch_size": batch_size, "loss_fn": loss_fn, "bn": bn, "amp": amp}
    for start in range(0, len(todo), chunk):
        points = todo[start : start + chunk]
        c = torch.as_tensor(coords[points], dtype=torch.float32, device=x.device)
        evaluator, loss, acc = _evaluate_chunk(evaluator, (model, base, directions, c, x, y), options)
        # NaN logits (e.g. BN running variances extrapolated below zero) have no meaningful argmax
        acc = torch.where(torch.isfinite(loss), acc, torch.nan)
        res["loss"].flat[points] = loss.numpy()
        res["acc"].flat[points] = acc.numpy()
        res["done"].flat[points] = True
        res["evaluated"] += len(points)
        if path is not None:  # saved after every chunk: a killed grid resumes from here
            _save_grid(path, res)
        bar.update(len(points))
        bar.set_postfix(loss=f"{float(loss.min()):.3g}")
    bar.close()
    if path is not None and not todo:
        _save_grid(path, res)
    return res


def _start_grid(axes: list[np.ndarray], fp: str, shard: tuple[int, int], bn: str, path: Path | None) -> dict:
    """An empty grid (every point NaN, not done), or the partial grid of this fingerprint and shard at path."""
    shape = tuple(len(a) for a in axes)
    res = {
        "axes": axes,
        "loss": np.full(shape, np.nan),
        "acc": np.full(shape, np.nan),
        "done": np.zeros(shape, bool),
        "fingerprint": fp,
        "shard": shard,
        "bn": bn,
        "evaluated": 0,
    }
    if path is not None and path.exists():
        old = load_grid(path)
        if old["fingerprint"] != fp or old["shard"] != shard:
            raise UserError(
                f"{path} holds a grid of other settings (model, directions, axes, data or shard); "
                "move it away or choose another output folder"
            )
        res.update({k: old[k] for k in ("loss", "acc", "done")})
    return res


def _evaluate_chunk(evaluator: Callable, args: tuple, options: dict) -> tuple[Callable, torch.Tensor, torch.Tensor]:
    """(the evaluator to go on with, loss, acc) of one chunk of points; vmap that fails falls back to the loop."""
    try:
        return (evaluator, *evaluator(*args, **options))
    except (RuntimeError, NotImplementedError) as e:
        if evaluator is evaluate_points_loop:
            raise
        # Some modules have no vmap rule (or K copies do not fit): finish point by point.
        warnings.warn(
            f"vmap evaluation failed ({str(e).splitlines()[0][:200]}); falling back to the loop", stacklevel=3
        )
        return (evaluate_points_loop, *evaluate_points_loop(*args, **options))


def merge_shards(paths: Sequence[str | Path], out_path: str | Path | None = None) -> dict:
    """Join the shard files of one grid; every shard must have the same fingerprint."""
    parts = [load_grid(p) for p in paths]
    if not parts:
        raise UserError("no shard files to merge")
    first = parts[0]
    for p, part in zip(paths, parts):
        if part["fingerprint"] != first["fingerprint"]:
            raise UserError(f"{p} belongs to another grid (settings differ from {paths[0]})")
    res = {k: first[k] for k in ("axes", "fingerprint", "bn")}
    res.update(
        loss=np.full(first["loss"].shape, np.nan),
        acc=np.full(first["loss"].shape, np.nan),
        done=np.zeros(first["loss"].shape, bool),
        shard=(0, 1),
        evaluated=0,
    )
    for part in parts:
        m = part["done"]
        res["loss"][m], res["acc"][m], res["done"][m] = part["loss"][m], part["acc"][m], True
    if out_path is not None:
        _save_grid(with_suffix(out_path, ".npz"), res)
    return res


# ---------------------------------------------------------------- PCA of a trajectory


def pca_directions(
    states: Sequence[dict], final: dict, names: Sequence[str], ignore: str = "biasbn"
) -> tuple[list[Tensors], np.ndarray, np.ndarray]:
    """Li et al.'s trajectory plot: directions = the top-2 principal components of w_i - w_final.

    names: the parameter names to use (1-D ones are left out with ignore="biasbn"). Returns
    ([d1, d2] as unit-norm tensors, coordinates n x 2 of each w_i - w_final on them, explained
    variance ratio of the two components).
    """
    names = (
        [n for n in names if not (ignore == "biasbn" and final[n].dim() <= 1)]
        if all(n in final for n in names)
        else None
    )
    if names is None or any(n not in s for s in states for n in names):
        raise UserError("the trajectory checkpoints do not hold this model's parameters (another model?)")
    if len(states) < 3:
        raise UserError(f"a PCA trajectory needs at least 3 checkpoints, got {len(states)}")
    diffs = torch.stack([torch.cat([(s[n].float() - final[n].float()).flatten().cpu() for n in names]) for s in states])
    # PCA through the small n x n Gram matrix: the n x P matrix of a big model is copied only once.
    mean = diffs.mean(0)
    diffs -= mean
    eigvals, u = torch.linalg.eigh((diffs @ diffs.T).double())
    eigvals, u = eigvals.flip(0).clamp_min(0), u.flip(1)
    pcs = (diffs.T @ u[:, :2].float() / eigvals[:2].sqrt().clamp_min(1e-12).float()).T  # 2 x P, unit rows
    coords = (diffs @ pcs.T + mean @ pcs.T).numpy()  # projections of w_i - w_final themselves, not centred
    ratio = (eigvals[:2] / eigvals.sum().clamp_min(1e-30)).numpy()
    dirs = []
    for pc in pcs:
        d, offset = {}, 0
        for n in names:
            k = final[n].numel()
            d[n] = pc[offset : offset + k].view_as(final[n]).to(final[n].device)
            offset += k
        dirs.append(d)
    return dirs, coords, ratio


# ---------------------------------------------------------------- plots


def _finite(a: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(a), a, np.nan)


def _levels(loss: np.ndarray, n: int = 25) -> np.ndarray:
    """Log-spaced levels from the minimum up to a robust maximum: the basin gets most of the lines."""
    v = loss[np.isfinite(loss)]
    v = v if len(v) else np.ones(1)  # a grid that diverged everywhere still gets (empty) axes
    lo, hi = max(float(v.min()), 1e-6), float(np.percentile(v, 98))
    hi = hi if hi > lo * 1.0001 else lo * 1.5
    return np.geomspace(lo, hi, n)


def _plain_ticks(*axes) -> None:
    """At most ~5 plainly formatted ticks per axis: dense or offset labels overlap on small figures."""
    for a in axes:
        a.set_major_locator(MaxNLocator(nbins=5))
        a.set_major_formatter(FormatStrFormatter("%g"))


def plot_1d(
    xs: np.ndarray, loss: np.ndarray, acc: np.ndarray, path: str | Path, xlabel: str = "alpha", title: str = ""
) -> Path:
    fig = figure(5, 3.4)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(xs, _finite(loss), color="tab:blue", label="loss")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("loss", color="tab:blue")
    v = loss[np.isfinite(loss)]
    if len(v) and v.min() > 0 and v.max() / v.min() > 50:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 2 not 2x10^0
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        _plain_ticks(ax.yaxis)
    _plain_ticks(ax.xaxis)
    ax2 = ax.twinx()
    ax2.plot(xs, acc * 100, color="tab:red", ls="--", label="accuracy")
    ax2.set_ylabel("accuracy (%)", color="tab:red")
    ax2.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    return save_figure(fig, path)


def plot_2d(
    xs: np.ndarray,
    ys: np.ndarray,
    loss: np.ndarray,
    out_dir: str | Path,
    prefix: str = "landscape",
    trajectory: np.ndarray | None = None,
    labels: tuple[str, str] = ("d1", "d2"),
    title: str = "",
) -> list[Path]:
    """Contour lines, filled contour, 3D surface and heatmap of a 2D loss grid (loss[i, j] at xs[i], ys[j])."""
    out_dir = Path(out_dir)
    X, Y = np.meshgrid(xs, ys, indexing="ij")
    Z = _finite(loss)
    levels = _levels(loss)
    clipped = np.clip(Z, levels[0], levels[-1])
    paths = []

    def axes2d(name: str):
        fig = figure(5, 4.3)
        ax = fig.add_subplot(1, 1, 1)
        ax.set_xlabel(labels[0])
        ax.set_ylabel(labels[1])
        ax.set_title(f"{title} {name}".strip(), fontsize=9)
        _plain_ticks(ax.xaxis, ax.yaxis)
        return fig, ax

    def trace(ax):
        if trajectory is not None:
            ax.plot(trajectory[:, 0], trajectory[:, 1], "-o", color="black", ms=3, lw=1)
            ax.plot(trajectory[-1:, 0], trajectory[-1:, 1], "*", color="red", ms=10)

    fig, ax = axes2d("contour")
    cs = ax.contour(X, Y, Z, levels=levels, cmap="viridis", norm=LogNorm(levels[0], levels[-1]), linewidths=0.8)
    ax.clabel(cs, cs.levels[::4], fontsize=6, fmt="%.3g")
    trace(ax)
    paths.append(save_figure(fig, out_dir / f"{prefix}_contour", pdf=True))

    fig, ax = axes2d("filled contour")
    cf = ax.contourf(X, Y, clipped, levels=levels, cmap="viridis", norm=LogNorm(levels[0], levels[-1]), extend="max")
    fig.colorbar(cf, ax=ax, label="loss", format="%.3g")
    trace(ax)
    paths.append(save_figure(fig, out_dir / f"{prefix}_contourf", pdf=True))

    fig, ax = axes2d("heatmap")
    im = ax.pcolormesh(X, Y, clipped, cmap="viridis", norm=LogNorm(levels[0], levels[-1]), shading="nearest")
    fig.colorbar(im, ax=ax, label="loss")
    trace(ax)
    paths.append(save_figure(fig, out_dir / f"{prefix}_heatmap"))

    fig = figure(5.5, 4.5)
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    ax.plot_surface(X, Y, clipped, cmap="viridis", linewidth=0, antialiased=True, rcount=100, ccount=100)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    ax.set_zlabel("loss")
    _plain_ticks(ax.xaxis, ax.yaxis, ax.zaxis)
    ax.set_title(f"{title} surface (clipped at {levels[-1]:.3g})".strip(), fontsize=9)
    paths.append(save_figure(fig, out_dir / f"{prefix}_surface", pdf=True))
    return paths


def plot_grid(
    res: dict,
    out_dir: str | Path,
    prefix: str = "landscape",
    title: str = "",
    trajectory: np.ndarray | None = None,
    labels: tuple[str, str] = ("d1", "d2"),
) -> list[Path]:
    """The figures of an evaluated grid: 1D curve, or contour/filled/surface/heatmap plus the two
    central 1D slices for 2D."""
    out_dir = Path(out_dir)
    axes = res["axes"]
    if len(axes) == 1:
        return [plot_1d(axes[0], res["loss"], res["acc"], out_dir / f"{prefix}_1d", labels[0], title)]
    paths = plot_2d(axes[0], axes[1], res["loss"], out_dir, prefix, trajectory, labels, title)
    j0, i0 = int(np.abs(axes[1]).argmin()), int(np.abs(axes[0]).argmin())
    paths.append(
        plot_1d(axes[0], res["loss"][:, j0], res["acc"][:, j0], out_dir / f"{prefix}_slice_d1", labels[0], title)
    )
    paths.append(
        plot_1d(axes[1], res["loss"][i0, :], res["acc"][i0, :], out_dir / f"{prefix}_slice_d2", labels[1], title)
    )
    return paths


# ---------------------------------------------------------------- entry points


def grid_directions(model: nn.Module, out_dir: Path, dims: int, norm: str, ignore: str, seed: int) -> list[Tensors]:
    """The grid's random directions, saved once to directions.pt so a resumed or sharded grid
    (another process, another machine) uses exactly the same ones."""
    path = out_dir / "directions.pt"
    settings = {"dims": dims, "norm": norm, "ignore": ignore, "seed": seed}
    if path.exists():
        saved = _read_directions(path, model)
        if saved["settings"] != settings:
            raise UserError(f"{path} was made with {saved['settings']}, not {settings}; use another output folder")
        return saved["directions"]
    g = torch.Generator().manual_seed(seed)
    dirs = [random_direction(model, norm, ignore, g) for _ in range(dims)]
    atomic_torch_save({"settings": settings, "directions": [{n: t.cpu() for n, t in d.items()} for d in dirs]}, path)
    return dirs


def _read_directions(path: Path, model: nn.Module) -> dict:
    try:
        saved = torch.load(path, map_location=model_device(model), weights_only=True)
    except Exception as e:  # cut short by a kill or a full disk: torch says RuntimeError, EOFError, ...
        saved, why = None, (str(e).split(". ")[0] or type(e).__name__)[:160]
    else:
        why = "not a directions file"
    ok = isinstance(saved, dict) and isinstance(saved.get("settings"), dict)
    dirs = saved.get("directions") if ok else None
    if not (isinstance(dirs, list) and all(isinstance(d, dict) for d in dirs)):
        raise UserError(f"cannot read {path} ({why}); delete it to make new directions")
    return saved


def run_landscape(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    out_dir: str | Path,
    *,
    dims: int = 2,
    xrange: str | Sequence[float] = "-1:1:51",
    yrange: str | Sequence[float] | None = None,
    norm: str = "filter",
    ignore: str = "biasbn",
    seed: int = 0,
    shard: tuple[int, int] = (0, 1),
    method: str = "auto",
    chunk: int = 8,
    batch_size: int = 500,
    bn: str = "eval",
    amp: bool = False,
    loss_fn: LossFn | None = None,
    progress: bool = True,
) -> dict:
    """The loss landscape around the model's weights along `dims` (1 or 2) random directions.

    x, y: the fixed data subset (normalized, on the model's device), e.g. 10,000 training images.
    Writes directions.pt, landscape.npz (resumable; per shard when sharded) and, once the grid is
    complete, the figures. Returns the grid summary (loss at the centre, min, figures, paths).
    """
    if dims not in (1, 2):
        raise UserError(f"landscape dims must be 1 or 2, got {dims}")
    check_counts(chunk=(chunk, 1), batch_size=(batch_size, 1))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    axes = [parse_range(xrange)] + ([parse_range(yrange if yrange is not None else xrange)] if dims == 2 else [])
    dirs = grid_directions(model, out_dir, dims, norm, ignore, seed)
    res = evaluate_grid(
        model,
        x,
        y,
        dirs,
        axes,
        path=out_dir / "landscape",
        shard=shard,
        method=method,
        chunk=chunk,
        batch_size=batch_size,
        loss_fn=loss_fn,
        bn=bn,
        amp=amp,
        progress=progress,
    )
    figures = plot_grid(res, out_dir, "landscape", f"{norm}-normalized") if res["done"].all() else []
    return _summary(res, figures, shard_path(out_dir / "landscape", shard))


def run_merge_shards(out_dir: str | Path, n_shards: int, name: str = "landscape") -> dict:
    """Join out_dir/<name>.shard<i>of<n>.npz (from run_landscape with shard=(i, n) on several
    workers) into <name>.npz and draw the figures once every point is there."""
    out_dir = Path(out_dir)
    paths = [shard_path(out_dir / name, (i, n_shards)) for i in range(n_shards)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise UserError(f"missing shard files: {', '.join(missing)}")
    res = merge_shards(paths, out_dir / name)
    figures = plot_grid(res, out_dir, name) if res["done"].all() else []
    return _summary(res, figures, with_suffix(out_dir / name, ".npz"))


def _summary(res: dict, figures: list[Path], path: Path) -> dict:
    loss = res["loss"]
    centre = tuple(int(np.abs(a).argmin()) for a in res["axes"])
    done = res["done"]
    return {
        "complete": bool(done.all()),
        "points_done": int(done.sum()),
        "points": int(done.size),
        "evaluated_now": res["evaluated"],
        "loss_at_centre": float(loss[centre]),
        "acc_at_centre": float(res["acc"][centre]),
        "min_loss": float(np.nanmin(loss)) if done.any() else float("nan"),
        "figures": [str(f) for f in figures],
        "arrays": str(path),
    }


def run_interpolation(
    model: nn.Module,
    state_a: dict,
    state_b: dict,
    x: torch.Tensor,
    y: torch.Tensor,
    out_dir: str | Path,
    *,
    alphas: str | Sequence[float] = "-0.5:1.5:41",
    method: str = "auto",
    chunk: int = 8,
    batch_size: int = 500,
    bn: str = "eval",
    amp: bool = False,
    loss_fn: LossFn | None = None,
    progress: bool = True,
) -> dict:
    """Loss and accuracy along (1 - t) * a + t * b between two checkpoints' state dicts (parameters
    and BN running statistics both interpolated). Writes interpolation.npz and interpolation_1d.png."""
    out_dir = Path(out_dir)
    device = model_device(model)
    base, direction = state_difference(state_a, state_b)
    base = {k: v.to(device) for k, v in base.items()}
    direction = {k: v.to(device) for k, v in direction.items()}
    res = evaluate_grid(
        model,
        x,
        y,
        [direction],
        [parse_range(alphas)],
        base=base,
        path=out_dir / "interpolation",
        method=method,
        chunk=chunk,
        batch_size=batch_size,
        loss_fn=loss_fn,
        bn=bn,
        amp=amp,
        progress=progress,
    )
    figures = plot_grid(res, out_dir, "interpolation", "checkpoint a (0) to b (1)", labels=("t", ""))
    return _summary(res, figures, out_dir / "interpolation.npz")


def run_trajectory(
    model: nn.Module,
    states: Sequence[dict],
    x: torch.Tensor,
    y: torch.Tensor,
    out_dir: str | Path,
    *,
    steps: int = 21,
    margin: float = 0.3,
    ignore: str = "biasbn",
    method: str = "auto",
    chunk: int = 8,
    batch_size: int = 500,
    bn: str = "eval",
    amp: bool = False,
    loss_fn: LossFn | None = None,
    progress: bool = True,
) -> dict:
    """Li et al.'s PCA plot: the loss around the last of `states` (saved checkpoints' state dicts, in
    training order) on the top-2 PCA directions of the trajectory, with the trajectory drawn on it.
    The grid spans the trajectory's coordinates plus `margin` of their range on each side."""
    out_dir = Path(out_dir)
    device = model_device(model)
    final = {k: v.to(device) for k, v in states[-1].items() if torch.is_tensor(v)}
    names = [n for n, _ in model.named_parameters()]
    dirs, coords, ratio = pca_directions(states, final, names, ignore)
    axes = []
    for j in range(2):
        lo, hi = float(min(coords[:, j].min(), 0)), float(max(coords[:, j].max(), 0))
        pad = margin * max(hi - lo, 1e-3)
        axes.append(np.linspace(lo - pad, hi + pad, steps))
    base = {k: v.float() for k, v in final.items() if v.is_floating_point()}
    res = evaluate_grid(
        model,
        x,
        y,
        dirs,
        axes,
        base=base,
        path=out_dir / "trajectory",
        method=method,
        chunk=chunk,
        batch_size=batch_size,
        loss_fn=loss_fn,
        bn=bn,
        amp=amp,
        progress=progress,
    )
    labels = (f"PC1 ({ratio[0]:.1%})", f"PC2 ({ratio[1]:.1%})")
    figures = plot_grid(res, out_dir, "trajectory", "training trajectory", trajectory=coords, labels=labels)
    save_arrays(out_dir / "trajectory_pca", coords=coords, explained_variance_ratio=ratio)
    out = _summary(res, figures, out_dir / "trajectory.npz")
    out["explained_variance_ratio"] = ratio.tolist()
    return out
