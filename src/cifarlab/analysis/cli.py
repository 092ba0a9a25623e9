"""`cifarlab inspect`, `cifarlab predict`, `cifarlab export`: parsers and thin command functions.

The work lives in the analysis modules (run_filters, run_landscape, ...), cifarlab.predict and
cifarlab.export; this file only turns a checkpoint plus options into their arguments and prints.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from pathlib import Path

from cifarlab.errors import UserError

ANALYSES = ("filters", "features", "gradcam", "metrics", "landscape", "interpolate", "trajectory", "hessian", "all")
ALL = ("filters", "features", "gradcam", "metrics", "landscape")  # what `all` runs
COARSE = {"grid": "-1:1:11", "n": 500}  # the landscape of `all`: a first look, minutes on a CPU

INSPECT_EPILOG = """\
output: RUN_DIR/analysis/<analysis>/ for a run folder, CKPT_DIR/analysis-<stem>/<analysis>/ for a
.pt file, or --out DIR; each folder gets its figures (PNG), arrays (.npz) and result.json.
`all` puts its coarse landscape in landscape-coarse/.

landscape on several GPUs or machines: every worker evaluates its share of the grid points
into its own file (landscape.shard<i>of<n>.npz, saved after every chunk), then one merge joins
them and draws the figures. Workers must share the output folder (or copy the shard files
together) and use the same options; the directions come from --seed, so they agree anywhere.
  for i in 0 1 2 3; do
    CUDA_VISIBLE_DEVICES=$i cifarlab inspect RUN landscape --shard $i/4 &
  done; wait
  cifarlab inspect RUN landscape --merge 4
