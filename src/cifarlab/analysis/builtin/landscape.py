"""`inspect RUN landscape | interpolate | trajectory`: the loss on a grid of weights (analysis/landscape.py),
around the trained weights, on the line to a second checkpoint, or on the plane of the training path."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from cifarlab.errors import UserError

from ..registry import option, register
from .fields import batch_size, bn, include_biasbn, n, seed, split

GROUP = "landscape, interpolate, trajectory"


@dataclass
class GridOptions:
    """What landscape, interpolate and trajectory share: the images and how the grid points are evaluated."""

    n: int = n(10000)
    split: str = split()
    seed: int | None = seed()
    batch_size: int = batch_size()
    bn: str = bn("eval")
    chunk: int = option(8, "grid points evaluated at once", metavar="K")
    method: str = option("auto", "auto (vmap on CUDA, loop on CPU) | vmap | loop")
    amp: bool = option(False, "bf16 autocast on CUDA")


@dataclass
class LandscapeOptions(GridOptions):
    dims: int = option(2, "1 or 2 random directions")
    grid: str = option("-1:1:51", "min:max:num per axis (interpolate: of the line's t)")
    norm: str = option("filter", "direction normalization: filter | layer | none")
    include_biasbn: bool = include_biasbn()
    shard: str | None = option(None, "evaluate only shard I of N of the grid points", metavar="I/N")
    merge: int | None = option(None, "join the N shard files and plot", metavar="N")
    hessian_grid: str | None = option(
        None,
        "also the top Hessian eigenvalue on a coarse grid (%(const)s when given without RANGE) of the same "
        "directions, on --hessian-n of the landscape's images, min(--iters, 20) power iterations",
        nargs="?",
        const="-1:1:5",
        metavar="RANGE",
    )
    hessian_n: int = option(1000, "images for --hessian-grid")
    iters: int = option(100)  # documented by hessian


@dataclass
class InterpolateOptions(GridOptions):
    grid: str = option("-0.5:1.5:41")
    other: str | None = option(
        None,
        "the second checkpoint (same model); parameters and BN running statistics go linearly "
        "from CHECKPOINT (0) to OTHER (1)",
    )


@dataclass
class TrajectoryOptions(GridOptions):
    include_biasbn: bool = include_biasbn()
    steps: int = option(21, "grid points per axis")
    margin: float = option(0.3, "grid beyond the path, share of its span")


def describe(res: dict, classes: list[str]) -> str:
    if "points" not in res:
        return ""
    s = f"{res['points_done']}/{res['points']} points"
    if res["complete"]:
        s += f", loss at centre {res['loss_at_centre']:.4g} (acc {res['acc_at_centre']:.3f}), min {res['min_loss']:.4g}"
    elif res["evaluated_now"]:
        s += " (this shard done: join the shards with --merge N)"
    return s


def nonfinite_note(res: dict, why: str = "") -> str | None:
    """Say so when grid points diverged: their loss is NaN/inf and the figures leave them out."""
    if "points" not in res or not res.get("points_done"):
        return None
    import numpy as np

    with np.load(res["arrays"]) as z:
        bad = int((z["done"] & ~np.isfinite(z["loss"])).sum())
    if not bad:
        return None
    return f"{bad} of {res['points_done']} points have a non-finite loss and are left out of the figures{why}"


def parse_shard(spec: str | None) -> tuple[int, int]:
    if spec is None:
        return 0, 1
    try:
        i, k = (int(v) for v in spec.split("/"))
    except ValueError:
        raise UserError(f"bad --shard {spec!r}; write I/N, e.g. 0/4") from None
    if not (k >= 1 and 0 <= i < k):
        raise UserError(f"bad --shard {spec!r}: need 0 <= I < N")
    return i, k


def grid_kw(s, o: GridOptions) -> dict:
    return dict(
        method=o.method,
        chunk=o.chunk,
        batch_size=o.batch_size,
        bn=o.bn,
        amp=o.amp,
        loss_fn=s.loss_fn(),
        progress=sys.stderr.isatty(),
    )


def direction_seed(o) -> int:
    return 0 if o.seed is None else o.seed  # the directions' and vectors' seed; o.seed itself also picks the images


def check_landscape(o: LandscapeOptions, in_all: bool) -> None:
    if in_all and o.merge is not None:
        raise UserError("--merge joins landscape shards: use it with the landscape analysis")
    if o.hessian_grid and o.dims != 2:
        raise UserError("--hessian-grid needs a 2D landscape (--dims 2)")
    if o.hessian_grid and o.shard:
        raise UserError("--hessian-grid is computed once, not per shard: add it to the --merge command")


LANDSCAPE_CAPTIONS = {
    r"hessian_grid": "Top Hessian eigenvalue on a coarse grid of the loss-landscape directions: where the loss "
    "surface is sharpest.",
    r"landscape_1d": "Loss (solid) and accuracy (dashed) along one random filter-normalized direction through the "
    "trained weights.",
    r"landscape_contour": "Contour lines of the loss on the plane of two random filter-normalized directions "
    "around the trained weights (centre).",
    r"landscape_contourf": "Filled contour of the loss around the trained weights on two random "
    "filter-normalized directions (log colour scale).",
    r"landscape_heatmap": "Heatmap of the loss around the trained weights on two random filter-normalized directions.",
    r"landscape_surface": "The loss landscape around the trained weights as a 3D surface (clipped at a high percentile).",
    r"landscape_slice_d(?P<k>\d)": "Loss and accuracy along direction d{k} alone: the central slice of the 2D landscape.",
}


@register(
    "landscape",
    LandscapeOptions,
    describe=describe,
    captions=LANDSCAPE_CAPTIONS,
    group=GROUP,
    in_all=True,
    coarse={"grid": "-1:1:11", "n": 500},  # the landscape of `all`: a first look, minutes on a CPU
    check=check_landscape,
    note=nonfinite_note,
)
def landscape(s, o: LandscapeOptions, out: Path) -> dict:
    from .. import hessian
    from .. import landscape as ls

    ignore = "none" if o.include_biasbn else "biasbn"
    if o.merge is not None:
        res = ls.run_merge_shards(out, o.merge)
    else:
        x, y, data = s.images(o.split, o.n, o.seed)
        res = ls.run_landscape(
            s.model,
            x,
            y,
            out,
            dims=o.dims,
            xrange=o.grid,
            norm=o.norm,
            ignore=ignore,
            seed=direction_seed(o),
            shard=parse_shard(o.shard),
            **grid_kw(s, o),
        )
        res["data"] = data
    if o.hessian_grid:  # same directions.pt as the landscape; few power iterations per grid point
        x, y, data = s.images(o.split, min(o.hessian_n, o.n), o.seed)
        res["hessian_grid"] = hessian.run_hessian_grid(
            s.model,
            x,
            y,
            out,
            xrange=o.hessian_grid,
            norm=o.norm,
            ignore=ignore,
            seed=direction_seed(o),
            iters=min(o.iters, 20),
            batch_size=o.batch_size,
            loss_fn=s.loss_fn(),
        )
        res["hessian_grid"]["data"] = data
    return res


def check_interpolate(o: InterpolateOptions, in_all: bool) -> None:
    if not o.other:
        raise UserError("interpolate needs --other CHECKPOINT (a second checkpoint of the same model)")


@register(
    "interpolate",
    InterpolateOptions,
    describe=describe,
    captions={
        r"interpolation_1d": "Loss and accuracy on the straight line between two checkpoints (t=0: the first, "
        "t=1: the second).",
        r"interpolation_.*": "Loss between two checkpoints along the straight line joining them.",
    },
    group=GROUP,
    needs=("a second checkpoint (--other)",),
    check=check_interpolate,
    note=lambda res: nonfinite_note(
        res,
        " (BN running variances extrapolated beyond the two checkpoints turn negative: try --bn train, "
        "or --grid 0:1:21)",
    ),
)
def interpolate(s, o: InterpolateOptions, out: Path) -> dict:
    from cifarlab.train.checkpoint import read_checkpoint, state_of

    from .. import landscape as ls

    other = read_checkpoint(o.other)
    if other.get("model_name") != s.ckpt.get("model_name"):
        raise UserError(f"--other holds model {other.get('model_name')}, not {s.ckpt.get('model_name')}")
    x, y, data = s.images(o.split, o.n, o.seed)
    res = ls.run_interpolation(s.model, state_of(s.ckpt), state_of(other), x, y, out, alphas=o.grid, **grid_kw(s, o))
    return {**res, "data": data}


def trajectory_states(run_dir: Path) -> list[dict]:
    """State dicts of the run's ckpt_epochNNN.pt (train.save_every) in epoch order, then last.pt if later."""
    from cifarlab.train.checkpoint import read_checkpoint, state_of

    ckpts = sorted((read_checkpoint(f) for f in run_dir.glob("ckpt_epoch*.pt")), key=lambda c: c.get("epoch", -1))
    last = run_dir / "last.pt"
    if last.is_file():
        final = read_checkpoint(last)
        if not ckpts or final.get("epoch", -1) > ckpts[-1].get("epoch", -1):
            ckpts.append(final)
    if len(ckpts) < 3:
        raise UserError(
            f"{run_dir} has {len(ckpts)} checkpoints; a trajectory needs at least 3: "
            "train with --set train.save_every=1 (it keeps ckpt_epochNNN.pt)"
        )
    return [state_of(c) for c in ckpts]


@register(
    "trajectory",
    TrajectoryOptions,
    describe=describe,
    captions={
        r"trajectory_contourf?": "The training trajectory (black, star: the end) projected on its top-2 PCA "
        "directions, over the loss contours of that plane.",
        r"trajectory_heatmap": "The loss on the plane of the trajectory's top-2 PCA directions, trajectory drawn "
        "on top.",
        r"trajectory_surface": "The loss on the plane of the training trajectory's top-2 PCA directions as a 3D "
        "surface.",
        r"trajectory_slice_d(?P<k>\d)": "Loss and accuracy along PCA direction {k} of the training trajectory.",
    },
    group=GROUP,
    needs=("the run's epoch checkpoints (train.save_every)",),
    note=nonfinite_note,
)
def trajectory(s, o: TrajectoryOptions, out: Path) -> dict:
    from .. import landscape as ls

    states = trajectory_states(s.path.parent)
    x, y, data = s.images(o.split, o.n, o.seed)
    ignore = "none" if o.include_biasbn else "biasbn"
    res = ls.run_trajectory(s.model, states, x, y, out, steps=o.steps, margin=o.margin, ignore=ignore, **grid_kw(s, o))
    return {**res, "data": data}
