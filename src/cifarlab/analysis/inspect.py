"""Run an analysis of a checkpoint: `inspect(checkpoint, analysis, out=None, **options)`.

The one entry point of `cifarlab inspect` (cli/inspect.py parses, then calls it) and of pj2's
analyses. It loads the checkpoint once (with its data and normalization), runs one analysis (or
`all`), writes OUT/result.json last and returns the result dict of the analysis modules
(run_filters, run_landscape, ...).

    from cifarlab.analysis.inspect import inspect
    res = inspect("runs/best_model", "landscape", grid="-1:1:21", n=2000)
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from cifarlab.errors import UserError

ANALYSES = (
    "filters",
    "features",
    "gradcam",
    "metrics",
    "landscape",
    "interpolate",
    "trajectory",
    "hessian",
    "probes",
    "all",
)
ALL = ("filters", "features", "gradcam", "metrics", "landscape")  # what `all` runs
COARSE = {"grid": "-1:1:11", "n": 500}  # the landscape of `all`: a first look, minutes on a CPU
SPLITS = ("train", "test")
# probes: step sizes as bn-study's defaults (eta_range 0.05..0.4, 8 of them, times the run's learning rate)
PROBE_ETAS = (0.05, 0.4, 8)
PROBE_BATCHES = 4  # probes: --n defaults to this many batches of --batch-size


@dataclass
class InspectOptions:
    """The options of every analysis, with their defaults (the command's help says what each does).

    None means "the analysis' own default" (features shows 4 images, gradcam 16, ...).
    """

    data: str | None = None  # data source (default: the one the run was trained on)
    device: str = "auto"
    batch_size: int = 500
    seed: int | None = None  # directions / vectors (None: 0); given, also a random image subset (see Session.images)
    # filters, features, gradcam
    layer: str | list[str] | None = None  # dotted names, a list or comma-separated
    kernel_mode: str = "mean"
    n_images: int | None = None
    methods: str = "all"
    target: str | None = None
    # landscape, interpolate, trajectory
    dims: int = 2
    grid: str | None = None
    n: int | None = None
    split: str = "train"  # landscape, interpolate, trajectory, hessian, probes: the images used
    norm: str = "filter"
    include_biasbn: bool = False
    bn: str | None = None  # None: eval, but train for probes (Santurkar et al. probe the training-mode network)
    shard: str | None = None
    merge: int | None = None
    chunk: int = 8
    method: str = "auto"
    amp: bool = False
    hessian_grid: str | None = None
    hessian_n: int = 1000
    other: str | None = None
    steps: int = 21
    margin: float = 0.3
    # hessian
    k: int = 3
    iters: int = 100
    trace_samples: int = 50
    # probes
    etas: str | None = None  # min:max:num step sizes (None: PROBE_ETAS times the run's learning rate)


OPTIONS = tuple(f.name for f in dataclasses.fields(InspectOptions))


def inspect(
    checkpoint: str | Path, analysis: str, out: str | Path | None = None, echo: bool = False, **options
) -> dict:
    """Run `analysis` (one of ANALYSES) of a checkpoint file or a run folder (its best.pt).

    Output: `out`, else RUN_DIR/analysis/<analysis>/ for a run folder, CKPT_DIR/analysis-<stem>/<analysis>/
    for a .pt file; each folder gets its figures, arrays and result.json. `all` runs ALL (the landscape
    coarse, in landscape-coarse/) into subfolders of `out` and returns {analysis: result}.
    options are InspectOptions' fields. echo prints a line per analysis (and a note on diverged grid
    points to stderr), as the command does.
    """
    from cifarlab.run import atomic_write_json

    if analysis not in ANALYSES:
        raise UserError(f"unknown analysis {analysis!r}; choose from: {', '.join(ANALYSES)}")
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"unknown inspect option {unknown[0]!r}; choose from: {', '.join(OPTIONS)}")
    o = InspectOptions(**options)
    if o.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {o.batch_size}")
    # torch scripts its forward-mode decompositions on the first Hessian-vector product and warns that
    # torch.jit.script is deprecated: torch's own business, not the user's.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")
    s = Session(checkpoint, o.device, o.data)
    names = ALL if analysis == "all" else (analysis,)
    if analysis == "all" and o.merge is not None:
        raise UserError("--merge joins landscape shards: use it with the landscape analysis")
    coarse = analysis == "all"
    results = {}
    for name in names:
        # the coarse grid gets its own folder: a saved grid only resumes with the settings it was made with
        folder = "landscape-coarse" if coarse and name == "landscape" else name
        if out:
            where = Path(out) / folder if coarse else Path(out)
        else:
            where = default_out(s.path, checkpoint, folder)
        res = run_one(s, name, where, o, coarse=coarse)
        atomic_write_json(where / "result.json", {"analysis": name, "checkpoint": str(s.path), **res})
        results[name] = res
        if echo:
            print(f"{name}: {describe(name, res, s.classes)} -> {where}", flush=True)
            note = nonfinite_note(name, res)
            if note:
                print(f"cifarlab: note: {note}", file=sys.stderr)
    return results if coarse else results[analysis]


def default_out(ckpt_path: Path, given: str | Path, analysis: str) -> Path:
    """RUN_DIR/analysis/<analysis> for a run folder, CKPT_DIR/analysis-<stem>/<analysis> for a file."""
    p = Path(given)
    return p / "analysis" / analysis if p.is_dir() else ckpt_path.parent / f"analysis-{ckpt_path.stem}" / analysis


def parse_shard(spec: str | None) -> tuple[int, int]:
    if spec is None:
        return 0, 1
    try:
        i, n = (int(v) for v in spec.split("/"))
    except ValueError:
        raise UserError(f"bad --shard {spec!r}; write I/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise UserError(f"bad --shard {spec!r}: need 0 <= I < N")
    return i, n


def or_default(value, default):
    """An option's value, or the analysis' own default when it was not given (0 is a value)."""
    return default if value is None else value


def layer_list(values: str | list[str] | None) -> list[str] | None:
    if not values:
        return None
    if isinstance(values, str):
        values = [values]
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def class_index(target: str | None, classes: list[str]) -> int | None:
    if target is None:
        return None
    if target in classes:
        return classes.index(target)
    try:
        k = int(target)
    except ValueError:
        raise UserError(f"unknown class {target!r}; classes: {', '.join(classes)}") from None
    if not 0 <= k < len(classes):
        raise UserError(f"class index {k} out of range 0..{len(classes) - 1}")
    return k


class Session:
    """A loaded checkpoint with its data and normalization, shared by the analyses of one call."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", data: str | None = None):
        from cifarlab.train.checkpoint import checkpoint_path, checkpoint_stats, load_model
        from cifarlab.train.device import pick_device

        self.data = data
        self.path = checkpoint_path(checkpoint)
        self.device = pick_device(device)
        self.model, self.ckpt = load_model(self.path, self.device)
        self.classes = list(self.ckpt.get("classes") or [])
        self.channels = int(self.ckpt.get("model_options", {}).get("in_channels") or 3)
        self.mean, self.std = checkpoint_stats(self.ckpt, self.channels)
        self._ds = None

    @property
    def ds(self):
        if self._ds is None:
            from cifarlab.train.checkpoint import checkpoint_data

            ds = checkpoint_data(self.ckpt, self.data)
            shape = self.ckpt.get("image_shape")
            if shape and list(shape) != list(ds.image_shape):
                raise UserError(f"the model takes {tuple(shape)} images, but {ds.name} has {tuple(ds.image_shape)}")
            self._ds = ds
        return self._ds

    def inputs(self, images):
        from .plotting import to_input

        return to_input(images, self.mean, self.std, self.device)

    def test(self, n: int | None = None):
        if n is not None and n < 1:
            raise UserError(f"--n-images must be at least 1, got {n}")
        x, y = self.ds.test_x, self.ds.test_y
        return self.inputs(x[:n] if n else x), (y[:n] if n else y).to(self.device)

    def images(self, split: str, n: int, seed: int | None = None):
        """(x, y, info): n images of the split, no augmentation; all of them if it has fewer.

        Without a seed the first n (a fixed subset, as before seeds existed); with one, n drawn at
        random without replacement by numpy's default_rng(seed), sorted. The first m < n drawn with a
        seed are a subset of the n, so --hessian-n images come from the landscape's own. info (for
        the JSON) has split, seed, n_images and the indices (None: the first n_images).
        """
        import numpy as np
        import torch

        if split not in SPLITS:
            raise UserError(f"unknown --split {split!r}; use {' or '.join(SPLITS)}")
        if n < 1:
            raise UserError(f"--n must be at least 1, got {n}")
        if split == "train" and self.ds.test_only:
            raise UserError(f"{self.ds.name} is test-only data (no training images): pass --split test")
        x, y = (self.ds.train_x, self.ds.train_y) if split == "train" else (self.ds.test_x, self.ds.test_y)
        idx = None
        if seed is None:
            x, y = x[:n], y[:n]
        else:
            idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
            x, y = x[torch.from_numpy(idx)], y[torch.from_numpy(idx)]
        info = {
            "split": split,
            "seed": seed,
            "n_images": int(len(y)),
            "subset": "first n_images" if idx is None else "random without replacement",
            "indices": None if idx is None else idx.tolist(),
        }
        return self.inputs(x), y.to(self.device), info

    def learning_rate(self) -> float:
        """The run's (initial) learning rate, optim.lr of its config; 1 when the checkpoint does not say."""
        return float(self.ckpt.get("config", {}).get("optim", {}).get("lr") or 1.0)

    def loss_fn(self):
        from cifarlab.train.losses import make_loss

        name = self.ckpt.get("config", {}).get("train", {}).get("loss", "ce")
        return make_loss(name, 0.0, len(self.classes) or 10)  # no label smoothing: the plain loss


