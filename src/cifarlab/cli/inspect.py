"""`cifarlab inspect`, `cifarlab predict`, `cifarlab export`: parsers and thin command functions.

Each command parses, calls one library function (analysis.inspect.inspect, analysis.predict.predict_files,
analysis.export.export_model) and prints.
"""

from __future__ import annotations

import argparse
import json
import re

from ..analysis.inspect import ALL, ANALYSES, OPTIONS
from ..errors import UserError

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


def add_inspect_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "inspect",
        help="look inside a trained network: filters, feature maps, Grad-CAM, errors, landscapes, Hessian, BN probes",
        description="Run one analysis of a checkpoint (or a run folder's best.pt) and write its figures and arrays.",
        epilog=INSPECT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="a .pt file or a run folder")
    p.add_argument(
        "analysis", help=f"one of: {', '.join(ANALYSES)}; all runs {', '.join(ALL[:-1])} and a coarse landscape"
    )
    p.add_argument("--data", help="data source (default: the one the run was trained on)")
    p.add_argument("--out", help="output folder (default: see below)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--batch-size", type=int, default=500, help="images per forward pass (default 500)")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="random directions / vectors (default 0); given, also --n images drawn at random from --split",
    )

    g = p.add_argument_group("filters, features, gradcam")
    g.add_argument(
        "--layer",
        action="append",
        metavar="NAME",
        help="layer(s) by dotted name, repeatable or comma-separated (default: one per stage; "
        "gradcam: the last with a map of at least 4x4)",
    )
    g.add_argument("--kernel-mode", default="mean", help="filters of deeper layers: mean (over inputs) | first")
    g.add_argument("--n-images", type=int, default=None, help="test images shown (features 4, gradcam 16)")
    g.add_argument(
        "--methods",
        default="all",
        help="gradcam: comma list of gradcam, gradcam++, layercam, guided_gradcam, integrated_gradients (default all)",
    )
    g.add_argument("--target", default=None, help="gradcam: class name or index (default: the predicted class)")

    g = p.add_argument_group("landscape, interpolate, trajectory")
    g.add_argument("--dims", type=int, default=2, help="landscape: 1 or 2 random directions (default 2)")
    g.add_argument(
        "--grid", default=None, help="min:max:num per axis (landscape -1:1:51, `all` -1:1:11; interpolate -0.5:1.5:41)"
    )
    g.add_argument(
        "--n",
        type=int,
        default=None,
        help="images of --split, no augmentation: the first n, or n at random with --seed "
        "(landscape 10000, `all` 500, hessian 1000, probes 4 x --batch-size)",
    )
    g.add_argument(
        "--split",
        default="train",
        help="landscape, interpolate, trajectory, hessian, probes: train | test images (default train)",
    )
    g.add_argument("--norm", default="filter", help="direction normalization: filter | layer | none")
    g.add_argument(
        "--include-biasbn",
        action="store_true",
        help="also move biases and BN parameters (default: zero in the directions)",
    )
    g.add_argument(
        "--bn",
        default=None,
        help="BN with running statistics (eval, the default) or batch statistics (train, the default of probes)",
    )
    g.add_argument("--shard", default=None, metavar="I/N", help="evaluate only shard I of N of the grid points")
    g.add_argument("--merge", type=int, default=None, metavar="N", help="join the N shard files and plot")
    g.add_argument("--chunk", type=int, default=8, metavar="K", help="grid points evaluated at once (default 8)")
    g.add_argument("--method", default="auto", help="auto (vmap on CUDA, loop on CPU) | vmap | loop")
    g.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    g.add_argument(
        "--hessian-grid",
        nargs="?",
        const="-1:1:5",
        default=None,
        metavar="RANGE",
        help="landscape: also the top Hessian eigenvalue on a coarse grid (default -1:1:5) of "
        "the same directions, on --hessian-n of the landscape's images, min(--iters, 20) power iterations",
    )
    g.add_argument("--hessian-n", type=int, default=1000, help="images for --hessian-grid (default 1000)")
    g.add_argument(
        "--other",
        help="interpolate: the second checkpoint (same model); parameters and BN "
        "running statistics go linearly from CHECKPOINT (0) to OTHER (1)",
    )
    g.add_argument("--steps", type=int, default=21, help="trajectory: grid points per axis (default 21)")
    g.add_argument("--margin", type=float, default=0.3, help="trajectory: grid beyond the path, share of its span")

    g = p.add_argument_group("hessian")
    g.add_argument("--k", type=int, default=3, help="top eigenvalues (default 3)")
    g.add_argument("--iters", type=int, default=100, help="power iterations per eigenvalue (default 100)")
    g.add_argument("--trace-samples", type=int, default=50, help="Hutchinson samples for the trace (default 50)")

    g = p.add_argument_group(
        "probes",
        "Santurkar et al.'s probes at the checkpoint's weights, one per batch of --batch-size of\n"
        "the --n images: loss and gradient after a step -eta g along the batch's gradient g.",
    )
    g.add_argument(
        "--etas",
        default=None,
        metavar="MIN:MAX:NUM",
        help="step sizes (default 0.05:0.4:8 times the run's learning rate, as bn-study)",
    )
    # Let ranges that start with a minus (--grid -1:1:51) be values, not options: argparse only
    # knows plain negative numbers. (A private attribute; --grid=-1:1:51 works regardless.)
    p._negative_number_matcher = re.compile(r"^-\.?\d[\d.:eE+-]*$")
    p.set_defaults(fn=cmd_inspect)
    return p