With Ray, run the same command as one task per shard (num_gpus=1 each), then the merge.
An interrupted grid (or shard) resumes where it stopped: run the same command again.
"""


# ---------------------------------------------------------------- parsers


def add_inspect_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "inspect", help="look inside a trained network: filters, feature maps, Grad-CAM, errors, landscapes, Hessian",
        description="Run one analysis of a checkpoint (or a run folder's best.pt) and write its figures and arrays.",
        epilog=INSPECT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a .pt file or a run folder")
    p.add_argument("analysis",
                   help=f"one of: {', '.join(ANALYSES)}; all runs {', '.join(ALL[:-1])} and a coarse landscape")
    p.add_argument("--data", help="data source (default: the one the run was trained on)")
    p.add_argument("--out", help="output folder (default: see below)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=500, help="images per forward pass (default 500)")
    p.add_argument("--seed", type=int, default=0, help="random directions / vectors (default 0)")

    g = p.add_argument_group("filters, features, gradcam")
    g.add_argument("--layer", action="append", metavar="NAME",
                   help="layer(s) by dotted name, repeatable or comma-separated (default: one per stage; "
                        "gradcam: the last with a map of at least 4x4)")
    g.add_argument("--kernel-mode", default="mean", help="filters of deeper layers: mean (over inputs) | first")
    g.add_argument("--n-images", type=int, default=None, help="test images shown (features 4, gradcam 16)")
    g.add_argument("--methods", default="all",
                   help="gradcam: comma list of gradcam, gradcam++, layercam, guided_gradcam, "
                        "integrated_gradients (default all)")
    g.add_argument("--target", default=None, help="gradcam: class name or index (default: the predicted class)")

    g = p.add_argument_group("landscape, interpolate, trajectory")
    g.add_argument("--dims", type=int, default=2, help="landscape: 1 or 2 random directions (default 2)")
    g.add_argument("--grid", default=None,
                   help="min:max:num per axis (landscape -1:1:51, `all` -1:1:11; interpolate -0.5:1.5:41)")
    g.add_argument("--n", type=int, default=None,
                   help="the first n training images, no augmentation (landscape 10000, `all` 500, hessian 1000)")
    g.add_argument("--norm", default="filter", help="direction normalization: filter | layer | none")
    g.add_argument("--include-biasbn", action="store_true",
                   help="also move biases and BN parameters (default: zero in the directions)")
    g.add_argument("--bn", default="eval", help="BN with running statistics (eval) or batch statistics (train)")
    g.add_argument("--shard", default=None, metavar="I/N", help="evaluate only shard I of N of the grid points")
    g.add_argument("--merge", type=int, default=None, metavar="N", help="join the N shard files and plot")
    g.add_argument("--chunk", type=int, default=8, metavar="K", help="grid points evaluated at once (default 8)")
    g.add_argument("--method", default="auto", help="auto (vmap on CUDA, loop on CPU) | vmap | loop")
    g.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    g.add_argument("--hessian-grid", nargs="?", const="-1:1:5", default=None, metavar="RANGE",
                   help="landscape: also the top Hessian eigenvalue on a coarse grid (default -1:1:5) of "
                        "the same directions, on the first --hessian-n images, min(--iters, 20) power iterations")
    g.add_argument("--hessian-n", type=int, default=1000, help="images for --hessian-grid (default 1000)")
    g.add_argument("--other", help="interpolate: the second checkpoint (same model); parameters and BN "
                                   "running statistics go linearly from CHECKPOINT (0) to OTHER (1)")
    g.add_argument("--steps", type=int, default=21, help="trajectory: grid points per axis (default 21)")
    g.add_argument("--margin", type=float, default=0.3, help="trajectory: grid beyond the path, share of its span")

    g = p.add_argument_group("hessian")
    g.add_argument("--k", type=int, default=3, help="top eigenvalues (default 3)")
    g.add_argument("--iters", type=int, default=100, help="power iterations per eigenvalue (default 100)")
    g.add_argument("--trace-samples", type=int, default=50, help="Hutchinson samples for the trace (default 50)")
    # Let ranges that start with a minus (--grid -1:1:51) be values, not options: argparse only
    # knows plain negative numbers. (A private attribute; --grid=-1:1:51 works regardless.)
    p._negative_number_matcher = re.compile(r"^-\.?\d[\d.:eE+-]*$")
    p.set_defaults(fn=cmd_inspect)
    return p


def add_predict_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="classify image files with a checkpoint (top-k, optional Grad-CAM)",
                       description="Classify image files of any size or mode: each is converted to the model's "
                                   "channels and resized to its input size.")
    p.add_argument("checkpoint", help="a .pt file or a run folder")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG, JPEG, ... files")
    p.add_argument("--topk", type=int, default=3, help="classes shown per image (default 3)")
    p.add_argument("--gradcam", action="store_true", help="save IMAGE_STEM.gradcam.png beside each image (or in --out)")
    p.add_argument("--layer", default=None, help="Grad-CAM layer (default: the last with a map of at least 4x4)")
    p.add_argument("--out", default=None, help="folder for the Grad-CAM figures")
    p.add_argument("--data", default=None, help="data source, only for old checkpoints without image_shape")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(fn=cmd_predict)
    return p


def add_export_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("export", help="export a checkpoint to ONNX or TorchScript, checked against PyTorch",
                       description="Export the model and check the exported file gives the same outputs as "
                                   "PyTorch on random inputs (max abs diff printed); written atomically.")
    p.add_argument("checkpoint", help="a .pt file or a run folder")
    p.add_argument("--format", required=True, help="onnx | torchscript")
    p.add_argument("--out", default=None, help="output file (default: beside the checkpoint, best.onnx / "
                                               "best.torchscript.pt)")
    p.add_argument("--exporter", default="auto",
                   help="ONNX exporter: auto (dynamo if onnxscript is installed, else legacy) | dynamo | legacy")
    p.add_argument("--data", default=None, help="data source, only for old checkpoints without image_shape")
    p.set_defaults(fn=cmd_export)
    return p


# ---------------------------------------------------------------- inspect


def default_out(ckpt_path: Path, given: str, analysis: str) -> Path:
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


def layer_list(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
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
    """A loaded checkpoint with its data and normalization, shared by the analyses of one command."""

    def __init__(self, a):
        from cifarlab.predict import checkpoint_stats
        from cifarlab.train.checkpoint import checkpoint_path, load_model
        from cifarlab.train.engine import pick_device

        self.a = a
        self.path = checkpoint_path(a.checkpoint)
        self.device = pick_device(a.device)
        self.model, self.ckpt = load_model(self.path, self.device)
        self.classes = list(self.ckpt.get("classes") or [])
        self.channels = int(self.ckpt.get("model_options", {}).get("in_channels") or 3)
        self.mean, self.std = checkpoint_stats(self.ckpt, self.channels)
        self._ds = None

    @property
    def ds(self):
        if self._ds is None:
            from cifarlab.evaluate import checkpoint_data

            ds = checkpoint_data(self.ckpt, self.a.data)
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

    def train(self, n: int):
        """The first n training images: a fixed subset, no augmentation."""
        if n < 1:
            raise UserError(f"--n must be at least 1, got {n}")
        return self.inputs(self.ds.train_x[:n]), self.ds.train_y[:n].to(self.device)

    def loss_fn(self):
        from cifarlab.train.losses import make_loss

        name = self.ckpt.get("config", {}).get("train", {}).get("loss", "ce")
        return make_loss(name, 0.0, len(self.classes) or 10)  # no label smoothing: the plain loss


def state_of(ckpt: dict) -> dict:
    """The weights load_model uses: the EMA copy when the run kept one."""
    return ckpt["ema"] if ckpt.get("ema") else ckpt["model"]


def run_one(s: Session, analysis: str, out: Path, coarse: bool = False) -> dict:
    """Dispatch one analysis; returns its library result (also written to out/result.json)."""
    a = s.a
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
        return attribution.run_attribution(s.model, x, out, y=y, layer=layers[0] if layers else None, methods=methods,
                                           target=class_index(a.target, s.classes), classes=s.classes, mean=s.mean,
                                           std=s.std, batch_size=min(a.batch_size, 64), max_rows=len(x))
    if analysis == "metrics":
        from .metrics import run_metrics

        x, y = s.test()
        return run_metrics(s.model, x, y, out, s.classes, s.mean, s.std, len(s.classes) or None,
                           batch_size=a.batch_size)
    from . import hessian, landscape

    grid_kw = dict(method=a.method, chunk=a.chunk, batch_size=a.batch_size, bn=a.bn, amp=a.amp,
                   loss_fn=s.loss_fn(), progress=progress)
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
            x, y = s.train(n)
            res = landscape.run_landscape(s.model, x, y, out, dims=a.dims, xrange=grid, norm=a.norm, ignore=ignore,
                                          seed=a.seed, shard=parse_shard(a.shard), **grid_kw)
        if a.hessian_grid:  # same directions.pt as the landscape; few power iterations per grid point
            x, y = s.train(min(a.hessian_n, n))
            res["hessian_grid"] = hessian.run_hessian_grid(s.model, x, y, out, xrange=a.hessian_grid, norm=a.norm,
                                                           ignore=ignore, seed=a.seed, iters=min(a.iters, 20),
                                                           batch_size=a.batch_size, loss_fn=s.loss_fn())
        return res
    if analysis == "interpolate":
        from cifarlab.train.checkpoint import read_checkpoint

        if not a.other:
            raise UserError("interpolate needs --other CHECKPOINT (a second checkpoint of the same model)")
        other = read_checkpoint(a.other)
        if other.get("model_name") != s.ckpt.get("model_name"):
            raise UserError(f"--other holds model {other.get('model_name')}, not {s.ckpt.get('model_name')}")
        x, y = s.train(or_default(a.n, 10000))
        return landscape.run_interpolation(s.model, state_of(s.ckpt), state_of(other), x, y, out,
                                           alphas=a.grid or "-0.5:1.5:41", **grid_kw)
    if analysis == "trajectory":
        states = trajectory_states(s.path.parent)
        x, y = s.train(or_default(a.n, 10000))
        return landscape.run_trajectory(s.model, states, x, y, out, steps=a.steps, margin=a.margin, ignore=ignore,
                                        **grid_kw)
    if analysis == "hessian":
        x, y = s.train(or_default(a.n, 1000))
        return hessian.run_hessian(s.model, x, y, out, k=a.k, iters=a.iters, trace_samples=a.trace_samples,
                                   batch_size=a.batch_size, seed=a.seed, loss_fn=s.loss_fn())
    raise UserError(f"unknown analysis {analysis!r}; choose from: {', '.join(ANALYSES)}")


def trajectory_states(run_dir: Path) -> list[dict]:
    """State dicts of the run's ckpt_epochNNN.pt (train.save_every) in epoch order, then last.pt if later."""
    from cifarlab.train.checkpoint import read_checkpoint

    ckpts = sorted((read_checkpoint(f) for f in run_dir.glob("ckpt_epoch*.pt")), key=lambda c: c.get("epoch", -1))
    last = run_dir / "last.pt"
    if last.is_file():
        final = read_checkpoint(last)
        if not ckpts or final.get("epoch", -1) > ckpts[-1].get("epoch", -1):
            ckpts.append(final)
    if len(ckpts) < 3:
        raise UserError(f"{run_dir} has {len(ckpts)} checkpoints; a trajectory needs at least 3: "
                        "train with --set train.save_every=1 (it keeps ckpt_epochNNN.pt)")
    return [state_of(c) for c in ckpts]


