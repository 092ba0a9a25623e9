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


@pytest.mark.parametrize("only", ["summary.json", "last.pt", "metrics.jsonl", "best.pt"])
def test_folder_with_run_files_but_no_config_is_taken(tmp_path, only):
    run = tmp_path / "run"
    run.mkdir()
    (run / only).write_text("x")
    with pytest.raises(UserError, match=f"run folder {run} already holds a run; use --resume or another --out"):
        train(tiny_cfg(tmp_path), run_dir=run, resume=False, dataset=tiny_dataset())
    assert (run / only).read_text() == "x"


@pytest.mark.parametrize("resume", [False, True, "auto"])
def test_folder_without_checkpoint_or_summary_is_free_and_cleared(tmp_path, resume):
    """What a run killed (SIGTERM, kill -9, a crash) before its first checkpoint leaves: its config (of
    other settings even), a metrics line, tb/, best.pt, a stale lock. Any mode starts it afresh."""
    run = tmp_path / "run"
    (run / "tb").mkdir(parents=True)
    (run / "tb" / "events.out.tfevents.1.host").write_bytes(b"old")
    save_config(tiny_cfg(tmp_path, **{"optim.lr": 0.3}), run / "config.yaml")
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 9.0}\n')
    for name in ("best.pt", "ckpt_epoch000.pt", ".lock"):
        (run / name).write_text("x")
    cfg = tiny_cfg(tmp_path, **{"train.log_tensorboard": False, "train.save_every": 0})
    s = train(cfg, run_dir=run, resume=resume, dataset=tiny_dataset())
    assert s["epochs"] == 2 and [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    assert not (run / "tb").exists() and not (run / "ckpt_epoch000.pt").exists() and not (run / ".lock").exists()
    assert "lr: 0.05" in (run / "config.yaml").read_text() and (run / "best.pt").stat().st_size > 1


def test_resume_of_an_empty_folder_still_needs_last_pt(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(UserError, match="--resume needs a run folder with last.pt"):
        train(tiny_cfg(tmp_path), run_dir=run, resume=True, dataset=tiny_dataset())
    assert list(run.iterdir()) == []


def test_a_finished_run_without_checkpoints_is_still_taken(tmp_path):
    run = tmp_path / "run"
    cfg = tiny_cfg(tmp_path, **{"train.save_checkpoints": False})
    train(cfg, run_dir=run, dataset=tiny_dataset())
    with pytest.raises(UserError, match="--resume needs a run folder with last.pt"):
        train(cfg, run_dir=run, resume=True, dataset=tiny_dataset())
    assert (run / "summary.json").is_file() and len(read_jsonl(run / "metrics.jsonl")) == 2


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


# ---------------------------------------------------------------- through the command line

CLI_TINY = ["--set", "model.name=plainnet", "--set", "model.args={stages: [8, 16]}", "--set", "data.batch_size=16",
            "--set", "train.progress=false", "--set", "data.device=cpu", "--set", "train.epochs=2"]  # fmt: skip


def cli(capsys, *args):
    from cifarlab.cli import main

    code = main([str(a) for a in args])
    out = capsys.readouterr()
    assert "Traceback" not in out.err, out.err
    return code, out.out, out.err


def interrupt_in_epoch(monkeypatch, epoch: int):
    """Ctrl-C (a KeyboardInterrupt) in the given epoch (0-based), as the terminal delivers it."""
    import cifarlab.train.engine as eng

    real = eng.Trainer.train_epoch

    def dying(self, e, *a, **k):
        if e == epoch:
            raise KeyboardInterrupt
        return real(self, e, *a, **k)

    monkeypatch.setattr(eng.Trainer, "train_epoch", dying)
    return lambda: monkeypatch.setattr(eng.Trainer, "train_epoch", real)


@pytest.mark.parametrize("again", [[], ["--resume"]])
def test_a_run_interrupted_in_its_first_epoch_starts_again_with_the_same_command(tmp_path, monkeypatch, capsys, again):
    from conftest import make_image_folder

    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    folder, run = make_image_folder(tmp_path / "imgs"), tmp_path / "run"
    command = ["train", "quick", "--data", folder, "--out", run, *CLI_TINY]
    restore = interrupt_in_epoch(monkeypatch, 0)
    code, _, err = cli(capsys, *command)
    assert code == 130 and "--resume" in err
    assert (run / "config.yaml").is_file() and (run / "tb").is_dir() and not (run / "last.pt").exists()
    restore()
    code, out, err = cli(capsys, *(command + again))
    assert code == 0, err
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2]
    assert len(list((run / "tb").glob("events.*"))) == 1  # the stopped start's log is gone
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2


def image_sources(tmp_path):
    """Two copies of 'cifar10' as CIFARLAB_DATA would find them: the same classes and size, other images."""
    from conftest import make_image_folder

    return make_image_folder(tmp_path / "a", seed=0), make_image_folder(tmp_path / "b", seed=1)


def test_resume_on_other_data_is_refused_naming_both(tmp_path, monkeypatch, capsys):
    a, b = image_sources(tmp_path)
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CIFARLAB_DATA", str(a))
    run = tmp_path / "run"
    restore = interrupt_in_epoch(monkeypatch, 1)
    code, _, _ = cli(capsys, "train", "quick", "--out", run, "--set", "data.source=cifar10", *CLI_TINY)
    assert code == 130 and (run / "last.pt").is_file()
    restore()
    record = json.loads((run / "data.json").read_text())
    assert record["source"] == "cifar10" and record["path"] == str(a.resolve()) and len(record["fingerprint"]) == 16
    assert "source: cifar10" in (run / "config.yaml").read_text()  # the config stays the one asked for
    metrics_before = (run / "metrics.jsonl").read_text()
    monkeypatch.setenv("CIFARLAB_DATA", str(b))
    code, _, err = cli(capsys, "train", "--resume", "--out", run)
    assert code == 2 and err.count("cifarlab: error:") == 1, err
    assert f"trained on {a.resolve()}" in err and f"reads {b.resolve()}" in err
    assert (run / "metrics.jsonl").read_text() == metrics_before and not (run / "summary.json").exists()
    # the same images in another place are the same data
    monkeypatch.setenv("CIFARLAB_DATA", str(a))
    code, _, err = cli(capsys, "train", "--resume", "--out", run)
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["epochs"] == 2


def test_a_run_folder_from_before_data_json_resumes_as_before(tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = interrupted_run(tmp_path, run)
    (run / "data.json").unlink()
    other = tiny_dataset(seed=5)
    s = train(cfg, run_dir=run, resume=True, dataset=other)
    assert s["epochs"] == 2
    with pytest.raises(UserError, match="was trained on the in-memory dataset 'tiny'"):  # data.json now written
        (run / "summary.json").unlink()
        train(cfg, run_dir=run, resume=True, dataset=tiny_dataset())


def test_a_run_killed_by_sigterm_in_its_first_epoch_starts_again(tmp_path, monkeypatch, capsys):
    """A real SIGTERM (no Python cleanup: the lock file stays, so do config.yaml, data.json and tb/)."""
    import signal

    from conftest import make_image_folder

    folder, run = make_image_folder(tmp_path / "imgs"), tmp_path / "run"
    command = ["train", "quick", "--data", str(folder), "--out", str(run), *CLI_TINY]
    script = (
        "import os, signal, sys\n"
        "import cifarlab.train.engine as eng\n"
        "eng.Trainer.train_epoch = lambda self, epoch: os.kill(os.getpid(), signal.SIGTERM)\n"
        "from cifarlab.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    env = {**os.environ, "CIFARLAB_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-c", script, *command], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGTERM, p.stderr
    assert sorted(f.name for f in run.iterdir()) == [".lock", "config.yaml", "data.json", "tb"]
    monkeypatch.setenv("CIFARLAB_CACHE", str(tmp_path / "cache"))
    code, _, err = cli(capsys, *command)
    assert code == 0, err
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2] and not (run / ".lock").exists()