def add_predict_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        help="classify image files with a checkpoint (top-k, optional Grad-CAM)",
        description="Classify image files of any size or mode: each is converted to the model's "
        "channels and resized to its input size.",
    )
    p.add_argument("checkpoint", help="a .pt file (checkpoint or .bundle.pt) or a run folder")
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
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX, TorchScript or a self-contained bundle, checked against PyTorch",
        description="Export the model and check the exported file gives the same outputs as "
        "PyTorch on random inputs (max abs diff printed); written atomically. A bundle is one "
        ".bundle.pt file (weights, config, classes, normalization, metrics, environment) that "
        "`cifarlab eval` and `cifarlab predict` load on their own.",
    )
    p.add_argument("checkpoint", help="a .pt file or a run folder")
    p.add_argument("--format", required=True, help="onnx | torchscript | bundle")
    p.add_argument(
        "--out",
        default=None,
        help="output file (default: beside the checkpoint, best.onnx / best.torchscript.pt / best.bundle.pt)",
    )
    p.add_argument(
        "--exporter",
        default="auto",
        help="ONNX exporter: auto (dynamo if onnxscript is installed, else legacy) | dynamo | legacy",
    )
    p.add_argument("--data", default=None, help="data source, only for old checkpoints without image_shape")
    p.set_defaults(fn=cmd_export)
    return p


def register(sub) -> None:
    for add in (add_inspect_parser, add_predict_parser, add_export_parser):
        add(sub)


# ---------------------------------------------------------------- commands


def cmd_inspect(a) -> None:
    from ..analysis.inspect import inspect

    inspect(a.checkpoint, a.analysis, a.out, echo=True, **{k: getattr(a, k) for k in OPTIONS})


def cmd_predict(a) -> None:
    from ..analysis.predict import predict_files
    from ..train.checkpoint import load_model
    from ..train.device import pick_device

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
    from ..analysis.export import FORMATS, export_bundle, export_model
    from ..analysis.export import default_out as export_out
    from ..train.checkpoint import checkpoint_path, input_shape, load_model

    if a.format not in FORMATS:
        raise UserError(f"unknown export format {a.format!r}; use onnx, torchscript or bundle")
    path = checkpoint_path(a.checkpoint)
    out = a.out or export_out(path, a.format)  # --out FOLDER receives best.onnx for best.pt
    if a.format == "bundle":
        res = export_bundle(path, out, default_name=path.stem)
    else:
        model, ckpt = load_model(path, "cpu")
        res = export_model(model, input_shape(ckpt, a.data), out, a.format, a.exporter, default_name=path.stem)
    print(f"wrote {res['path']} ({res['format']} via {res['exporter']})")
    if res["checked"]:
        print(f"check: {res['runtime']} vs PyTorch on random inputs, max abs diff {res['max_abs_diff']:.3g}")
    else:
        print(f"check skipped: {res['runtime']}")
