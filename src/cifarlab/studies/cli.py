"""`cifarlab bn-study [CONFIG]`: a thin wrapper around studies.bn_study.run_bn_study."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_bn_study_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("bn-study", help="the batch-normalization study: VGG_A vs VGG_A_BatchNorm over learning "
                                        "rates, loss band and Santurkar et al. probes",
                       description="Train every model of the study once per learning rate (same seed and data "
                                   "order), probe the loss landscape along the gradient, and write arrays.npz, "
                                   "results.md, results.csv, summary.json and the figures into the study folder.")
    p.add_argument("config", nargs="?", help="study YAML or preset name (default: configs/studies/bn.yaml)")
    p.add_argument("--out", help="study folder (default: runs/<name>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field, e.g. epochs=5 lrs=[1e-3,1e-4] probe_every=100")
    p.add_argument("--data", help="data source (default: the config's data, cifar10)")
    p.set_defaults(fn=cmd_bn_study)
    return p


def cmd_bn_study(a) -> None:
    from ..config import find_preset, load_config
    from .bn_study import BNStudyConfig, run_bn_study

    overrides = list(a.set or [])
    if a.data:
        overrides.append(f"data={a.data}")
    cfg = load_config(str(find_preset(a.config or "bn", "studies")), overrides, cls=BNStudyConfig)
    out = Path(a.out) if a.out else Path("runs") / cfg.name
    summary = run_bn_study(cfg, out)
    print()
    print((out / "results.md").read_text())
    print(f"study folder: {out}  ({len(summary['figures'])} figures)")
