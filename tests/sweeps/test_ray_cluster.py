"""A sweep over a real two-node Ray cluster survives losing a node.

Two `ray start` nodes on this machine, as a user starts them on two: a head and a worker that
joins it with --address, each with its own ports, temp dir and one CPU. The sweep runs as the
`cifarlab sweep --engine ray --address` command with its run folders in one folder both nodes
see. Once the worker is two epochs into a run, every process of the worker node is killed at once
(a machine lost). Ray runs the lost task again on the head, which resumes it from last.pt; the
sweep ends with every run done exactly once. Between machines the lost attempt's lock on its run
folder may outlive it (an NFS lease): the retry waits for it."""

import csv
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_image_folder

from cifarlab.run import lock_folder
from cifarlab.sweeps.runner import wait_for_writer

EPOCHS = 12
RUN_SET = {
    "model.name": "plainnet",
    "model.args": {"stages": [8, 16]},
    "data.batch_size": 16,
    "data.device": "cpu",
    "optim.name": "adam",
    "train.epochs": EPOCHS,
    "train.progress": False,
    "train.log_tensorboard": False,
    "train.save_every": 1,  # ckpt_epochNNN.pt per epoch: their times show which epochs were not redone
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The cluster's own token for Ray's token authentication (what a user shares between machines),
# so that a ~/.ray/auth_token another Ray on this machine writes meanwhile changes nothing here.
TOKEN = secrets.token_hex(32)


def ray_env() -> dict:
    # RAY_ADDRESS would override --address: this cluster only, never a user's
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}


class Node:
    """One `ray start --block` in its own session; stop() kills it and every process under it
    (raylet, GCS, agents and the Ray workers, which run in sessions of their own) and nothing else."""

    def __init__(self, temp_dir: Path, *args: str):
        temp_dir.mkdir()
        self.log = temp_dir / "ray-start.log"
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--temp-dir", str(temp_dir)]
        cmd += ["--num-cpus", "1", "--object-store-memory", "100000000", "--disable-usage-stats", *args]
        env = ray_env()
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_started(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while "Ray runtime started" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start did not come up:\n{self.log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def procs(self) -> list:
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def pids(self) -> set[int]:
        return {p.pid for p in self.procs()}

    def stop(self) -> None:
        import psutil

        procs = self.procs()  # all of them first, then kill: a dead parent's children move to init
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=20)


def ports(**flags: int) -> list[str]:
    """Every port a node would otherwise take at a fixed default, free ones instead."""
    return [arg for flag, port in flags.items() for arg in (f"--{flag.replace('_', '-')}", str(port))]


@pytest.fixture
def cluster():
    """A head and a worker node; both are killed (only their processes) when the test ends."""
    pytest.importorskip("ray", reason="the two-node test needs Ray: pip install -e '.[ray]'")
    pytest.importorskip("psutil", reason="psutil (installed with ray[default]) finds the nodes' processes")
    root = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    nodes = []
    try:
        port = free_port()
        head_ports = ports(
            port=port,
            dashboard_port=free_port(),
            dashboard_agent_listen_port=free_port(),
            ray_client_server_port=free_port(),
        )
        nodes.append(Node(root / "h", "--head", "--include-dashboard", "false", *head_ports))
        nodes[0].wait_started()
        address = f"127.0.0.1:{port}"
        nodes.append(Node(root / "w", "--address", address, *ports(dashboard_agent_listen_port=free_port())))
        nodes[1].wait_started()
        yield address, *nodes
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def lock_holder(run_dir: Path) -> int | None:
    """The pid written in a run folder's lock (None while no one holds it)."""
    try:
        return int((run_dir / ".lock").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def wait_for(what: str, check, driver, log: Path, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        if driver.poll() is not None or time.monotonic() > deadline:
            why = "the sweep ended" if driver.poll() is not None else "timed out"
            pytest.fail(f"{why} before {what}; the sweep's output:\n{log.read_text()[-4000:]}")
        time.sleep(0.05)
    return found


@pytest.mark.slow
def test_sweep_finishes_every_run_once_when_a_node_is_lost(cluster, tmp_path):
    address, _, worker = cluster
    # 40 steps an epoch: the kill after epoch 2 lands well before a run can end, even on an idle machine
    images = make_image_folder(tmp_path / "images", n_train=640, n_test=8, size=32)
    sweep = tmp_path / "lost.yaml"
    doc = {"name": "lost", "set": RUN_SET, "axes": {"optim.lr": [0.01, 0.003, 0.001]}, "seeds": [0]}
    sweep.write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "shared" / "runs"  # the folder every node sees (NFS between machines)
    cmd = [sys.executable, "-m", "cifarlab", "sweep", str(sweep), "--engine", "ray", "--address", address]
    cmd += ["--out", str(out), "--data", str(images), "--gpus-per-trial", "0", "--cpus-per-trial", "1"]
    env = {**ray_env(), "CIFARLAB_CACHE": str(tmp_path / "cache")}
    log = tmp_path / "sweep.log"
    with open(log, "w") as f:
        driver = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    try:

        def two_epochs_in_on_the_worker():
            # a run whose lock is held by a process of the worker node (its Ray worker), with two
            # epochs checkpointed
            pids = worker.pids()
            for run_dir in sorted(out.glob("lr*")):
                if lock_holder(run_dir) in pids and (run_dir / "ckpt_epoch002.pt").exists():
                    return run_dir
            return None

        lost = wait_for("a run two epochs in on the worker node", two_epochs_in_on_the_worker, driver, log)
        worker.stop()  # the machine is gone: raylet, agents and the Ray worker training `lost`
        kept = {n: (lost / n).stat().st_mtime_ns for n in ("ckpt_epoch001.pt", "ckpt_epoch002.pt")}
        assert not (lost / "summary.json").exists()  # the kill landed mid-run
        driver.wait(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    text = log.read_text()
    assert driver.returncode == 0, text[-4000:]

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    ids = sorted(p.name for p in out.glob("lr*"))
    assert len(ids) == 3 and sorted(r["run_id"] for r in rows) == ids  # one row per (configuration, seed)
    assert {r["status"] for r in rows} == {"done"}
    for run_id in ids:
        assert len(re.findall(rf"^\[\d/3\]\s+{re.escape(run_id)}: best_test_acc", text, re.M)) == 1, text[-4000:]
        run_dir = out / run_id
        epochs = [json.loads(ln)["epoch"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert epochs == list(range(1, EPOCHS + 1)), run_id  # each epoch logged once, the lost run's too
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["epochs"] == EPOCHS and not (run_dir / "error.txt").exists()
    # the lost run finished on the head, resumed from its last checkpoint: epochs 1-2 were not redone
    assert {n: (lost / n).stat().st_mtime_ns for n in kept} == kept
    assert not worker.pids()


def test_retry_waits_for_the_lost_attempts_lock(tmp_path):
    run_dir = tmp_path / "run"
    assert wait_for_writer(run_dir, 30)  # no folder, no lock: nothing to wait for
    returned = threading.Event()
    with lock_folder(run_dir):  # the lost attempt (an NFS lock not yet freed) holds the folder
        assert not wait_for_writer(run_dir, 0)  # gives up once the wait is over
        waiter = threading.Thread(target=lambda: wait_for_writer(run_dir, 60) and returned.set())
        waiter.start()
        assert not returned.wait(1.5)  # still held: still waiting
    waiter.join(30)
    assert returned.is_set()  # freed: the retry goes on