def describe(analysis: str, res: dict, classes: list[str]) -> str:
    """One line per analysis for the terminal."""
    if analysis == "metrics":
        acc = res["per_class_accuracy"]
        worst = min(range(len(acc)), key=lambda i: acc[i] if acc[i] == acc[i] else 2.0)  # NaN: no images
        name = classes[worst] if worst < len(classes) else str(worst)
        return (f"accuracy {res['accuracy']:.4f}, {res['n_misclassified']} misclassified, "
                f"worst class {name} at {acc[worst]:.3f}")
    if analysis == "gradcam":
        return f"{', '.join(res['methods'])} at layer {res['layer']}"
    if analysis in ("filters", "features"):
        return f"{len(res['figures'])} figures"
    if analysis == "hessian":
        eig = ", ".join(f"{v:.4g}" for v in res["eigenvalues"])
        return f"top eigenvalues {eig}; trace {res['trace']:.4g} ± {res['trace_std_error']:.2g}"
    if "points" in res:
        s = f"{res['points_done']}/{res['points']} points"
        if res["complete"]:
            s += (f", loss at centre {res['loss_at_centre']:.4g} (acc {res['acc_at_centre']:.3f}), "
                  f"min {res['min_loss']:.4g}")
        else:
            s += " (this shard done: join the shards with --merge N)" if res["evaluated_now"] else ""
        return s
    return ""