def run_one(s: Session, analysis: str, out: Path, a: InspectOptions | None = None, coarse: bool = False) -> dict:
    """Dispatch one analysis (not `all`); returns its library result (inspect() writes out/result.json)."""
    from cifarlab.train.checkpoint import state_of

    a = a or InspectOptions()
    progress = sys.stderr.isatty()
    if analysis == "filters":
        from .filters import run_filters

        return run_filters(s.model, out, layer_list(a.layer), a.kernel_mode)
    if analysis == "features":
        from .features import run_features

        x, _ = s.test(or_default(a.n_images, 4))
        return run_features(s.model, x, out, layer_list(a.layer), mean=s.mean, std=s.std, max_images=len(x))
    if analysis == "gradcam":
        from . import attribution

        layers = layer_list(a.layer)
        if layers and len(layers) > 1:
            raise UserError(f"gradcam takes one --layer, got {', '.join(layers)}")
        methods = attribution.METHODS if a.methods == "all" else [m.strip() for m in a.methods.split(",") if m.strip()]
        x, y = s.test(or_default(a.n_images, 16))
        return attribution.run_attribution(
            s.model,
            x,
            out,
            y=y,
            layer=layers[0] if layers else None,
            methods=methods,
            target=class_index(a.target, s.classes),
            classes=s.classes,
            mean=s.mean,
            std=s.std,
            batch_size=min(a.batch_size, 64),
            max_rows=len(x),
            split="test",  # Session.test takes the first n test images, in file order
            indices=list(range(len(x))),
        )
    if analysis == "metrics":
        from .metrics import run_metrics

        x, y = s.test()
        return run_metrics(
            s.model,
            x,
            y,
            out,
            classes=s.classes,
            mean=s.mean,
            std=s.std,
            num_classes=len(s.classes) or None,
            batch_size=a.batch_size,
        )
    from . import hessian, landscape

    seed = or_default(a.seed, 0)  # the directions' and vectors' seed; a.seed itself also picks the images
    grid_kw = dict(
        method=a.method,
        chunk=a.chunk,
        batch_size=a.batch_size,
        bn=or_default(a.bn, "eval"),
        amp=a.amp,
        loss_fn=s.loss_fn(),
        progress=progress,
    )
    ignore = "none" if a.include_biasbn else "biasbn"
    if analysis == "landscape":
        if a.hessian_grid and a.dims != 2:
            raise UserError("--hessian-grid needs a 2D landscape (--dims 2)")
        if a.hessian_grid and a.shard:
            raise UserError("--hessian-grid is computed once, not per shard: add it to the --merge command")
        n = or_default(a.n, COARSE["n"] if coarse else 10000)
        grid = a.grid or (COARSE["grid"] if coarse else "-1:1:51")
        if a.merge is not None:
            res = landscape.run_merge_shards(out, a.merge)
        else:
            x, y, data = s.images(a.split, n, a.seed)
            res = landscape.run_landscape(
                s.model,
                x,
                y,
                out,
                dims=a.dims,
                xrange=grid,
                norm=a.norm,
                ignore=ignore,
                seed=seed,
                shard=parse_shard(a.shard),
                **grid_kw,
            )
            res["data"] = data
        if a.hessian_grid:  # same directions.pt as the landscape; few power iterations per grid point
            x, y, data = s.images(a.split, min(a.hessian_n, n), a.seed)
            res["hessian_grid"] = hessian.run_hessian_grid(
                s.model,
                x,
                y,
                out,
                xrange=a.hessian_grid,
                norm=a.norm,
                ignore=ignore,
                seed=seed,
                iters=min(a.iters, 20),
                batch_size=a.batch_size,
                loss_fn=s.loss_fn(),
            )
            res["hessian_grid"]["data"] = data
        return res
    if analysis == "interpolate":
        from cifarlab.train.checkpoint import read_checkpoint

        if not a.other:
            raise UserError("interpolate needs --other CHECKPOINT (a second checkpoint of the same model)")
        other = read_checkpoint(a.other)
        if other.get("model_name") != s.ckpt.get("model_name"):
            raise UserError(f"--other holds model {other.get('model_name')}, not {s.ckpt.get('model_name')}")
        x, y, data = s.images(a.split, or_default(a.n, 10000), a.seed)
        res = landscape.run_interpolation(
            s.model, state_of(s.ckpt), state_of(other), x, y, out, alphas=a.grid or "-0.5:1.5:41", **grid_kw
        )
        return {**res, "data": data}
    if analysis == "trajectory":
        states = trajectory_states(s.path.parent)
        x, y, data = s.images(a.split, or_default(a.n, 10000), a.seed)
        res = landscape.run_trajectory(
            s.model, states, x, y, out, steps=a.steps, margin=a.margin, ignore=ignore, **grid_kw
        )
        return {**res, "data": data}
    if analysis == "hessian":
        x, y, data = s.images(a.split, or_default(a.n, 1000), a.seed)
        return hessian.run_hessian(
            s.model,
            x,
            y,
            out,
            k=a.k,
            iters=a.iters,
            trace_samples=a.trace_samples,
            batch_size=a.batch_size,
            seed=seed,
            loss_fn=s.loss_fn(),
            data=data,
            title=f"{s.ckpt.get('model_name', 'model')}, {data['n_images']} {a.split} images",
        )
    if analysis == "probes":
        import numpy as np

        from .bn_probe import run_probes

        x, y, data = s.images(a.split, or_default(a.n, PROBE_BATCHES * a.batch_size), a.seed)
        if a.etas:
            etas = landscape.parse_range(a.etas)
        else:
            etas = np.linspace(*PROBE_ETAS) * s.learning_rate()
        return run_probes(
            s.model,
            hessian.batches_of(x, y, a.batch_size),
            etas.tolist(),
            out,
            loss_fn=s.loss_fn(),
            bn=or_default(a.bn, "train"),
            data=data,
            title=f"{s.ckpt.get('model_name', 'model')}, {data['n_images']} {a.split} images",
        )
    raise UserError(f"unknown analysis {analysis!r}; choose from: {', '.join(ANALYSES)}")


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


