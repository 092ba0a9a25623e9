"""`cifarlab sweep SWEEP`: run (or resume) a sweep and print its results table."""

from __future__ import annotations

from pathlib import Path

from .options import add_parallel, add_set, overrides


def cmd_sweep(a) -> None:
    from ..data.sources import resolve_source
    from ..sweeps.grid import expand, load_sweep
    from ..sweeps.results import check_metrics
    from ..sweeps.runner import check_failed, default_out, describe, run_sweep
    from ..train.pool import set_parallel

    sets = overrides(a)
    set_parallel(a.parallel)
    if a.data:  # a folder of sources gives the copy of the dataset the runs name
        dataset = expand(load_sweep(a.sweep, sets))[0].config.data.source
        sets.append(f"data.source={resolve_source(a.data, dataset)}")
    sweep = load_sweep(a.sweep, sets)
    check_metrics(sweep.metrics)  # before any run: a typo would only show as a missing column
    out = Path(a.out) if a.out else default_out(sweep)
    if a.dry_run:
        specs = expand(sweep)
        print(describe(specs))
        print(f"{len(specs)} runs -> {out}")
        return
    gpus = a.gpus_per_trial
    if gpus is None:  # follow the machine: a GPU per run where there are GPUs, none on a CPU machine
        import torch

        gpus = 1.0 if torch.cuda.is_available() else 0.0
    rows = run_sweep(
        sweep,
        out,
        engine=a.engine,
        gpus_per_trial=gpus,
        cpus_per_trial=a.cpus_per_trial,
        address=a.address,
        max_concurrent=a.max_concurrent,
    )
    print()
    print((out / "results.md").read_text())
    print(f"sweep folder: {out}  (results.csv, results.md, figures/)")
    check_failed(rows, out)  # the others finished; a failed run makes the command fail (exit 2)


def register(sub) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of configurations over seeds; table of mean ± std",
        description="Run every configuration x seed of a sweep file (skipping finished runs, "
        "resuming interrupted ones) and write results.csv, results.md and figures/.",
    )
    p.add_argument("sweep", help="sweep YAML file or preset name (configs/sweeps/NAME.yaml)")
    p.add_argument(
        "--engine",
        default="local",
        choices=["local", "ray"],
        help="local: one run after another here; ray: Ray tasks over all GPUs/machines",
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="GPUs per run with --engine ray (0.5 = two per GPU; default 1 where CUDA is, else 0)",
    )
    p.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs per run with --engine ray")
    p.add_argument("--max-concurrent", type=int, default=None, help="at most this many runs at once (ray)")
    add_parallel(p)
    p.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--out", default=None, help="sweep folder (default: runs/<sweep name>)")
    p.add_argument(
        "--data",
        default=None,
        help="data source for every run: cifar10, cifar100, svhn, mnist, fashion-mnist, a path, "
        "or a folder of them (as CIFARLAB_DATA)",
    )
    add_set(p, "train.epochs=5 (every run) seeds=[0] axes.optim.lr=[0.1] (the sweep)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    p.set_defaults(fn=cmd_sweep, resume_hint="run the same command again: finished runs are skipped")
