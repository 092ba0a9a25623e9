"""The captured step (train.graph): on CPU its body runs uncaptured and must compute what
Trainer.train_step computes, optimizer by optimizer; what cannot be captured says why and runs eagerly."""

import pytest
import torch
from conftest import tiny_dataset

from cifarlab.config import Config, from_dict, load_config
from cifarlab.errors import UserError
from cifarlab.train import graph as graphs
from cifarlab.train.engine import build_trainer, train
from cifarlab.train.fast import undone

CPU = torch.device("cpu")


def cfg_of(**over):
    base = {
        "seed": 2,
        "model": {"name": "plainnet", "args": {"stages": [8, 16]}},
        "data": {"batch_size": 32, "device": "cpu"},  # 80 images: two full batches and one of 16
        "augment": {"crop_padding": 2, "hflip": True},
        "optim": {"name": "momentum", "lr": 0.05, "weight_decay": 5e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 0.5},
        "train": {"epochs": 2, "progress": False, "log_tensorboard": False},
    }
    for key, value in over.items():
        section, _, name = key.partition(".")
        base[section][name] = value
    return from_dict(Config, base)


def pair(cfg, data):
    """Two trainers of one config: a steps eagerly, b through the graph's body (uncaptured on CPU)."""
    a, b = build_trainer(cfg, data, CPU, None), build_trainer(cfg, data, CPU, None)
    b.graph = graphs.StepGraph(b, capture=False)
    return a, b


def assert_same(a, b, atol=1e-6):
    for (k, x), y in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.allclose(x.float(), y.float(), rtol=1e-5, atol=atol), k
    if a.ema is not None:
        for (k, x), y in zip(a.ema.state_dict().items(), b.ema.state_dict().values()):
            assert torch.allclose(x.float(), y.float(), rtol=1e-5, atol=atol), f"ema {k}"
    assert [g["lr"] for g in a.opt.param_groups] == [g["lr"] for g in b.opt.param_groups]
    assert b.step == a.step
    state_a, state_b = a.opt.state_dict()["state"], b.opt.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for i in state_a:  # momentum, Adam's moments and count, SLBI's Z, Gamma and solution path
        assert state_a[i].keys() == state_b[i].keys(), i
        for k, x in state_a[i].items():
            y = state_b[i][k]
            for u, v in zip(x, y) if isinstance(x, list) else [(x, y)]:  # lists: SLBI's path of the epoch
                if isinstance(u, torch.Tensor):
                    assert torch.allclose(u.float().cpu(), v.float().cpu(), rtol=1e-5, atol=atol), f"optimizer {i} {k}"
                else:
                    assert u == v, k
            assert not isinstance(x, list) or len(x) == len(y)


def run_both(cfg, data, epochs=2, atol=1e-6):
    a, b = pair(cfg, data)
    for epoch in range(epochs):
        stats_a, _ = a.train_epoch(epoch)
        stats_b, _ = b.train_epoch(epoch)
        assert stats_b["images"] == stats_a["images"]
        assert stats_b["train_loss"] == pytest.approx(stats_a["train_loss"], rel=1e-5)
        assert stats_b["train_acc"] == pytest.approx(stats_a["train_acc"])
    assert_same(a, b, atol)
    return a, b


@pytest.mark.parametrize(
    "over",
    [
        {"optim.name": "sgd"},
        {"optim.name": "momentum"},
        {"optim.name": "nesterov", "optim.wd_skip_1d": True},
        {"optim.name": "adam", "optim.lr": 2e-3},
        {"optim.name": "adamw", "optim.lr": 2e-3, "optim.weight_decay": 0.05, "optim.head_lr_scale": 2.0},
        {"train.ema": 0.9, "train.grad_clip": 1.0, "train.label_smoothing": 0.1, "model.dropout": 0.0},
        {"schedule.name": "multistep", "schedule.milestones": [1]},
        {"optim.name": "slbi", "optim.lr": 0.02, "optim.args": {"kappa": 2.0, "mu": 20.0, "lambda_conv": 0.05}},
        {"optim.name": "slbi_adam", "optim.lr": 2e-3, "optim.args": {"mu": 20.0, "fc_group": True, "path_every": 2}},
        {"optim.name": "slbi_adam", "optim.lr": 2e-3, "optim.args": {"variant": "adam_then_slbi", "mu": 20.0}},
    ],
    ids=["sgd", "momentum", "nesterov-groups", "adam", "adamw-scaled", "ema-clip-smoothing", "multistep"]
    + ["slbi", "slbi-adam", "slbi-adam-then-slbi"],
)
def test_step_body_equals_train_step(over):
    run_both(cfg_of(**over), tiny_dataset(n_train=80, n_test=16))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="captures CUDA graphs: needs a GPU")
