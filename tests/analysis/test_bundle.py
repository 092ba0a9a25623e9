"""`cifarlab export --format bundle` (issue 15): one file that `eval` and `predict` load on their own,
a safetensors file with the metadata as JSON (issue 22), old .bundle.pt files still loading;
and load_state's one-line error naming the keys that do not fit (issue 16)."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import make_image_folder, train_tiny_run
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from cifarlab.cli import main
from cifarlab.errors import UserError
from cifarlab.models import create_model
from cifarlab.train.checkpoint import BUNDLE_FORMAT, BUNDLE_META_KEY, load_model, load_state

CLASSES = ("cat", "dog", "frog")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """plainnet with EMA weights, trained for a few steps on a three-class folder (seed 0)."""
    root = tmp_path_factory.mktemp("bundle")
    folder = make_image_folder(root / "imgs", classes=CLASSES, n_train=16, n_test=6, size=18)
    yield train_tiny_run(root, folder, epochs=2, ema=0.9)


@pytest.fixture(autouse=True)
def cache(run, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(run.parent / "cache"))


@pytest.fixture(scope="module")
def bundle(run, tmp_path_factory):
    """The run's bundle, exported into an existing folder (which receives best.safetensors)."""
    out = tmp_path_factory.mktemp("export")
    assert main(["export", str(run), "--format", "bundle", "--out", str(out)]) == 0
    assert [p.name for p in out.iterdir()] == ["best.safetensors"]  # no temporary file left behind
    return out / "best.safetensors"


