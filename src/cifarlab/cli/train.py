"""`cifarlab train | eval | models | data`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UserError
from .options import add_set, overrides


def cmd_train(a) -> None:
    from ..api.training import train_config
    from ..config import load_config, read_yaml
    from ..data.sources import resolve_source

    sets = overrides(a, "config")
    if a.resume and not a.out:
        raise UserError("--resume needs --out RUN_DIR, the run folder to continue")
    path = a.config
    if path is None:
        if not (a.resume and a.out):
            raise UserError("train needs a CONFIG (a YAML file or preset name), or --resume with --out RUN_DIR")
        path = str(Path(a.out) / "config.yaml")
        read_yaml(path)  # clear error if the run folder has no config
    if a.data:  # a folder of sources gives the copy of the dataset the config names
        dataset = load_config(path, sets).data.source
        sets.append(f"data.source={resolve_source(a.data, dataset)}")
    cfg = load_config(path, sets)
    summary = train_config(cfg, run_dir=a.out, resume=a.resume).summary  # the same path as cifarlab.fit
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return
    split = "val" if cfg.data.val_size else "test"
    print(
        f"best {split} accuracy {summary[f'best_{split}_acc']:.4f}  "
        f"final {summary[f'final_{split}_acc']:.4f}  ({summary['train_seconds']:.0f}s training)"
    )
    print(f"run folder: {summary['run_dir']}")


def cmd_eval(a) -> None:
    from ..train.evaluate import evaluate_checkpoint

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
    from ..models import count_params, create_model, flops_per_image, model_aliases, model_names

    aliases = model_aliases()
    # MMACs: millions of multiply-adds per image (FLOPs ~ 2x), at the input each model is made for
    print(f"{'model':<20s} {'parameters':>12s} {'MMACs':>9s}  {'input':<8s} aliases")
    for name in model_names():
        shape = (1, 28, 28) if name.lower() == "lenet" else (3, 32, 32)
        model = create_model(name, in_channels=shape[0])
        n, macs = count_params(model), flops_per_image(model, shape)
        al = ", ".join(k for k, v in aliases.items() if v == name)
        print(f"{name:<20s} {n:>12,d} {macs / 1e6:>9,.1f}  {'x'.join(map(str, shape)):<8s} {al}")


def cmd_data(a) -> None:
    from ..data import data_info, load_dataset

    ds = load_dataset(a.source, a.cache_dir)
    if a.action == "prepare":
        print(f"{ds.name}: {len(ds.train_y)} train and {len(ds.test_y)} test images cached")
        return
    info = data_info(ds)
    if a.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{ds.name}: image shape {tuple(info['image_shape'])}, {len(ds.classes)} classes")
    print(f"  mean {_triple(info['mean'])}  std {_triple(info['std'])}")
    for split, c in info["splits"].items():
        print(f"  {split}: {c['total']} images  " + "  ".join(f"{k}:{v}" for k, v in c["per_class"].items()))


def _triple(v) -> str:
    return "(" + ", ".join(f"{x:.4f}" for x in v) + ")"


def register(sub) -> None:
    t = sub.add_parser("train", help="train one configuration (a YAML file or a preset name)")
    t.add_argument("config", nargs="?", help="YAML file or preset name (configs/train/NAME.yaml)")
    add_set(t, "train.epochs=5 optim.lr=0.05")
    t.add_argument(
        "--data",
        help="data source: cifar10, cifar100, svhn, mnist, fashion-mnist, a path, or a folder of them "
        "(as CIFARLAB_DATA)",
    )
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

    m = sub.add_parser("models", help="list the models with their parameter counts and multiply-adds per image")
    m.set_defaults(fn=cmd_models)

    d = sub.add_parser("data", help="inspect or cache a data source")
    d.add_argument("action", choices=["info", "prepare"])
    d.add_argument("source", help="cifar10, cifar100, svhn, mnist, fashion-mnist or a path")
    d.add_argument("--cache-dir", default=None)
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_data)