def describe(analysis: str, res: dict, classes: list[str]) -> str:
    """One line per analysis for the terminal."""
    if analysis == "metrics":
        acc = res["per_class_accuracy"]
        worst = min(range(len(acc)), key=lambda i: acc[i] if acc[i] == acc[i] else 2.0)  # NaN: no images
        name = classes[worst] if worst < len(classes) else str(worst)
        return (
            f"accuracy {res['accuracy']:.4f}, {res['n_misclassified']} misclassified, "
            f"worst class {name} at {acc[worst]:.3f}"
        )
    if analysis == "gradcam":
        return f"{', '.join(res['methods'])} at layer {res['layer']}"
    if analysis in ("filters", "features"):
        return f"{len(res['figures'])} figures"
    if analysis == "hessian":
        eig = ", ".join(f"{v:.4g}" for v in res["eigenvalues"])
        return (
            f"largest eigenvalue {res['largest_eigenvalue']:.4g}; largest in magnitude {eig}; "
            f"trace {res['trace']:.4g} ± {res['trace_std_error']:.2g}"
        )
    if analysis == "probes":
        return (
            f"loss variation {res['loss_variation']:.4g}, gradient predictiveness {res['gradient_predictiveness']:.4g}, "
            f"effective beta-smoothness {res['beta_smooth']:.4g} ({res['n_batches']} batches)"
        )
    if "points" in res:
        s = f"{res['points_done']}/{res['points']} points"
        if res["complete"]:
            s += (
                f", loss at centre {res['loss_at_centre']:.4g} (acc {res['acc_at_centre']:.3f}), "
                f"min {res['min_loss']:.4g}"
            )
        else:
            s += " (this shard done: join the shards with --merge N)" if res["evaluated_now"] else ""
        return s
    return ""


def nonfinite_note(analysis: str, res: dict) -> str | None:
    """Say so when grid points diverged: their loss is NaN/inf and the figures leave them out."""
    if "points" not in res or not res.get("points_done"):
        return None
    import numpy as np

    with np.load(res["arrays"]) as z:
        bad = int((z["done"] & ~np.isfinite(z["loss"])).sum())
    if not bad:
        return None
    why = (
        (
            " (BN running variances extrapolated beyond the two checkpoints turn negative: try --bn train, "
            "or --grid 0:1:21)"
        )
        if analysis == "interpolate"
        else ""
    )
    return f"{bad} of {res['points_done']} points have a non-finite loss and are left out of the figures{why}"
