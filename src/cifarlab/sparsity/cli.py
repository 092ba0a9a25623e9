"""`cifarlab prune CHECKPOINT` and `cifarlab dessilbi [CONFIG]`: thin wrappers around
sparsity.evaluate and studies.dessilbi_study."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_prune_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("prune", help="prune a DessiLBI (SLBI) checkpoint and show the accuracy it costs",
                       description="Prune layers of an SLBI-trained model by its selection order (official "
                                   "toolbox semantics) and print the test accuracy before pruning, after, and "
                                   "after recover, with what was actually removed per layer.")
    p.add_argument("checkpoint", help="a cifarlab checkpoint or run folder trained with slbi/slbi_adam, "
                                      "or the authors' lenet.pth")
    p.add_argument("--layers", nargs="+", required=True, metavar="NAME",
                   help="tracked weights to prune, e.g. conv3.weight fc1.weight")
    p.add_argument("--percent", type=float, required=True, help="percentile of the prune scores (0-100)")
    p.add_argument("--data", help="test data source (default: the run's own; MNIST for the official file)")
    p.add_argument("--prune-bias", action="store_true", help="also zero the biases of pruned conv filters")
    p.add_argument("--device", default="auto", help="auto (default: CUDA if available), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(fn=cmd_prune)
    return p


def cmd_prune(a) -> None:
    from ..train.engine import pick_device
    from .evaluate import check_layers, load_target, prune_and_measure
    from .prune import format_report

    target = load_target(a.checkpoint, a.data, pick_device(a.device))
    check_layers(target, a.layers)  # before any evaluation: a typo fails at once
    res = prune_and_measure(target, a.layers, a.percent, a.prune_bias)
    if a.json:
        print(json.dumps(res, indent=2))
        return
    print(f"checkpoint: {res['checkpoint']} ({target.kind}, optimizer {target.optimizer})")
    print(f"test data:  {res['data']}, {res['n_test']} images")
    print(f"accuracy before pruning: {res['accuracy_before']:.2f}%")
    print(f"pruned {', '.join(a.layers)} at {a.percent:g}%" + (" (with biases)" if a.prune_bias else "") + ":")
    print(format_report(res["report"]))
    cost = res["accuracy_before"] - res["accuracy_pruned"]
    print(f"accuracy after pruning:  {res['accuracy_pruned']:.2f}% ({-cost:+.2f} points)")
    print(f"accuracy after recover:  {res['accuracy_recovered']:.2f}%")


def add_dessilbi_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("dessilbi", help="the DessiLBI study: LeNet/MNIST (SLBI vs momentum vs SLBI-Adam), "
                                        "pruning, VGG_A_BatchNorm/CIFAR-10 with SLBI-Adam",
                       description="Train the study's runs through the engine (finished runs are reused, "
                                   "interrupted ones resume), prune them, and write results.md, results.csv, "
                                   "pruning.csv, summary.json and the figures into the study folder.")
    p.add_argument("config", nargs="?", help="study YAML (default: the preset configs/studies/dessilbi.yaml)")
    p.add_argument("--out", help="study folder (default: runs/<name>)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a field, e.g. epochs=1 n_items=512 vgg=false percents=[50,80]")
    p.add_argument("--data", help="the LeNet part's data source (default: mnist); the VGG part reads vgg_data")
    p.set_defaults(fn=cmd_dessilbi)
    return p


def cmd_dessilbi(a) -> None:
    from ..studies.dessilbi_study import load_study_config, run_dessilbi_study

    overrides = list(a.set or [])
    if a.data:
        overrides.append(f"lenet_data={a.data}")
    cfg = load_study_config(a.config, overrides)
    out = Path(a.out) if a.out else Path("runs") / cfg.name
    summary = run_dessilbi_study(cfg, out)
    print()
    print((out / "results.md").read_text())
    print(f"study folder: {out}  ({len(summary['figures'])} figures)")