def read_bundle(path) -> tuple[dict, dict]:
    """(the tensors, the JSON metadata) of a safetensors bundle, read with safetensors alone."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert list(meta) == [BUNDLE_META_KEY]
    return load_file(str(path)), json.loads(meta[BUNDLE_META_KEY])


def write_bundle(path, tensors: dict, meta: dict) -> None:
    save_file(tensors, str(path), metadata={BUNDLE_META_KEY: json.dumps(meta)})


def old_bundle(run, path) -> None:
    """A version 1 bundle as cifarlab wrote them before safetensors: one torch.save dict."""
    ckpt = torch.load(run / "best.pt", weights_only=True)
    summary = json.loads((run / "summary.json").read_text())
    keys = ("config", "classes", "mean", "std", "image_shape", "model_name", "model_options")
    bundle = {"format": BUNDLE_FORMAT, "version": 1, "model": ckpt["ema"], **{k: ckpt[k] for k in keys}}
    bundle.update(metrics={k: v for k, v in summary.items() if k != "env"}, environment=summary["env"])
    torch.save(bundle, path)


def cli(*args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def images(run):
    return [run.parent / "imgs" / split / c / "0001.png" for split in ("train", "test") for c in CLASSES]


def test_bundle_alone_predicts_and_evaluates_as_the_checkpoint(run, bundle, tmp_path, monkeypatch, capsys):
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copy(bundle, fresh / "model.safetensors")
    old_bundle(run, fresh / "old.bundle.pt")
    monkeypatch.chdir(fresh)  # no run folder, no config.yaml, no summary.json: only the bundles
    results = {}
    for name, ckpt in (("run", run / "best.pt"), ("bundle", "model.safetensors"), ("old", "old.bundle.pt")):
        code, out, err = cli("predict", ckpt, *images(run), "--topk", 3, "--json", capsys=capsys)
        assert code == 0, err
        pred = json.loads(out)
        code, out, err = cli("eval", ckpt, "--json", capsys=capsys)
        assert code == 0, err
        results[name] = pred, json.loads(out)
    pred_run, eval_run = results["run"]
    for pred_bundle, eval_bundle in (results["bundle"], results["old"]):
        for a, b in zip(pred_run, pred_bundle):
            assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
            assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
            probs_a, probs_b = [t["prob"] for t in a["top"]], [t["prob"] for t in b["top"]]
            np.testing.assert_allclose(probs_b, probs_a, rtol=1e-5, atol=1e-6)
        assert eval_bundle["accuracy"] == eval_run["accuracy"] and eval_bundle["n"] == eval_run["n"] == 18
        assert eval_bundle["confusion"] == eval_run["confusion"] and eval_bundle["classes"] == list(CLASSES)
    assert sorted(p.name for p in fresh.iterdir()) == ["model.safetensors", "old.bundle.pt"]


def test_bundle_holds_the_ema_weights_metrics_and_no_training_state(run, bundle):
    weights, b = read_bundle(bundle)  # safetensors alone reads it: tensors, and the rest as JSON
    ckpt = torch.load(run / "best.pt", weights_only=True)
    summary = json.loads((run / "summary.json").read_text())
    assert b["format"] == BUNDLE_FORMAT and b["version"] == 2
    assert not {"model", "optimizer", "scheduler", "ema", "ema_state", "rng", "lookahead"} & set(b)
    assert ckpt["ema"] and weights.keys() == ckpt["ema"].keys()
    assert all(torch.equal(weights[k], ckpt["ema"][k]) for k in weights)  # the EMA copy, as load_model picks
    assert not all(torch.equal(weights[k], ckpt["model"][k]) for k in weights)  # (which is not the raw one)
    for key in ("config", "classes", "mean", "std", "image_shape", "model_name", "model_options"):
        assert b[key] == ckpt[key], key
    assert b["classes"] == list(CLASSES) and b["image_shape"] == [18, 18, 3]
    assert b["metrics"] == {k: v for k, v in summary.items() if k != "env"} and b["environment"] == summary["env"]


def test_bundle_of_a_lone_checkpoint_keeps_what_the_checkpoint_holds(run, tmp_path, capsys):
    shutil.copy(run / "last.pt", tmp_path / "last.pt")
    code, out, err = cli("export", tmp_path / "last.pt", "--format", "bundle", capsys=capsys)
    assert code == 0 and f"wrote {tmp_path / 'last.safetensors'} (bundle via safetensors)" in out, err
    assert "max abs diff 0" in out
    _, b = read_bundle(tmp_path / "last.safetensors")
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert b["metrics"] == {k: ckpt[k] for k in ("epoch", "best_acc", "train_seconds")}
    assert b["environment"]["torch"] == torch.__version__
    model, _ = load_model(tmp_path / "last.safetensors")
    assert model.cifarlab_name == "plainnet" and not model.training


def test_an_old_bundle_exports_to_a_new_one(run, tmp_path, capsys):
    old_bundle(run, tmp_path / "m.bundle.pt")
    code, out, err = cli("export", tmp_path / "m.bundle.pt", "--format", "bundle", capsys=capsys)
    assert code == 0 and f"wrote {tmp_path / 'm.bundle.safetensors'} (bundle via safetensors)" in out, err
    weights, b = read_bundle(tmp_path / "m.bundle.safetensors")
    assert b["version"] == 2 and b["metrics"] == torch.load(tmp_path / "m.bundle.pt", weights_only=True)["metrics"]
    assert weights.keys() == torch.load(run / "best.pt", weights_only=True)["ema"].keys()


@pytest.mark.parametrize("kind", ["random", "future", "incomplete", "foreign", "old random", "old future"])
def test_a_bad_bundle_is_one_line_exit_2(run, bundle, tmp_path, capsys, kind):
    path = tmp_path / ("bad.bundle.pt" if kind.startswith("old") else "bad.safetensors")
    weights, meta = read_bundle(bundle)
    if kind.endswith("random"):
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "foreign":  # a safetensors file of someone else's weights
        save_file(weights, str(path), metadata={"format": "pt"})
    elif kind == "old future":
        torch.save({**meta, "model": weights, "version": 99}, path)
    else:
        meta.update(version=99) if kind == "future" else meta.pop("image_shape")
        write_bundle(path, weights, meta)
    needle = {
        "random": "cannot read bundle",
        "future": "version 99",
        "incomplete": "no image_shape",
        "foreign": "not a cifarlab bundle",
        "old random": "cannot read bundle",
        "old future": "version 99",
    }[kind]
    image = images(run)[0]
    for args in (("eval", path), ("predict", path, image), ("export", path, "--format", "bundle")):
        code, out, err = cli(*args, capsys=capsys)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("cifarlab: error:") and needle in lines[0], err


def test_load_state_names_missing_unexpected_and_mismatched_keys():
    model = create_model("plainnet", stages=[8, 16], num_classes=3)
    state = create_model("plainnet", stages=[8, 16], num_classes=10).state_dict()
    for k in ("bn1.bias", "bn1.weight", "conv1.weight", "layer1.0.conv1.weight"):
        del state[k]
    state["head.weight"] = torch.zeros(2)
    with pytest.raises(UserError) as e:
        load_state(model, state, "checkpoint x.pt")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("checkpoint x.pt does not fit model plainnet: ")
    assert "4 missing keys (conv1.weight, bn1.weight, bn1.bias, ...)" in msg
    assert "1 unexpected (head.weight)" in msg
    assert (
        "2 shape mismatches (fc.weight: checkpoint [10, 16], model [3, 16]; fc.bias: checkpoint [10], model [3])" in msg
    )


def test_eval_of_a_checkpoint_of_another_shape_names_the_mismatch(run, tmp_path, capsys):
    ckpt = torch.load(run / "best.pt", weights_only=True)
    ckpt["model_options"] = {**ckpt["model_options"], "num_classes": 5}
    torch.save(ckpt, tmp_path / "other.pt")
    code, out, err = cli("eval", tmp_path / "other.pt", capsys=capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "does not fit model plainnet: 2 shape mismatches (fc.weight: checkpoint [3, 16], model [5, 16]; " in lines[0]