def cmd_inspect(a) -> None:
    from cifarlab.run import atomic_write_json

    if a.analysis not in ANALYSES:
        raise UserError(f"unknown analysis {a.analysis!r}; choose from: {', '.join(ANALYSES)}")
    # torch scripts its forward-mode decompositions on the first Hessian-vector product and warns that
    # torch.jit.script is deprecated: torch's own business, not the user's.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")
    s = Session(a)
    names = ALL if a.analysis == "all" else (a.analysis,)
    if a.analysis == "all" and a.merge is not None:
        raise UserError("--merge joins landscape shards: use it with the landscape analysis")
    coarse = a.analysis == "all"
    for name in names:
        # the coarse grid gets its own folder: a saved grid only resumes with the settings it was made with
        folder = "landscape-coarse" if coarse and name == "landscape" else name
        if a.out:
            out = Path(a.out) / folder if coarse else Path(a.out)
        else:
            out = default_out(s.path, a.checkpoint, folder)
        res = run_one(s, name, out, coarse=coarse)
        atomic_write_json(out / "result.json", {"analysis": name, "checkpoint": str(s.path), **res})
        print(f"{name}: {describe(name, res, s.classes)} -> {out}", flush=True)
        note = nonfinite_note(name, res)
        if note:
            print(f"cifarlab: note: {note}", file=sys.stderr)


def nonfinite_note(analysis: str, res: dict) -> str | None:
    """Say so when grid points diverged: their loss is NaN/inf and the figures leave them out."""
    if "points" not in res or not res.get("points_done"):
        return None
    import numpy as np

    with np.load(res["arrays"]) as z:
        bad = int((z["done"] & ~np.isfinite(z["loss"])).sum())
    if not bad:
        return None
    why = (" (BN running variances extrapolated beyond the two checkpoints turn negative: try --bn train, "
           "or --grid 0:1:21)") if analysis == "interpolate" else ""
    return f"{bad} of {res['points_done']} points have a non-finite loss and are left out of the figures{why}"


# ---------------------------------------------------------------- predict, export


def cmd_predict(a) -> None:
    from cifarlab.predict import predict_files
    from cifarlab.train.checkpoint import load_model
    from cifarlab.train.engine import pick_device

    if a.topk < 1:
        raise UserError(f"--topk must be at least 1, got {a.topk}")
    model, ckpt = load_model(a.checkpoint, pick_device(a.device))
    results = predict_files(model, ckpt, a.images, a.topk, a.gradcam, a.out, a.layer, a.data)
    if a.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        tops = "  ".join(f"{t['class']} {t['prob']:.1%}" for t in r["top"])
        print(f"{r['image']}: {tops}" + (f"  (Grad-CAM: {r['gradcam']})" if r["gradcam"] else ""))


def cmd_export(a) -> None:
    from cifarlab.export import FORMATS, default_out as export_out, export_model
    from cifarlab.predict import input_shape
    from cifarlab.train.checkpoint import checkpoint_path, load_model

    if a.format not in FORMATS:
        raise UserError(f"unknown export format {a.format!r}; use {' or '.join(FORMATS)}")
    path = checkpoint_path(a.checkpoint)
    model, ckpt = load_model(path, "cpu")
    res = export_model(model, input_shape(ckpt, a.data), a.out or export_out(path, a.format), a.format, a.exporter)
    print(f"wrote {res['path']} ({res['format']} via {res['exporter']})")
    if res["checked"]:
        print(f"check: {res['runtime']} vs PyTorch on random inputs, max abs diff {res['max_abs_diff']:.3g}")
    else:
        print(f"check skipped: {res['runtime']}")
