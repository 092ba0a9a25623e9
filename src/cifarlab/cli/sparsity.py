"""`cifarlab prune CHECKPOINT`: prune an SLBI checkpoint and show the accuracy it costs."""

from __future__ import annotations

import json


def cmd_prune(a) -> None:
    from ..sparsity.evaluate import check_layers, load_target, prune_and_measure
    from ..sparsity.prune import format_report
    from ..train.device import pick_device

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


def register(sub) -> None:
    p = sub.add_parser(
        "prune",
        help="prune a DessiLBI (SLBI) checkpoint and show the accuracy it costs",
        description="Prune layers of an SLBI-trained model by its selection order (official "
        "toolbox semantics) and print the test accuracy before pruning, after, and "
        "after recover, with what was actually removed per layer.",
    )
    p.add_argument(
        "checkpoint", help="a cifarlab checkpoint or run folder trained with slbi/slbi_adam, or the authors' lenet.pth"
    )
    p.add_argument(
        "--layers",
        nargs="+",
        required=True,
        metavar="NAME",
        help="tracked weights to prune, e.g. conv3.weight fc1.weight",
    )
    p.add_argument("--percent", type=float, required=True, help="percentile of the prune scores (0-100)")
    p.add_argument("--data", help="test data source (default: the run's own; MNIST for the official file)")
    p.add_argument("--prune-bias", action="store_true", help="also zero the biases of pruned conv filters")
    p.add_argument("--device", default="auto", help="auto (default: CUDA if available), cpu, cuda or cuda:N")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(fn=cmd_prune)
