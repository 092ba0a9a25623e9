"""Run a sweep: every run in OUT/<run_id>/, one after another here ("local") or as Ray tasks
spread over the GPUs and machines of a Ray cluster ("ray").

A sweep is safe to kill and start again: runs with a summary.json are skipped, a run with last.pt
but no summary resumes from it, and a run that fails leaves error.txt and does not stop the others.
On a Ray cluster a run lost with its node is run again on another node, resuming from the last.pt
in the shared OUT (tests/sweeps/test_ray_cluster.py kills a node mid-sweep).
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from ..config import check_same_run, save_config
from ..data import load_dataset
from ..errors import UserError
from ..run import LOCK_NAME, atomic_write_json, atomic_write_text, make_folder, read_jsonl
from ..train.pool import default_parallel, quiet, run_all
from .grid import RunSpec, SweepConfig, expand
from .results import run_status, summary_corrupt, tabulate
from .stats import FINISHED

# Files of a run that travel back to the driver when a Ray worker cannot write to OUT itself
# (no shared file system). Checkpoints stay on the worker: share OUT (NFS, ...) to keep them.
SMALL_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "error.txt")

# A Ray task lost with its node (machine gone, raylet or worker killed) runs again on another node,
# where train(resume="auto") continues from last.pt. A run's own errors are results (execute never
# raises), so only such system failures are retried; a run lost once more is recorded as failed.
NODE_RETRIES = 3
# How long a retried run waits for its lost attempt's lock on the run folder. The kernel frees an
# flock when its process dies; an NFS server frees a lost client's lock when the client's lease
# runs out (NFSv4: 90 s by default).
LOCK_WAIT_SECONDS = 180


# Keys that may differ between a finished run and the sweep without making it another experiment.
def default_out(sweep: SweepConfig) -> Path:
    return Path("runs") / sweep.name


def run_sweep(
    sweep: SweepConfig,
    out_dir: str | Path | None = None,
    engine: str = "local",
    *,
    gpus_per_trial: float = 1.0,
    cpus_per_trial: int = 1,
    address: str | None = None,
    data: Any = None,
    max_concurrent: int | None = None,
    parallel: int | None = None,
) -> list[dict]:
    """Run every missing run of the sweep; returns the per-run rows of results.csv.

    data: None (each run's data.source), a source string for every run, or a loaded Dataset.
    parallel: runs at once with the local engine, each in its own process (None: as the machine
    allows, pool.default_parallel; 1: one after another in this process).
    """
    if engine not in ("local", "ray"):
        raise UserError(f"unknown sweep engine '{engine}'; choose local or ray")
    out = Path(out_dir) if out_dir else default_out(sweep)
    specs = expand(sweep)
    if isinstance(data, str):
        specs = [_with_source(s, data) for s in specs]
    make_folder(out)
    save_config(sweep, out / "sweep.yaml")
    todo = [s for s in specs if _prepare(s, out)]
    print(
        f"sweep {sweep.name}: {len(specs)} runs in {out}; {len(specs) - len(todo)} already finished, "
        f"{len(todo)} to run",
        flush=True,
    )
    if todo:
        # each data source is read once, here; missing data would fail every run alike, so its
        # UserError stops the sweep before any run starts
        given = data is not None and not isinstance(data, str)
        datasets = {k: data if given else load_dataset(*k) for k in dict.fromkeys(map(_data_key, todo))}
        if engine == "local":
            n = parallel or default_parallel(todo[0].config.data.device)
            _run_local(todo, out, datasets, n)
        else:
            _run_ray(todo, out, datasets, gpus_per_trial, cpus_per_trial, address, max_concurrent)
    return tabulate(out)


class SweepFailed(UserError):
    """Some runs of a sweep failed; the others finished and the tables were written. `rows` holds them all."""

    def __init__(self, message: str, rows: list[dict]):
        super().__init__(message)
        self.rows = rows


def check_failed(rows: list[dict], out_dir: str | Path) -> None:
    """Raise SweepFailed naming how many runs failed and where their error.txt is."""
    failed = [r["run_id"] for r in rows if r["status"] == "failed"]
    if failed:
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        where = f"{Path(out_dir) / failed[0] / 'error.txt'}{more}"
        raise SweepFailed(
            f"{len(failed)} of {len(rows)} runs failed; see {where}; "
            "fix it and run the same command again (finished runs are skipped)",
            rows,
        )


def _data_key(spec: RunSpec) -> tuple[str, str | None]:
    return spec.config.data.source, spec.config.data.cache_dir or None


def _with_source(spec: RunSpec, source: str) -> RunSpec:
    cfg = dataclasses.replace(spec.config, data=dataclasses.replace(spec.config.data, source=source))
    return dataclasses.replace(spec, config=cfg)


def _prepare(spec: RunSpec, out: Path) -> bool:
    """Make the run folder ready; False if the run is already finished."""
    run_dir = out / spec.run_id
    status, resumable = run_status(run_dir), (run_dir / "last.pt").is_file()
    if status in FINISHED or resumable:
        check_same_run(run_dir, spec.config)
    if status in FINISHED:
        return False
    if summary_corrupt(run_dir):  # kept aside, not deleted: the run trains (or resumes) again
        os.replace(run_dir / "summary.json", run_dir / "summary.json.corrupt")
        print(
            f"  {spec.run_id}: summary.json is unreadable (kept as summary.json.corrupt); running it again", flush=True
        )
    spec.config.out = str(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        run_dir / "run.json",
        {
            "run_id": spec.run_id,
            "config_id": spec.config_id,
            "axes": spec.axes,
            "values": spec.values,
            "seed": spec.seed,
            "index": spec.index,
        },
    )
    (run_dir / "error.txt").unlink(missing_ok=True)  # a failed run is tried again
    if not resumable:  # start clean (a kill before the first last.pt may leave a metrics line)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        shutil.rmtree(run_dir / "tb", ignore_errors=True)
    return True


# ---------------------------------------------------------------- one run


def execute(cfg, run_dir: Path, dataset=None) -> dict:
    """Train one run in run_dir (resume="auto": continue from last.pt if there is one). A failure is
    recorded in error.txt and returned, never raised: one bad configuration must not stop a sweep.
    KeyboardInterrupt does stop it, leaving last.pt for the next start."""
    from ..train.engine import train

    t0 = time.perf_counter()
    try:
        summary = train(cfg, run_dir=run_dir, resume="auto", dataset=dataset)
        return {"status": "done", "summary": summary, "wall_seconds": time.perf_counter() - t0}
    except KeyboardInterrupt:
        raise
    except UserError as e:
        error, text = str(e), f"{e}\n"
    except Exception as e:  # a crash inside one run (a bug, out of memory) is that run's result
        error, text = f"{type(e).__name__}: {e}", traceback.format_exc()
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "error.txt", text)
    return {
        "status": "failed",
        "error": error.splitlines()[0] if error else "failed",
        "wall_seconds": time.perf_counter() - t0,
    }


def _done_line(spec: RunSpec, result: dict) -> str:
    if result["status"] != "done":
        return f"  {spec.run_id}: FAILED ({result['error']})"
    s = result["summary"]
    accs = "  ".join(
        f"{k} {s[k]:.4f}" for k in ("best_test_acc", "best_val_acc", "final_test_acc") if isinstance(s.get(k), float)
    )
    tail = "  DIVERGED (a non-finite loss)" if s.get("diverged") else ""
    return f"  {spec.run_id}: {accs}  ({s.get('train_seconds', 0):.0f}s training){tail}"


# ---------------------------------------------------------------- local engine


def _run_local(todo: list[RunSpec], out: Path, datasets: dict, parallel: int) -> None:
    if parallel <= 1:
        for i, spec in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {spec.run_id}", flush=True)
            result = execute(spec.config, out / spec.run_id, datasets[_data_key(spec)])
            print(_done_line(spec, result), flush=True)
        return
    print(f"{min(parallel, len(todo))} runs at a time, each in its own process", flush=True)
    jobs = [(quiet(spec.config), out / spec.run_id, _data_key(spec)) for spec in todo]
    for done, (i, result) in enumerate(run_all(_pool_trial, jobs, parallel, datasets), 1):
        print(f"[{done}/{len(todo)}]" + _done_line(todo[i], result), flush=True)


def _pool_trial(datasets: dict, cfg, run_dir: Path, key) -> dict:
    return execute(cfg, run_dir, datasets[key])


# ---------------------------------------------------------------- Ray engine


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("the ray engine needs Ray: pip install cifarlab[ray]") from None
    return ray


def ray_trial(cfg, run_dir: str, dataset, threads: int) -> dict:
    """A Ray task: train one run on whatever GPU Ray gave this worker (CUDA_VISIBLE_DEVICES)."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    cfg = quiet(cfg)
    target = Path(run_dir)
    try:
        target.mkdir(parents=True, exist_ok=True)
        local = target
    except OSError:  # OUT is not on this machine: train in a scratch folder, send the results back
        local = Path(tempfile.mkdtemp(prefix="cifarlab-run-"))
    else:
        wait_for_writer(local, LOCK_WAIT_SECONDS)
    result = execute(cfg, local, dataset)
    result["files"] = {n: (local / n).read_text() for n in SMALL_FILES if (local / n).is_file()}
    result["host"] = os.uname().nodename
    return result


def wait_for_writer(run_dir: Path, seconds: float) -> bool:
    """Wait (at most `seconds`) until no process holds run_dir's lock; False if one still does.
    The holder is an attempt of this run on a node Ray has given up on; past the wait, train()
    refuses the folder and the run is recorded as failed (the next start of the sweep resumes it)."""
    deadline, said = time.monotonic() + seconds, False
    while True:
        try:
            fd = os.open(run_dir / LOCK_NAME, os.O_RDWR)  # write access: NFS locks need it
        except OSError:  # no lock (or none we may open): train() decides
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True  # free; closing the file lets train() take it
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                return False
        finally:
            os.close(fd)
        if not said:
            print(f"{run_dir.name}: waiting up to {seconds:.0f} s for the holder of {run_dir / LOCK_NAME}", flush=True)
            said = True
        time.sleep(1.0)


def _run_ray(
    todo: list[RunSpec],
    out: Path,
    datasets: dict,
    gpus: float,
    cpus: int,
    address: str | None,
    max_concurrent: int | None,
) -> None:
    import torch

    ray = _import_ray()
    started = not ray.is_initialized()  # a Ray the caller started is the caller's to stop
    if started and address:
        ray.init(address=address)
    elif started:
        if gpus > torch.cuda.device_count():  # say so before paying for Ray's start
            raise UserError(
                f"each trial asks for {gpus:g} GPU but this machine has {torch.cuda.device_count()}; "
                "pass --gpus-per-trial 0 to train on CPUs"
            )
        ray.init(num_cpus=os.cpu_count(), num_gpus=torch.cuda.device_count(), include_dashboard=False)
    try:
        have = ray.cluster_resources()
        if gpus > have.get("GPU", 0):
            raise UserError(
                f"each trial asks for {gpus:g} GPU but the Ray cluster has {have.get('GPU', 0):g}; "
                "pass --gpus-per-trial 0 to train on CPUs"
            )
        if cpus > have.get("CPU", 0):
            raise UserError(f"each trial asks for {cpus} CPUs but the Ray cluster has {have.get('CPU', 0):g}")
        _drive(ray, todo, out, datasets, gpus, cpus, max_concurrent or len(todo))
    finally:
        if started:
            ray.shutdown()


def _drive(ray, todo: list[RunSpec], out: Path, datasets: dict, gpus: float, cpus: int, limit: int) -> None:
    """Keep up to `limit` trials in flight; print a line per finished epoch (read from each run's
    metrics.jsonl, when OUT is shared with the workers) and per finished run."""
    task = ray.remote(num_gpus=gpus, num_cpus=cpus, max_retries=NODE_RETRIES, retry_exceptions=False)(ray_trial)
    # in the object store: each machine receives a dataset once, and workers need no data files
    refs = {key: ray.put(ds) for key, ds in datasets.items()}
    queue, running, seen, done = list(todo), {}, {}, 0
    try:
        while queue or running:
            while queue and len(running) < limit:
                spec = queue.pop(0)
                run_dir = out / spec.run_id
                ref = task.remote(spec.config, str(run_dir.resolve()), refs[_data_key(spec)], cpus)
                running[ref] = spec
                seen[spec.run_id] = len(read_jsonl(run_dir / "metrics.jsonl"))  # a resumed run's old epochs
            ready, _ = ray.wait(list(running), num_returns=1, timeout=2.0)
            for ref in ready:
                spec = running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:  # the worker died (out of memory, node lost)
                    msg = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
                    atomic_write_text(out / spec.run_id / "error.txt", f"{type(e).__name__}: {e}\n")
                    result = {"status": "failed", "error": msg}
                _bring_back(out / spec.run_id, result.get("files", {}))
                _progress(out / spec.run_id, spec, seen.pop(spec.run_id, 0))  # epochs not shown yet
                done += 1
                print(f"[{done}/{len(todo)}]" + _done_line(spec, result), flush=True)
            for spec in running.values():
                seen[spec.run_id] = _progress(out / spec.run_id, spec, seen.get(spec.run_id, 0))
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref, force=True)
        raise


def _progress(run_dir: Path, spec: RunSpec, shown: int) -> int:
    try:
        recs = read_jsonl(run_dir / "metrics.jsonl")
    except ValueError:  # caught the engine mid-line: try again on the next poll
        return shown
    for r in recs[shown:]:
        acc = r.get("test_acc", r.get("val_acc"))
        tail = f"  eval acc {acc:.4f}" if isinstance(acc, float) else ""
        print(
            f"  {spec.run_id}: epoch {r['epoch']}/{spec.config.train.epochs}  "
            f"train loss {r.get('train_loss', float('nan')):.4f}{tail}",
            flush=True,
        )
    return max(shown, len(recs))


def _bring_back(run_dir: Path, files: dict[str, str]) -> None:
    """Write the files a remote worker sent unless the shared OUT already has them."""
    for name, text in files.items():
        if not (run_dir / name).is_file():
            atomic_write_text(run_dir / name, text)


def describe(specs: list[RunSpec]) -> str:
    """The runs of a sweep, one line each (for --dry-run)."""
    return "\n".join(f"{s.run_id}  " + json.dumps(s.values, default=str) for s in specs)
