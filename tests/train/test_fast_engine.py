"""The fast methods through cifarlab.train.engine.train: summed loss, warm-up, and the fast presets."""

import pytest
import torch

from cifarlab.config import Config, from_dict, load_config
from cifarlab.data import Dataset
from cifarlab.errors import UserError
from cifarlab.models import create_model
from cifarlab.train.engine import build_trainer, train
from cifarlab.train.fast import warm_up


def cifar_like(n_train=64, n_test=16, size=32, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda n: (
        torch.randint(0, 256, (n, size, size, 3), generator=g, dtype=torch.uint8),
        torch.randint(0, classes, (n,), generator=g),
    )  # noqa: E731
    (xtr, ytr), (xte, yte) = mk(n_train), mk(n_test)
    return Dataset(xtr, ytr, xte, yte, [f"c{k}" for k in range(classes)], "tiny", "tiny", (0.5,) * 3, (0.25,) * 3)


QUIET = ["data.device=cpu", "train.progress=false", "train.log_tensorboard=false"]


def weights_after(tmp_path, name, reduction, lr):
    cfg = from_dict(
        Config,
        {
            "name": name,
            "out": str(tmp_path),
            "seed": 3,
            "model": {"name": "fastnet_small", "args": {"widths": [8, 8, 8]}},
            "data": {"batch_size": 16, "device": "cpu", "drop_last": True},
            "augment": {"translate": 2, "alternating_flip": True},
            "optim": {"name": "nesterov", "lr": lr, "momentum": 0.85, "norm_lr_scale": 4.0},
            "train": {
                "epochs": 1,
                "progress": False,
                "log_tensorboard": False,
                "loss_reduction": reduction,
                "label_smoothing": 0.2,
            },
        },
    )
    train(cfg, run_dir=tmp_path / name, dataset=cifar_like(n_train=48, size=16))
    return torch.load(tmp_path / name / "last.pt", weights_only=False)["model"]


def test_summed_loss_equals_mean_loss_with_lr_times_batch(tmp_path):
    summed = weights_after(tmp_path, "sum", "sum", 0.001)
    mean = weights_after(tmp_path, "mean", "mean", 0.001 * 16)
    moved = weights_after(tmp_path, "mean_small", "mean", 0.001)
    for k in summed:
        assert torch.allclose(summed[k].float(), mean[k].float(), rtol=1e-4, atol=1e-6), k
    assert any(not torch.allclose(summed[k].float(), moved[k].float(), atol=1e-4) for k in summed)


def test_warm_up_leaves_no_trace():
    cfg = from_dict(
        Config,
        {
            "model": {"name": "fastnet_small", "args": {"widths": [8, 8, 8]}},
            "data": {"batch_size": 4, "device": "cpu"},
            "optim": {"name": "muon", "lr": 0.1, "momentum": 0.9, "args": {"muon_momentum": 0.6}},
            "train": {"ema": 0.5, "grad_clip": 1.0, "progress": False, "log_tensorboard": False},
        },
    )
    t = build_trainer(cfg, cifar_like(n_train=8, size=16), torch.device("cpu"), None)
    t.model.train()
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    ema_before = {k: v.clone() for k, v in t.ema.state_dict().items()}
    rng = torch.get_rng_state()
    seconds = warm_up(t, next(iter(t.loader)), steps=2)
    assert seconds >= 0
    assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())
    assert all(torch.equal(ema_before[k], v) for k, v in t.ema.state_dict().items())
    assert t.opt.state_dict()["state"] == {} and torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in t.model.parameters())
    assert float(t.loss_sum) == 0.0 and int(t.correct) == 0


@pytest.mark.parametrize("preset, widths", [("fast94", None), ("fast95", [16, 32, 32]), ("fast96", [16, 32, 32])])
def test_fast_presets_run_on_cpu(tmp_path, preset, widths):
    over = QUIET + [
        "data.n_items=64",
        "data.batch_size=32",
        "data.eval_batch_size=16",
        "train.epochs=1",
        "train.compile=false",
        "train.eval_every=1",
        f"out={tmp_path}",
    ]
    if widths:  # the full widths cost minutes on one CPU thread; the methods are what is tested
        over.append(f"model.args.widths={widths}")
    cfg = load_config(preset, over)
    s = train(cfg, run_dir=tmp_path / preset, dataset=cifar_like(n_train=80))
    assert s["epochs"] == 1 and not s["diverged"] and s["compile_seconds"] == 0.0
    assert s["final_test_acc"] is not None and s["final_test_acc_no_tta"] is not None
    assert s["train_seconds"] > 0 and s["eval_seconds"] > 0
    ckpt = torch.load(tmp_path / preset / "last.pt", weights_only=False)
    assert ckpt["config"]["train"]["tta"] == "multiview" and ckpt["config"]["train"]["whiten"]
    assert (ckpt["lookahead"] is not None) == (cfg.train.lookahead_every > 0)


def test_fastnet_depth_3_is_airbench96s_block():
    m = create_model("fastnet_small", widths=[8, 8, 8], depth=3).eval()
    b = m.block1
    assert hasattr(b, "conv3") and not hasattr(create_model("fastnet_small", widths=[8, 8, 8]).block1, "conv3")
    x = torch.randn(2, 24, 8, 8)
    with torch.no_grad():
        h = b.act1(b.norm1(b.pool(b.conv1(x))))
        assert torch.allclose(b(x), h + b.act3(b.norm3(b.conv3(b.act2(b.norm2(b.conv2(h)))))))
    with pytest.raises(UserError, match="depth must be 2 or 3"):
        create_model("fastnet", depth=4)
