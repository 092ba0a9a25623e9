"""End-to-end runs of the engine on tiny synthetic data: files, metrics, resume, bad input."""

import json

import pytest
import torch
from conftest import tiny_dataset

from cifarlab.config import Config, from_dict
from cifarlab.errors import UserError
from cifarlab.models import flops_per_image
from cifarlab.train.checkpoint import load_model
from cifarlab.train.engine import build_model, train


def tiny_cfg(tmp_path, **over):
    base = {
        "name": "t",
        "out": str(tmp_path),
        "seed": 1,
        "model": {"name": "plainnet", "args": {"stages": [8, 16]}},
        "data": {"batch_size": 32, "device": "cpu"},
        "optim": {"name": "momentum", "lr": 0.05, "weight_decay": 5e-4},
        "schedule": {"name": "cosine"},
        "train": {"epochs": 2, "progress": False},
    }
    for key, value in over.items():
        section, _, field = key.partition(".")
        base.setdefault(section, {})[field] = value
    return from_dict(Config, base)


def test_run_folder_and_learning(tmp_path):
    cfg = tiny_cfg(tmp_path, **{"train.epochs": 4, "augment.crop_padding": 2})  # no flip: the class is a quadrant
    s = train(cfg, run_dir=tmp_path / "run", dataset=tiny_dataset())
    run = tmp_path / "run"
    for f in ("config.yaml", "metrics.jsonl", "summary.json", "best.pt", "last.pt"):
        assert (run / f).is_file(), f
    assert any((run / "tb").iterdir())
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4]
    assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "images_per_s"} <= set(lines[0])
    assert lines[-1]["train_loss"] < lines[0]["train_loss"]
    assert s["best_test_acc"] > 0.6  # chance is 0.25
    summary = json.loads((run / "summary.json").read_text())
    assert summary["params"] > 0 and summary["env"]["torch"] == torch.__version__ and summary["seed"] == 1
    model, ckpt = load_model(run)
    assert ckpt["classes"] == ["c0", "c1", "c2", "c3"] and not model.training


def test_resume_is_bit_exact(tmp_path):
    ds = tiny_dataset()
    over = {
        "train.epochs": 3,
        "augment.crop_padding": 2,
        "augment.hflip": True,
        "model.dropout": 0.2,
        "model.args": {"stages": [8, 16], "head": [16]},
    }
    full = train(tiny_cfg(tmp_path, **over), run_dir=tmp_path / "full", dataset=ds)
    part_cfg = tiny_cfg(tmp_path, **{**over, "train.epochs": 3})
    # Simulate a kill after epoch 2: train 2 epochs of the 3-epoch schedule by stopping early.
    import cifarlab.train.engine as eng

    calls = {"n": 0}
    real = eng.Trainer.train_epoch

    def dying(*a, **k):
        if calls["n"] == 2:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*a, **k)

    eng.Trainer.train_epoch = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            train(part_cfg, run_dir=tmp_path / "part", dataset=ds)
    finally:
        eng.Trainer.train_epoch = real
    resumed = train(part_cfg, run_dir=tmp_path / "part", resume=True, dataset=ds)
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "part" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["final_test_acc"] == full["final_test_acc"]


@pytest.mark.parametrize(
    "over",
    [
        {"train.ema": 0.9, "train.tta": "flip"},
        {"optim.l1": 1e-4, "train.grad_clip": 1.0, "train.loss": "mse"},
        {"augment.cutmix": 1.0, "augment.mixup": 0.2, "train.label_smoothing": 0.1},
        {"optim.name": "adamw", "optim.lr": 1e-3, "schedule.name": "onecycle"},
        {"data.val_size": 64},
    ],
)
def test_options_run(tmp_path, over):
    s = train(tiny_cfg(tmp_path, **{"train.epochs": 1, **over}), run_dir=tmp_path / "r", dataset=tiny_dataset())
    assert s["final_test_acc"] is not None and not s["diverged"]


def test_existing_run_folder_is_not_overwritten(tmp_path):
    ds = tiny_dataset()
    train(tiny_cfg(tmp_path, **{"train.epochs": 1}), run_dir=tmp_path / "r", dataset=ds)
    before = (tmp_path / "r" / "last.pt").read_bytes()
    with pytest.raises(UserError, match="already holds a run"):  # resume=False: what `cifarlab train` passes
        train(tiny_cfg(tmp_path, **{"train.epochs": 1}), run_dir=tmp_path / "r", resume=False, dataset=ds)
    assert (tmp_path / "r" / "last.pt").read_bytes() == before
    with pytest.raises(UserError, match="needs a run folder with last.pt"):
        train(tiny_cfg(tmp_path), run_dir=tmp_path / "empty", resume=True, dataset=ds)
    with pytest.raises(UserError, match="trained with model plainnet, not resnet18"):
        train(
            tiny_cfg(tmp_path, **{"model.name": "resnet18", "model.args": {}}),
            run_dir=tmp_path / "r",
            resume=True,
            dataset=ds,
        )


