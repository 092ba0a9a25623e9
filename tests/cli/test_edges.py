"""Edges a user meets: out-of-range settings, a full or read-only disk, an export into a folder, a sweep
with a corrupt, failed or diverged run, a report of a folder that is not cifarlab's. Each gives one line
`cifarlab: error: ...`, a non-zero exit (2 where the user caused it, 1 for the environment) and loses nothing."""

import errno
import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import make_image_folder, tiny_dataset, train_tiny_run

from cifarlab.cli import main, write_error
from cifarlab.config import Config, check, from_dict
from cifarlab.errors import UserError


def cli(*args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("cifarlab: error:")]
    assert len(lines) == 1, err
    return lines[0]


TINY = [
    "--set",
    "model.name=plainnet",
    "--set",
    "model.args={stages: [8, 16]}",
    "--set",
    "train.epochs=1",
    "--set",
    "data.batch_size=16",
    "--set",
    "train.progress=false",
    "--set",
    "data.device=cpu",
    "--set",
    "train.log_tensorboard=false",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("imgs"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    return train_tiny_run(root, make_image_folder(root / "imgs"), epochs=1)


# ---------------------------------------------------------------- 1. values out of range


@pytest.mark.parametrize(
    "key,value,allowed",
    [
        ("train.epochs", 0, ">= 1"),
        ("train.epochs", -1, ">= 1"),
        ("optim.lr", -1, "> 0"),
        ("optim.lr", 0, "> 0"),
        ("optim.lr", float("inf"), "finite"),
        ("optim.lr", float("nan"), "finite"),
        ("train.eval_every", 0, ">= 1"),
        ("data.n_items", -5, ">= 0"),
        ("data.val_size", -1, ">= 0"),
        ("data.batch_size", 0, ">= 1"),
        ("data.eval_batch_size", 0, ">= 1"),
        ("train.label_smoothing", 1.0, "[0, 1)"),
        ("train.label_smoothing", -0.1, "[0, 1)"),
        ("train.ema", 1.0, "[0, 1)"),
        ("train.grad_clip", -1.0, ">= 0"),
        ("optim.weight_decay", -1e-4, ">= 0"),
        ("train.save_every", -1, ">= 0"),
        ("optim.momentum", 1.5, "[0, 1)"),
    ],
)
def test_out_of_range_values_name_key_value_and_range(key, value, allowed):
    section, name = key.split(".")
    cfg = from_dict(Config, {section: {name: value}})
    with pytest.raises(UserError) as e:
        check(cfg)
    msg = str(e.value)
    assert key in msg and repr(value) in msg and allowed in msg, msg


def test_defaults_and_presets_are_in_range():
    from cifarlab.config import load_config, preset_names

    check(Config())
    for name in preset_names("train"):
        check(load_config(name))


@pytest.mark.parametrize(
    "setting,needle",
    [
        ("train.epochs=0", "train.epochs=0"),
        ("train.epochs=-1", "train.epochs=-1"),
        ("optim.lr=-1", "optim.lr=-1.0"),
        ("train.eval_every=0", "eval_every=0"),
        ("data.n_items=-5", "data.n_items=-5"),
    ],
)
def test_cli_out_of_range_is_one_line_exit_2_and_writes_no_summary(
    setting, needle, folder, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "r"
    code, _, err = cli("train", "quick", "--data", folder, "--out", out, *TINY, "--set", setting, capsys=capsys)
    assert code == 2 and needle in one_error_line(err)
    assert not (out / "summary.json").exists()  # a sweep must not count it as finished


# ---------------------------------------------------------------- 2. a full or read-only disk


def no_tmp_left(d: Path) -> bool:
    return not [p for p in d.rglob("*.tmp")]


def test_full_disk_in_train_is_one_line_exit_1(folder, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    real_save, out = torch.save, tmp_path / "r"

    def full(obj, f, *a, **k):
        if str(getattr(f, "name", f)).startswith(str(out)):  # the run's checkpoints, not the data cache
            raise RuntimeError(
                "[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0\n"
                "PytorchStreamWriter failed writing file data/0: file write failed"
            )
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", full)
    code, _, err = cli("train", "quick", "--data", folder, "--out", out, *TINY, capsys=capsys)
    line = one_error_line(err)
    assert code == 1 and f"cannot write {out / 'best.pt'}: write failed" in line, line
    assert "inline_container" not in line and "unexpected pos" not in line, line
    assert not (out / "summary.json").exists() and no_tmp_left(out)


def test_enospc_oserror_names_the_file_not_its_temporary(tmp_path, capsys, monkeypatch):
    (tmp_path / "sweep.yaml").write_text("name: x\nseeds: [0]\n")

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.0, "test_acc": 0.5}) + "\n")
    (run_dir / "summary.json").write_text(json.dumps({"train_seconds": 1.0, "final_test_acc": 0.5}))
    monkeypatch.setattr(Path, "write_text", full)
    code, _, err = cli("report", run_dir, capsys=capsys)
    line = one_error_line(err)
    assert code == 1 and f"cannot write {run_dir / 'report.html'}: No space left on device" in line, line
    assert not (run_dir / "report.html").exists() and no_tmp_left(run_dir)


def test_write_error_messages():
    e = OSError(errno.EROFS, "Read-only file system", "/a/.best.pt.x1y2_abc.tmp")
    assert write_error(e) == "cannot write /a/best.pt: Read-only file system"
    e = OSError(errno.ENOSPC, "No space left on device", "/a/.m.onnx.k2j_9a0b.onnx")
    assert write_error(e) == "cannot write /a/m.onnx: No space left on device"
    assert (
        write_error(PermissionError(errno.EACCES, "Permission denied", "/a/b"))
        == "cannot write /a/b: Permission denied"
    )


def test_export_onto_a_full_disk_is_exit_1_and_keeps_the_old_file(run, tmp_path, capsys, monkeypatch):
    import torch

    target = tmp_path / "m.torchscript.pt"
    target.write_bytes(b"old")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(a[1]) if len(a) > 1 else None)

    monkeypatch.setattr(torch.jit, "save", full)
    monkeypatch.setattr(torch.jit.ScriptModule, "save", lambda self, f, *a, **k: full(self, f))
    code, _, err = cli("export", run, "--format", "torchscript", "--out", target, capsys=capsys)
    line = one_error_line(err)
    assert code == 1 and f"cannot write {target}: No space left" in line, line
    assert target.read_bytes() == b"old" and no_tmp_left(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o555 folder anyway")
def test_read_only_out_folder(run, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = cli("export", run, "--format", "torchscript", "--out", ro / "m.pt", capsys=capsys)
        assert code == 1 and "cannot write" in one_error_line(err)
    finally:
        ro.chmod(0o755)


# ---------------------------------------------------------------- 3. export into an existing folder


def test_export_into_an_existing_folder_is_named_after_the_checkpoint(run, tmp_path, capsys):
    dest = tmp_path / "exports"
    dest.mkdir()
    code, out, err = cli("export", run, "--format", "torchscript", "--out", dest, capsys=capsys)
    assert code == 0, err
    # a run folder exports its best.pt: the file in the folder is best.torchscript.pt
    assert (dest / "best.torchscript.pt").is_file() and str(dest / "best.torchscript.pt") in out


# ---------------------------------------------------------------- 4. sweeps


def write_sweep(path: Path, **fields) -> Path:
    run_set = {
        "model.name": "plainnet",
        "model.args": {"stages": [8, 16]},
        "data.batch_size": 32,
        "data.device": "cpu",
        "train.epochs": 1,
        "train.progress": False,
        "train.log_tensorboard": False,
    }
    path.write_text(yaml.safe_dump({"name": "tiny", "set": run_set, "seeds": [0], **fields}, sort_keys=False))
    return path


def test_a_corrupt_summary_reruns_that_run_and_says_so(tmp_path, capsys):
    from cifarlab.sweeps import expand, load_sweep, run_sweep

    sweep = load_sweep(write_sweep(tmp_path / "s.yaml", axes={"optim.lr": [0.1, 0.02]}))
    out = tmp_path / "out"
    run_sweep(sweep, out, data=tiny_dataset())
    ids = [s.run_id for s in expand(sweep)]
    (out / ids[0] / "summary.json").write_text('{"best_test_acc": 0.')  # cut short
    capsys.readouterr()
    rows = run_sweep(sweep, out, data=tiny_dataset())
    printed = capsys.readouterr().out
    assert f"{ids[0]}: summary.json is unreadable" in printed and "1 to run" in printed
    assert [r["status"] for r in rows] == ["done", "done"]
    assert json.loads((out / ids[0] / "summary.json").read_text())["epochs"] == 1
    assert (out / ids[0] / "summary.json.corrupt").read_text() == '{"best_test_acc": 0.'  # kept, not lost


def test_a_sweep_with_a_failed_run_finishes_the_others_then_exits_2(tmp_path, folder, capsys, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    variants = {"good": {}, "bad": {"model.args": {"stages": [8, 16], "no_such_option": 1}}}
    path = write_sweep(tmp_path / "s.yaml", variants=variants)
    out = tmp_path / "out"
    code, stdout, err = cli("sweep", path, "--out", out, "--data", folder, capsys=capsys)
    line = one_error_line(err)
    assert code == 2 and "1 of 2 runs failed" in line and str(out / "bad-s0" / "error.txt") in line, line
    assert (out / "good-s0" / "summary.json").is_file() and (out / "results.md").is_file()
    assert "results.md" in stdout


def test_a_diverged_run_has_its_own_status_and_is_marked(tmp_path):
    from cifarlab.sweeps import tabulate

    for i, (rid, diverged, acc) in enumerate([("a-s0", False, 0.8), ("a-s1", True, 0.1)]):
        d = tmp_path / rid
        d.mkdir()
        (d / "run.json").write_text(
            json.dumps({"run_id": rid, "config_id": "a", "axes": {"x": "a"}, "values": {}, "seed": i, "index": i})
        )
        (d / "summary.json").write_text(
            json.dumps({"diverged": diverged, "best_test_acc": acc, "final_test_acc": acc, "train_seconds": 1.0})
        )
    rows = tabulate(tmp_path, figures=False)
    assert [r["status"] for r in rows] == ["done", "diverged"]
    assert "diverged" in (tmp_path / "results.csv").read_text()
    md = (tmp_path / "results.md").read_text()
    head = next(ln for ln in md.splitlines() if ln.startswith("| x |"))
    assert head.startswith("| x | n | diverged |"), md
    assert "Diverged runs" in md


# ---------------------------------------------------------------- 5. report of a folder that is not cifarlab's


def test_report_refuses_a_folder_that_is_not_cifarlabs(tmp_path, capsys):
    d = tmp_path / "random"
    d.mkdir()
    (d / "summary.json").write_text('{"a": 1}')
    code, _, err = cli("report", d, capsys=capsys)
    assert code == 2 and "nothing to report" in one_error_line(err)
    assert not (d / "report.html").exists()


def test_a_foreign_summary_beside_a_cifarlab_run_is_no_run(tmp_path):
    from cifarlab.report.scan import kind_of

    (tmp_path / "summary.json").write_text('{"a": 1}')
    assert kind_of(tmp_path) == "folder"
    (tmp_path / "summary.json").write_text(json.dumps({"train_seconds": 1.0, "diverged": False}))
    assert kind_of(tmp_path) == "run"
    (tmp_path / "summary.json").write_text(json.dumps({"study": "bn"}))
    assert kind_of(tmp_path) == "study"


def test_gradcam_onto_a_full_disk_is_one_line_exit_1(run, tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure

    image = next((run.parent / "imgs" / "train").rglob("*.png"))

    def full(self, fname, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(fname))

    monkeypatch.setattr(Figure, "savefig", full)
    code, _, err = cli("predict", run, image, "--gradcam", "--out", tmp_path / "cams", capsys=capsys)
    line = one_error_line(err)
    assert code == 1 and "cannot write" in line and "No space left on device" in line, line
    assert no_tmp_left(tmp_path)
