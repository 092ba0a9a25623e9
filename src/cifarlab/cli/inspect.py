"""`cifarlab inspect`, `cifarlab predict`, `cifarlab export`: parsers and thin command functions.

Each command parses, calls one library function (analysis.inspect.inspect, analysis.predict.predict_files,
analysis.export.export_model) and prints.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import MISSING

from ..analysis import registry
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
    in_all = [f"a coarse {a.name}" if a.coarse else a.name for a in registry.in_all()]
    p.add_argument("analysis", help=f"one of: {', '.join(registry.names())}, all; all runs {', '.join(in_all)}")
    p.add_argument("--out", help="output folder (default: see below)")
    add_option_flags(p)
    # Let ranges that start with a minus (--grid -1:1:51) be values, not options: argparse only
    # knows plain negative numbers. (A private attribute; --grid=-1:1:51 works regardless.)
    p._negative_number_matcher = re.compile(r"^-\.?\d[\d.:eE+-]*$")
    p.set_defaults(fn=cmd_inspect)
    return p


def add_option_flags(p: argparse.ArgumentParser) -> None:
    """A flag per option name of the registered analyses, listed with the analysis that documents it.

    A flag not given is left out of the namespace (SUPPRESS): each analysis then takes its own default,
    which --help states per analysis."""
    groups: dict = {}  # title -> argument group
    for d in registry.declared().values():
        owner, f = d.documented_by()
        where = p
        if owner is not None:
            title = owner.group or owner.name
            if title not in groups:
                groups[title] = p.add_argument_group(title, owner.doc or None)
            where = groups[title]
        kw = dict(f.metadata.get("argparse", {}))
        if d.type is bool:
            kw.setdefault("action", "store_true")
        else:
            kw.setdefault("type", d.type)
        where.add_argument(f"--{d.name.replace('_', '-')}", default=argparse.SUPPRESS, help=flag_help(d, owner), **kw)


def flag_help(d: registry.Declared, owner: registry.Analysis | None) -> str:
    """The documenting field's help, the analyses that take the flag when not all of its group do,
    and the default of each analysis (and of the coarse one of `all`)."""
    users = [a for a, _ in d.fields if a is not None]
    defaults: dict[str, list[str]] = {}  # default text -> the analyses with it
    for a, f in d.fields:
        shown = not any(f.default is v for v in (None, False, MISSING))  # 0 is a default worth saying
        text = f.metadata.get("default_text") or (str(f.default) if shown else "")
        if text:
            defaults.setdefault(text.replace("%", "%%"), []).append(a.name if a else "")
        if a is not None and d.name in a.coarse:
            defaults.setdefault(str(a.coarse[d.name]).replace("%", "%%"), []).append("`all`")
    help = d.documented_by()[1].metadata.get("help", "")
    if owner is not None and len(defaults) <= 1:  # say who takes it, unless its whole group does
        group = {a.name for a in registry.analyses() if (a.group or a.name) == (owner.group or owner.name)}
        if {a.name for a in users} != group:
            help = f"{', '.join(a.name for a in users)}: {help}"
    if len(defaults) == 1:
        help += f" (default {next(iter(defaults))})"
    elif defaults:
        help += " (default: " + "; ".join(f"{', '.join(n for n in who if n)} {t}" for t, who in defaults.items()) + ")"
    return help


def add_predict_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        help="classify image files with a checkpoint (top-k, optional Grad-CAM)",
        description="Classify image files of any size or mode: each is converted to the model's "
        "channels and resized to its input size.",
    )
    p.add_argument("checkpoint", help="a checkpoint (.pt), a bundle (.safetensors or old .bundle.pt) or a run folder")
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
        ".safetensors file (weights, plus config, classes, normalization, metrics, environment as JSON) that "
        "`cifarlab eval` and `cifarlab predict` load on their own.",
    )
    p.add_argument("checkpoint", help="a .pt file or a run folder")
    p.add_argument("--format", required=True, help="onnx | torchscript | bundle")
    p.add_argument(
        "--out",
        default=None,
        help="output file (default: beside the checkpoint, best.onnx / best.torchscript.pt / best.safetensors)",
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

    known = registry.declared()
    inspect(a.checkpoint, a.analysis, a.out, echo=True, **{k: v for k, v in vars(a).items() if k in known})


def cmd_predict(a) -> None:
    from ..analysis.predict import predict_files
    from ..api.classifier import read_classifier
    from ..train.device import pick_device

    if a.topk < 1:
        raise UserError(f"--topk must be at least 1, got {a.topk}")
    clf = read_classifier(a.checkpoint, device=pick_device(a.device))  # the same path as cifarlab.load
    results = predict_files(clf.model, clf.checkpoint, a.images, a.topk, a.gradcam, a.out, a.layer, a.data)
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