def test_unknown_model_option_is_user_error(tmp_path):
    with pytest.raises(UserError):
        train(tiny_cfg(tmp_path, **{"model.args": {"bogus": 1}}), run_dir=tmp_path / "r", dataset=tiny_dataset())
    assert not (tmp_path / "r").exists()


def test_resume_auto_skips_resumes_and_refuses(tmp_path):
    import cifarlab.train.engine as eng

    ds, cfg = tiny_dataset(), tiny_cfg(tmp_path, **{"train.epochs": 2, "train.log_tensorboard": False})
    done = train(cfg, run_dir=tmp_path / "done", dataset=ds)
    before = (tmp_path / "done" / "last.pt").stat().st_mtime_ns
    assert (
        train(cfg, run_dir=tmp_path / "done", resume="auto", dataset=ds)
        == json.loads((tmp_path / "done" / "summary.json").read_text())
        == json.loads(json.dumps(done))
    )
    assert (tmp_path / "done" / "last.pt").stat().st_mtime_ns == before  # nothing ran again
    with pytest.raises(UserError, match="holds a run with other settings"):
        train(
            tiny_cfg(tmp_path, **{"train.epochs": 3, "train.log_tensorboard": False}),
            run_dir=tmp_path / "done",
            resume="auto",
            dataset=ds,
        )

    real, epochs = eng.Trainer.train_epoch, []

    def dying(self, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(self, epoch)

    def counting(self, epoch):
        epochs.append(epoch)
        return real(self, epoch)

    eng.Trainer.train_epoch = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run_dir=tmp_path / "part", dataset=ds)
        eng.Trainer.train_epoch = counting
        resumed = train(cfg, run_dir=tmp_path / "part", resume="auto", dataset=ds)
    finally:
        eng.Trainer.train_epoch = real
    assert epochs == [1]  # only the epoch that had not finished
    assert resumed["final_test_acc"] == done["final_test_acc"]


# ---- the scorecard in summary.json, data.n_test, progress bar vs epoch lines


def test_summary_has_the_scorecard(tmp_path):
    s = train(tiny_cfg(tmp_path, **{"train.epochs": 1}), run_dir=tmp_path / "run", dataset=tiny_dataset())
    model = build_model(tiny_cfg(tmp_path), 4, 3)
    assert s["macs_per_image"] == flops_per_image(model, (3, 16, 16)) > 0
    assert s["params"] > 0 and s["train_seconds"] > 0 and s["images_per_s"] > 0
    assert s["peak_memory_mb"] > 10  # this process's peak resident size on CPU
    assert s["best_selected_on"] == "test"  # no val split: the best epoch was picked on test
    assert s["test_images"] == len(tiny_dataset().test_y)


def test_val_split_names_val_as_the_selection(tmp_path):
    cfg = tiny_cfg(tmp_path, **{"train.epochs": 1, "data.val_size": 64})
    s = train(cfg, run_dir=tmp_path / "run", dataset=tiny_dataset())
    assert s["best_selected_on"] == "val" and "best_val_acc" in s and "final_test_acc" in s
    assert "best_test_acc" not in s


def test_n_test_scores_only_the_first_test_images(tmp_path):
    cfg = tiny_cfg(tmp_path, **{"train.epochs": 1, "data.n_test": 40})
    assert train(cfg, run_dir=tmp_path / "run", dataset=tiny_dataset())["test_images"] == 40


def test_progress_off_keeps_the_epoch_lines(tmp_path, capsys):
    train(tiny_cfg(tmp_path, **{"train.epochs": 2}), run_dir=tmp_path / "a", dataset=tiny_dataset())
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("epoch ")]
    assert [x.split()[1] for x in lines] == ["1/2", "2/2"]
    cfg = tiny_cfg(tmp_path, **{"train.epochs": 2, "train.log_epochs": False})
    train(cfg, run_dir=tmp_path / "b", dataset=tiny_dataset())
    assert "epoch " not in capsys.readouterr().out


def test_a_val_split_keeps_the_test_set_untouched_until_the_end(tmp_path, monkeypatch):
    import cifarlab.train.engine as engine

    seen, predict = [], engine.predict

    def spy(model, loader, *a, **kw):
        logits, y = predict(model, loader, *a, **kw)
        seen.append(len(y))
        return logits, y

    monkeypatch.setattr(engine, "predict", spy)
    cfg = tiny_cfg(tmp_path, **{"train.epochs": 3, "data.val_size": 48})
    s = train(cfg, run_dir=tmp_path / "run", dataset=tiny_dataset())  # 64 test images
    assert seen == [48, 48, 48, 64]  # each epoch on val, the test set once after the last
    assert s["best_selected_on"] == "val" and 0 <= s["final_test_acc"] <= 1
