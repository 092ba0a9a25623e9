"""The `cifarlab` command: parse arguments, call one library function per subcommand, print.

Every error a user can cause is a UserError: one line on stderr, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError


# ---------------------------------------------------------------- subcommands


def cmd_train(a) -> None:
    from .config import load_config, read_yaml
    from .train.engine import train

    path = a.config
    if path is None:
        if not (a.resume and a.out):
            raise UserError("train needs a CONFIG (a YAML file or preset name), or --resume with --out RUN_DIR")
        path = str(Path(a.out) / "config.yaml")
        read_yaml(path)  # clear error if the run folder has no config
    overrides = list(a.set or [])
    if a.data:
        overrides.append(f"data.source={a.data}")
    cfg = load_config(path, overrides)
    summary = train(cfg, run_dir=a.out, resume=a.resume)
    split = "val" if cfg.data.val_size else "test"
    print(f"best {split} accuracy {summary[f'best_{split}_acc']:.4f}  "
          f"final {summary[f'final_{split}_acc']:.4f}  ({summary['train_seconds']:.0f}s training)")
    print(f"run folder: {summary['run_dir']}")


def cmd_eval(a) -> None:
    from .evaluate import evaluate_checkpoint

    res = evaluate_checkpoint(a.checkpoint, a.data, tta=a.tta, device=a.device)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"{res['dataset']}: accuracy {res['accuracy']:.4f} on {res['n']} test images (loss {res['loss']:.4f})")
    for name, acc in res["per_class"].items():
        print(f"  {name:>12s} {acc:.4f}")
    print("confusion matrix (rows: true, columns: predicted):")
    for row in res["confusion"]:
        print("  " + " ".join(f"{v:5d}" for v in row))


def cmd_models(a) -> None:
    from .models import count_params, create_model, model_aliases, model_names

    aliases = model_aliases()
    print(f"{'model':<20s} {'parameters':>12s}  aliases")
    for name in model_names():
        in_ch = 1 if name.lower() == "lenet" else 3
        n = count_params(create_model(name, in_channels=in_ch))
        al = ", ".join(k for k, v in aliases.items() if v == name)
        print(f"{name:<20s} {n:>12,d}  {al}")


def cmd_data(a) -> None:
    from .data import data_info, load_dataset

    ds = load_dataset(a.source, a.cache_dir)
    if a.action == "prepare":
        print(f"{ds.name}: {len(ds.train_y)} train and {len(ds.test_y)} test images cached")
        return
    info = data_info(ds)
    if a.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{ds.name}: image shape {tuple(info['image_shape'])}, {len(ds.classes)} classes")
    print(f"  mean {_fmt(info['mean'])}  std {_fmt(info['std'])}")
    for split, c in info["splits"].items():
        print(f"  {split}: {c['total']} images  " + "  ".join(f"{k}:{v}" for k, v in c["per_class"].items()))


def _fmt(v) -> str:
    return "(" + ", ".join(f"{x:.4f}" for x in v) + ")"


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cifarlab", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one configuration (a YAML file or a preset name)")
    t.add_argument("config", nargs="?", help="YAML file or preset name (configs/train/NAME.yaml)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value (repeatable)")
    t.add_argument("--data", help="data source: cifar10, mnist, fashion-mnist or a path")
    t.add_argument("--out", help="run folder (default: OUT/NAME-TIMESTAMP)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    t.set_defaults(fn=cmd_train)

    e = sub.add_parser("eval", help="accuracy, per-class accuracy and confusion matrix of a checkpoint")
    e.add_argument("checkpoint", help="a .pt file or a run folder")
    e.add_argument("--data", help="data source (default: the one the run was trained on)")
    e.add_argument("--tta", default="none", choices=["none", "flip", "multiview"])
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true")
    e.set_defaults(fn=cmd_eval)

    m = sub.add_parser("models", help="list the models with their parameter counts")
    m.set_defaults(fn=cmd_models)

    d = sub.add_parser("data", help="inspect or cache a data source")
    d.add_argument("action", choices=["info", "prepare"])
    d.add_argument("source", help="cifar10, mnist, fashion-mnist or a path")
    d.add_argument("--cache-dir", default=None)
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_data)

    for register in _extensions():
        register(sub)
    return p


def _extensions():
    """Subcommands that live beside their library code (studies, analyses, sweeps, report)."""
    from . import commands

    return commands.REGISTER


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except UserError as e:
        print(f"cifarlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cifarlab: interrupted (a training run resumes with --resume --out RUN_DIR)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
