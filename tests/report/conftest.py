"""A small but real folder tree for the report tests, built once per session:

tree/task1/best/            an engine run with analysis/{filters,metrics,features,landscape}
tree/task1/broken/          a run killed after 2 of 4 epochs (metrics.jsonl, no summary.json)
tree/task1/ablation_lr/     a 2-run sweep made by the sweep module (skipped if it is missing)
tree/task2_bn/              a tiny BN study (skipped if the study module is missing)
"""

import json
import shutil

import pytest
import torch
from conftest import tiny_dataset  # the shared one in tests/conftest.py

from cifarlab.config import Config, from_dict
from cifarlab.data import Dataset

RUN = {
    "model.name": "plainnet",
    "model.args": {"stages": [8, 16]},
    "data.batch_size": 32,
    "data.device": "cpu",
    "optim.name": "momentum",
    "optim.lr": 0.05,
    "schedule.name": "cosine",
    "train.progress": False,
    "train.log_tensorboard": False,
}


def tiny_cfg(out, **over) -> Config:
    base: dict = {"name": "t", "out": str(out), "seed": 1}
    for key, value in {**RUN, **over}.items():
        section, _, name = key.partition(".")
        base.setdefault(section, {})[name] = value
    return from_dict(Config, base)


def _analyses(run_dir, ds):
    from cifarlab.analysis.features import run_features
    from cifarlab.analysis.filters import run_filters
    from cifarlab.analysis.landscape import run_landscape
    from cifarlab.analysis.metrics import run_metrics
    from cifarlab.train.checkpoint import load_model

    model, _ = load_model(run_dir)
    mean, std = torch.tensor(ds.mean), torch.tensor(ds.std)
    x = ((ds.test_x.float() / 255 - mean) / std).permute(0, 3, 1, 2).contiguous()
    out = run_dir / "analysis"
    run_filters(model, out / "filters")
    run_metrics(model, x, ds.test_y, out / "metrics", classes=ds.classes, mean=ds.mean, std=ds.std)
    run_features(model, x, out / "features", mean=ds.mean, std=ds.std, max_images=1)
    run_landscape(model, x[:64], ds.test_y[:64], out / "landscape", dims=1, xrange="-1:1:5", progress=False)


def _sweep(root):
    try:
        from cifarlab.sweeps import load_sweep, run_sweep
    except ImportError:
        return None
    spec = root / "ablation_lr.yaml"
    spec.write_text(
        json.dumps(
            {"name": "ablation_lr", "set": {**RUN, "train.epochs": 2}, "seeds": [0], "axes": {"optim.lr": [0.1, 0.02]}}
        )
    )
    out = root / "task1" / "ablation_lr"
    run_sweep(load_sweep(spec), out, engine="local", data=tiny_dataset())
    spec.unlink()
    return out


def _bn_study(root):
    try:
        from cifarlab.config import load_config
        from cifarlab.studies.bn_study import BNStudyConfig, run_bn_study
    except ImportError:
        return None
    cfg = load_config(
        None,
        [
            "n_items=128 n_test=64 epochs=1 batch_size=64 probe_every=2 lrs=[1e-3,1e-4] "
            "n_etas=2 proxies=false progress=false device=cpu"
        ],
        cls=BNStudyConfig,
    )
    cfg.models = [
        {"name": "plainnet", "stages": [8, 16], "bn": False, "label": "plain"},
        {"name": "plainnet", "stages": [8, 16], "bn": True, "label": "plain_bn"},
    ]
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (320,), generator=g)
    x = ((y.float() * 25).view(-1, 1, 1, 1) + 40 * torch.randn(320, 32, 32, 3, generator=g)).clamp(0, 255)
    ds = Dataset(
        x[:256].to(torch.uint8),
        y[:256],
        x[256:].to(torch.uint8),
        y[256:],
        [str(i) for i in range(10)],
        "synthetic",
        "synthetic",
        (0.5,) * 3,
        (0.25,) * 3,
    )
    run_bn_study(cfg, root / "task2_bn", dataset=ds)
    return root / "task2_bn"


@pytest.fixture(scope="session")
def report_tree(tmp_path_factory):
    from cifarlab.train.engine import train

    root = tmp_path_factory.mktemp("tree")
    ds = tiny_dataset()
    best = root / "task1" / "best"
    train(tiny_cfg(root, **{"train.epochs": 4, "augment.crop_padding": 2}), run_dir=best, dataset=ds)
    _analyses(best, ds)
    # a run killed after 2 of its 4 epochs: config and metrics, no summary
    broken = root / "task1" / "broken"
    broken.mkdir()
    shutil.copy(best / "config.yaml", broken / "config.yaml")
    lines = (best / "metrics.jsonl").read_text().splitlines()[:2]
    (broken / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    sweep = _sweep(root)
    bn = _bn_study(root)
    return {"root": root, "best": best, "broken": broken, "sweep": sweep, "bn": bn}
