"""`cifarlab bn-study`, `cifarlab dessilbi`, `cifarlab pj2`: each runs one study into one folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from .options import add_parallel, add_set, overrides

STUDY_HINT = "run the same command again: finished runs are reused"


def _print_study(out: Path, what: str) -> None:
    print()
    print((out / "results.md").read_text())
    print(f"study folder: {out}  ({what})")


def cmd_bn_study(a) -> None:
    from ..config import find_preset, load_config
    from ..data.sources import resolve_source
    from ..studies.bn_study import BNStudyConfig, run_bn_study
    from ..train.pool import set_parallel

    sets = overrides(a, "config")
    set_parallel(a.parallel)
    if a.data:
        sets.append(f"data={resolve_source(a.data, 'cifar10')}")
    cfg = load_config(str(find_preset(a.config or "bn", "studies")), sets, cls=BNStudyConfig)
    out = Path(a.out) if a.out else Path("runs") / cfg.name
    summary = run_bn_study(cfg, out)
    _print_study(out, f"{len(summary['figures'])} figures")


def cmd_dessilbi(a) -> None:
    from ..data.sources import resolve_source
    from ..studies.dessilbi_study import load_study_config, run_dessilbi_study
    from ..train.pool import set_parallel

    sets = overrides(a, "config")
    set_parallel(a.parallel)
    if a.data:
        sets.append(f"lenet_data={resolve_source(a.data, 'mnist')}")
    cfg = load_study_config(a.config, sets)
    out = Path(a.out) if a.out else Path("runs") / cfg.name
    summary = run_dessilbi_study(cfg, out)
    _print_study(out, f"{len(summary['figures'])} figures")


def cmd_pj2(a) -> None:
    from ..data.sources import resolve_source
    from ..studies.pj2 import load_pj2_config, run_pj2
    from ..train.pool import set_parallel

    sets = overrides(a)
    set_parallel(a.parallel)
    if a.data:
        cifar = resolve_source(a.data, "cifar10")
        sets.append(f"data={cifar}")
        if not any(s.startswith("mnist=") for s in sets):
            try:  # a folder of sources (as CIFARLAB_DATA) also holds the MNIST of Task 3
                mnist = resolve_source(a.data, "mnist")
            except UserError:
                mnist = None
            if mnist is not None and mnist != cifar:
                sets.append(f"mnist={mnist}")
    cfg = load_pj2_config(a.scale, a.config, sets)
    out = Path(a.out) if a.out else Path("runs") / f"pj2-{cfg.scale}"
    run_pj2(cfg, out)
    _print_study(out, f"report: {out / 'report.html'}")


def _add_study_parser(sub, name: str, fn, *, help: str, description: str, config: str, example: str, data: str):
    """A study command: [CONFIG] --out --set --data --parallel, resumed by running it again."""
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("config", nargs="?", help=config)
    p.add_argument("--out", help="study folder (default: runs/<name>)")
    add_set(p, example)
    p.add_argument("--data", help=data)
    add_parallel(p)
    p.set_defaults(fn=fn, resume_hint=STUDY_HINT)


def register(sub) -> None:
    from ..studies.pj2 import SCALES

    _add_study_parser(
        sub,
        "bn-study",
        cmd_bn_study,
        help="the batch-normalization study: VGG_A vs VGG_A_BatchNorm over learning "
        "rates, loss band and Santurkar et al. probes",
        description="Train every model of the study once per learning rate (same seed and data "
        "order), probe the loss landscape along the gradient, and write arrays.npz, "
        "results.md, results.csv, summary.json and the figures into the study folder.",
        config="study YAML or preset name (default: configs/studies/bn.yaml)",
        example="epochs=5 lrs=[1e-3,1e-4] probe_every=100",
        data="data source (default: the config's data, cifar10); a folder of sources as CIFARLAB_DATA",
    )
    _add_study_parser(
        sub,
        "dessilbi",
        cmd_dessilbi,
        help="the DessiLBI study: LeNet/MNIST (SLBI vs momentum vs SLBI-Adam), "
        "pruning, VGG_A_BatchNorm/CIFAR-10 with SLBI-Adam",
        description="Train the study's runs through the engine (finished runs are reused, "
        "interrupted ones resume), prune them, and write results.md, results.csv, "
        "pruning.csv, summary.json and the figures into the study folder.",
        config="study YAML (default: the preset configs/studies/dessilbi.yaml)",
        example="epochs=1 n_items=512 vgg=false percents=[50,80]",
        data="the LeNet part's data source (default: mnist); the VGG part reads vgg_data",
    )

    p = sub.add_parser(
        "pj2",
        help="the whole Project 2 study (Tasks 1-3) and its report, at one scale",
        description="Train the best model and analyse it, run the reports' recipes and ablation "
        "sweeps, the batch-normalization study and the DessiLBI study, then write "
        "OUT/report.html. A killed pj2 resumes: start it again with the same --out.",
    )
    p.add_argument(
        "--scale",
        default="standard",
        choices=SCALES,
        help="smoke: minutes on a CPU (CI); standard: about 20 minutes on one H100; "
        "full: every experiment at the reports' settings (days on one GPU)",
    )
    p.add_argument("--config", default=None, help="a pj2 YAML file instead of configs/studies/pj2_<scale>.yaml")
    p.add_argument(
        "--data",
        default=None,
        help="CIFAR-10 source: cifar10 (default; $CIFARLAB_DATA may point to "
        "a local copy), a path, or a folder of sources as CIFARLAB_DATA",
    )
    p.add_argument("--out", default=None, help="study folder (default: runs/pj2-<scale>)")
    add_set(p, "best.set.train.epochs=30 parts=[best,analyses] mnist=PATH")
    add_parallel(p)
    p.set_defaults(fn=cmd_pj2, resume_hint="start it again with the same --out: finished parts are skipped")