@pytest.mark.parametrize("name", ["sgd", "nesterov", "adam", "adamw", "muon", "slbi", "slbi_adam"])
def test_captured_step_equals_eager_on_cuda(name, monkeypatch):
    # The graph itself: replays (and the eager last batch) against the eager step, fp32, fixed cuDNN choices.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    lr = 2e-3 if "adam" in name else 0.05
    cfg = cfg_of(**{"optim.name": name, "optim.lr": lr, "train.amp": "off", "train.ema": 0.9})
    data, cuda = tiny_dataset(n_train=80, n_test=16), torch.device("cuda")
    a, b = build_trainer(cfg, data, cuda, None), build_trainer(cfg, data, cuda, None)
    b.graph = graphs.StepGraph(b, capture=True)
    b.zero_sums()
    b.loader.set_epoch(0)
    assert b.graph.capture_phases(next(iter(b.loader)), range(2)) > 0 and b.graph.graphs
    for epoch in range(2):
        stats_a, _ = a.train_epoch(epoch)
        stats_b, _ = b.train_epoch(epoch)
        assert stats_b["train_loss"] == pytest.approx(stats_a["train_loss"], rel=1e-5)
    assert_same(a, b, atol=1e-5)


def test_fast_recipe_muon_whitening_lookahead_and_bias_freeze():
    # quick: Muon, frozen whitening (its bias trained for one epoch here, so both phases run), lookahead
    over = [
        "data.device=cpu",
        "train.progress=false",
        "train.log_tensorboard=false",
        "data.batch_size=16",
        "train.epochs=2",
        "train.whiten_bias_epochs=1",
        "train.whiten_images=40",
        "model.args.widths=[8, 8, 8]",
    ]
    cfg = load_config("quick", over)
    assert cfg.optim.name == "muon" and cfg.train.whiten and cfg.train.lookahead_every > 0
    a, b = run_both(cfg, tiny_dataset(n_train=56, n_test=16), atol=1e-5)
    assert b.recipe.bias_frozen(1) and not b.recipe.bias_frozen(0)


def test_warm_up_steps_are_undone():
    # The capture runs a few steps to warm up and must leave the run as it was (here without CUDA).
    t = build_trainer(cfg_of(**{"train.ema": 0.5}), tiny_dataset(n_train=64, n_test=16), CPU, None)
    t.zero_sums()
    g = graphs.StepGraph(t, capture=False)

    def state():
        opt = [v for s in t.opt.state.values() for v in s.values()]
        return [*t.model.state_dict().values(), *opt, *t.ema.state_dict().values(), t.loss_sum, t.correct]

    before = [x.clone() for x in state()]
    x, y = next(iter(t.loader))
    with undone(t):
        for _ in range(2):
            t.step_body(x, y, phase=False, lrs=g.lrs)
        assert any(not torch.equal(a, b) for a, b in zip(before, state()))
    assert all(torch.equal(a, b) for a, b in zip(before, state()))


@pytest.mark.parametrize(
    "over, words",
    [
        ({"optim.name": "rmsprop"}, "optimizer rmsprop"),
        ({"train.amp": "fp16"}, "fp16"),
        ({"schedule.name": "onecycle"}, "onecycle"),
        ({"augment.cutmix": 1.0}, "cutmix"),
        ({"train.compile": True}, "compile"),
    ],
)
def test_what_cannot_be_captured_says_why(over, words):
    assert words in graphs.why_not(cfg_of(**over), distributed=False)
    assert graphs.why_not(cfg_of(), distributed=False) is None
    assert "torchrun" in graphs.why_not(cfg_of(), distributed=True)


def test_graph_on_trains_as_off_and_notes_what_it_cannot_capture(tmp_path, capsys):
    ds = tiny_dataset(n_train=80, n_test=16)
    off = train(cfg_of(**{"train.graph": "off"}), tmp_path / "off", dataset=ds)
    on = train(cfg_of(**{"train.graph": "on"}), tmp_path / "on", dataset=ds)
    assert on["final_test_acc"] == pytest.approx(off["final_test_acc"])
    assert on["final_train_loss"] == pytest.approx(off["final_train_loss"], rel=1e-5)
    assert on["step"] == off["step"] == "eager" and on["capture_seconds"] == 0.0  # nothing to capture on CPU
    capsys.readouterr()
    train(cfg_of(**{"train.graph": "on", "optim.name": "rmsprop"}), tmp_path / "rms", dataset=ds)
    notes = [line for line in capsys.readouterr().out.splitlines() if "train.graph" in line]
    assert notes == ["note: train.graph: optimizer rmsprop has no tensor-lr step (graphed: "
                     "sgd, momentum, nesterov, adam, adamw, slbi, slbi_adam, muon); the step runs eagerly"]  # fmt: skip


def test_graph_setting_is_checked_and_may_change_on_resume(tmp_path):
    with pytest.raises(UserError, match="train.graph"):
        train(cfg_of(**{"train.graph": "sometimes"}), tmp_path / "bad", dataset=tiny_dataset())
    ds = tiny_dataset(n_train=64, n_test=16)
    cfg = cfg_of(**{"train.graph": "off", "train.epochs": 1})
    train(cfg, tmp_path / "r", dataset=ds)
    again = train(cfg_of(**{"train.graph": "on", "train.epochs": 1}), tmp_path / "r", dataset=ds)
    assert again["epochs"] == 1  # the finished run, not a refusal: how a step runs is not what it computes
