"""One run folder, one run: the lock, resume with other settings, taken folders, cut-short files,
and the BN study's folder check."""

import json
import os
import subprocess
import sys

import pytest
from conftest import tiny_dataset

from cifarlab.config import save_config
from cifarlab.errors import UserError
from cifarlab.run import lock_folder, read_jsonl
from cifarlab.studies.bn_study import BNStudyConfig, check_out_folder, run_bn_study
from cifarlab.train.engine import train

sys.path.insert(0, os.path.dirname(__file__))
from test_engine import tiny_cfg  # noqa: E402


def interrupted_run(tmp_path, run, **over):
    """A run of 2 epochs killed after its first epoch: last.pt and metrics.jsonl, no summary.json."""
    import cifarlab.train.engine as eng

    cfg = tiny_cfg(tmp_path, **over)
    calls = {"n": 0}
    real = eng.Trainer.train_epoch

    def dying(*a, **k):
        if calls["n"] == 1:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(*a, **k)

    eng.Trainer.train_epoch = dying
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run_dir=run, dataset=tiny_dataset())
    finally:
        eng.Trainer.train_epoch = real
    assert (run / "last.pt").is_file() and not (run / "summary.json").exists()
    return cfg


def test_second_writer_is_refused_at_once(tmp_path):
    run = tmp_path / "run"
    with lock_folder(run) as lock:
        holder = lock.read_text().split()
        assert holder[0] == str(os.getpid())
        with pytest.raises(UserError, match=f"being written by another process .*{os.getpid()}"):
            train(tiny_cfg(tmp_path), run_dir=run, dataset=tiny_dataset())
        assert not (run / "config.yaml").exists()  # nothing written by the refused one
    assert not lock.exists()  # removed when the holder ends


def test_stale_lock_of_dead_process_is_taken_over_and_removed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(f"{dead.pid} {os.uname().nodename}\n")
    s = train(tiny_cfg(tmp_path), run_dir=run, dataset=tiny_dataset())
    assert s["epochs"] == 2 and not (run / ".lock").exists()


def test_lock_removed_on_interrupt(tmp_path):
    run = tmp_path / "run"
    interrupted_run(tmp_path, run)
    assert not (run / ".lock").exists()
    with lock_folder(run):  # free again
        pass


def test_resume_with_other_settings_is_refused(tmp_path):
    run = tmp_path / "run"
    interrupted_run(tmp_path, run)
    with pytest.raises(UserError, match=r"other settings \(optim.lr: 0.05 there, 0.1 now\)"):
        train(tiny_cfg(tmp_path, **{"optim.lr": 0.1}), run_dir=run, resume=True, dataset=tiny_dataset())
    # the same settings resume (a neutral key such as data.device may differ)
    s = train(tiny_cfg(tmp_path, **{"data.device": "auto"}), run_dir=run, resume=True, dataset=tiny_dataset())
    assert s["epochs"] == 2


@pytest.mark.parametrize("only", ["config.yaml", "metrics.jsonl", "summary.json", "best.pt"])
def test_folder_with_any_run_file_is_taken(tmp_path, only):
    run = tmp_path / "run"
    run.mkdir()
    (run / only).write_text("x")
    with pytest.raises(UserError, match=f"run folder {run} already holds a run; use --resume or another --out"):
        train(tiny_cfg(tmp_path), run_dir=run, resume=False, dataset=tiny_dataset())
    assert (run / only).read_text() == "x"


def test_rerun_without_checkpoints_is_refused(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_cfg(tmp_path, **{"train.save_checkpoints": False})
    train(cfg, run_dir=run, resume=False, dataset=tiny_dataset())
    assert not (run / "last.pt").exists()
    before = (run / "summary.json").read_text()
    with pytest.raises(UserError, match="already holds a run"):
        train(cfg, run_dir=run, resume=False, dataset=tiny_dataset())
    assert (run / "summary.json").read_text() == before


@pytest.mark.parametrize("text", ["{not json", '{"name": "t"}'])
def test_corrupt_summary_counts_as_unfinished(tmp_path, text):
    run = tmp_path / "run"
    cfg = interrupted_run(tmp_path, run)
    (run / "summary.json").write_text(text)
    s = train(cfg, run_dir=run, resume="auto", dataset=tiny_dataset())  # resumes from last.pt
    assert s["epochs"] == 2 and [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2
    # without last.pt: starts clean
    (run / "summary.json").write_text(text)
    (run / "last.pt").unlink()
    s = train(cfg, run_dir=run, resume="auto", dataset=tiny_dataset())
    assert s["epochs"] == 2 and [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]


def test_partial_last_metrics_line_is_dropped_on_resume(tmp_path):
    run = tmp_path / "run"
    cfg = interrupted_run(tmp_path, run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_lo')
    s = train(cfg, run_dir=run, resume=True, dataset=tiny_dataset())
    assert s["epochs"] == 2 and [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    with pytest.raises(json.JSONDecodeError):  # elsewhere a broken line is still an error
        (run / "m.jsonl").write_text('{"a": 1}\n{"b"\n{"c": 2}\n')
        read_jsonl(run / "m.jsonl", partial_tail=True)


def bn_cfg(**over):
    cfg = BNStudyConfig(n_items=64, epochs=1, lrs=[1e-3], probe_every=0, proxies=False, progress=False, device="cpu")
    for k, v in over.items():
        setattr(cfg, k, v)
    return cfg


def test_bn_study_refuses_other_settings_and_other_folders(tmp_path):
    out = tmp_path / "bn"
    out.mkdir()
    save_config(bn_cfg(), out / "config.yaml")  # as run_bn_study writes before it trains
    (out / "summary.json").write_text(json.dumps({"study": "bn", "config": {}}))
    check_out_folder(bn_cfg(progress=True, device="auto"), out)  # the same study: may be rerun
    with pytest.raises(UserError, match=r"other settings \(lrs: \[0.001\] there, \[0.002\] now\)"):
        run_bn_study(bn_cfg(lrs=[2e-3]), out, dataset=tiny_dataset())
    assert json.loads((out / "summary.json").read_text()) == {"study": "bn", "config": {}}

    dessilbi = tmp_path / "d"
    dessilbi.mkdir()
    (dessilbi / "summary.json").write_text(json.dumps({"study": "dessilbi"}))
    with pytest.raises(UserError, match="holds the dessilbi study, not a BN study"):
        run_bn_study(bn_cfg(), dessilbi, dataset=tiny_dataset())

    run = tmp_path / "run"
    train(tiny_cfg(tmp_path, **{"train.epochs": 1}), run_dir=run, dataset=tiny_dataset())
    with pytest.raises(UserError, match="holds a run, not a BN study"):
        run_bn_study(bn_cfg(), run, dataset=tiny_dataset())

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.yaml").write_text("name: s\n")
    with pytest.raises(UserError, match="holds a sweep"):
        run_bn_study(bn_cfg(), sweep, dataset=tiny_dataset())
