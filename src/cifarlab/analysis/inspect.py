"""Run an analysis of a checkpoint: `inspect(checkpoint, analysis, out=None, **options)`.

The one entry point of `cifarlab inspect` (cli/inspect.py parses, then calls it) and of pj2's
analyses. It loads the checkpoint once (with its data and normalization), runs one analysis (or
`all`), writes OUT/result.json last and returns the result dict of the analysis modules
(run_filters, run_landscape, ...). The analyses and their options are analysis/registry.py's.

    from cifarlab.analysis.inspect import inspect
    res = inspect("runs/best_model", "landscape", grid="-1:1:21", n=2000)
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from cifarlab.errors import UserError

from . import registry

SPLITS = ("train", "test")


def inspect(
    checkpoint: str | Path, analysis: str, out: str | Path | None = None, echo: bool = False, **options
) -> dict:
    """Run `analysis` (a registered one, or `all`) of a checkpoint file or a run folder (its best.pt).

    Output: `out`, else RUN_DIR/analysis/<analysis>/ for a run folder, CKPT_DIR/analysis-<stem>/<analysis>/
    for a .pt file; each folder gets its figures, arrays and result.json. `all` runs the analyses
    registered for it (the landscape coarse, in landscape-coarse/) into subfolders of `out` and returns
    {analysis: result}. options are the registered options by name (registry.declared()); each analysis
    takes its own and its defaults for the rest. echo prints a line per analysis (and a note, e.g. on
    diverged grid points, to stderr), as the command does.
    """
    from cifarlab.run import atomic_write_json

    todo = plan(analysis, options)
    common = registry.Common(**{k: v for k, v in options.items() if k in ("data", "device")})
    # torch scripts its forward-mode decompositions on the first Hessian-vector product and warns that
    # torch.jit.script is deprecated: torch's own business, not the user's.
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated")
    s = Session(checkpoint, common.device, common.data)
    coarse = analysis == "all"
    results = {}
    for a, opts, folder in todo:
        if out:
            where = Path(out) / folder if coarse else Path(out)
        else:
            where = default_out(s.path, checkpoint, folder)
        res = a.run(s, opts, where)
        atomic_write_json(where / "result.json", {"analysis": a.name, "checkpoint": str(s.path), **res})
        results[a.name] = res
        if echo:
            print(f"{a.name}: {a.describe(res, s.classes)} -> {where}", flush=True)
            note = a.note(res) if a.note else None
            if note:
                print(f"cifarlab: note: {note}", file=sys.stderr)
    return results if coarse else results[analysis]


def plan(analysis: str, options: dict) -> list[tuple[registry.Analysis, object, str]]:
    """(analysis, its options, its folder) for each analysis to run; bad names and options raise here,
    before anything is loaded."""
    if analysis != "all" and registry.get(analysis) is None:
        raise UserError(f"unknown analysis {analysis!r}; choose from: {', '.join((*registry.names(), 'all'))}")
    known = registry.declared()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise UserError(f"unknown inspect option {unknown[0]!r}; choose from: {', '.join(known)}")
    if options.get("batch_size", 1) < 1:
        raise UserError(f"--batch-size must be at least 1, got {options['batch_size']}")
    coarse = analysis == "all"
    todo = []
    for a in registry.in_all() if coarse else [registry.get(analysis)]:
        opts = a.make_options(options, coarse)
        if a.check:
            a.check(opts, coarse)
        todo.append((a, opts, a.folder(coarse)))
    return todo


def default_out(ckpt_path: Path, given: str | Path, analysis: str) -> Path:
    """RUN_DIR/analysis/<analysis> for a run folder, CKPT_DIR/analysis-<stem>/<analysis> for a file."""
    p = Path(given)
    return p / "analysis" / analysis if p.is_dir() else ckpt_path.parent / f"analysis-{ckpt_path.stem}" / analysis


class Session:
    """A loaded checkpoint with its data and normalization, shared by the analyses of one call."""

    def __init__(self, checkpoint: str | Path, device: str = "auto", data: str | None = None):
        from cifarlab.train.checkpoint import checkpoint_path, checkpoint_stats, load_model
        from cifarlab.train.device import pick_device

        self.data = data
        self.path = checkpoint_path(checkpoint)
        self.device = pick_device(device)
        self.model, self.ckpt = load_model(self.path, self.device)
        self.classes = list(self.ckpt.get("classes") or [])
        self.channels = int(self.ckpt.get("model_options", {}).get("in_channels") or 3)
        self.mean, self.std = checkpoint_stats(self.ckpt, self.channels)
        self._ds = None

    @property
    def ds(self):
        if self._ds is None:
            from cifarlab.train.checkpoint import checkpoint_data
            from cifarlab.train.engine import check_image_size

            ds = checkpoint_data(self.ckpt, self.data)
            name = self.ckpt.get("model_name", "of this checkpoint")
            check_image_size(self.model, ds.image_shape, name, ds.origin or ds.name, self.ckpt.get("image_shape"))
            self._ds = ds
        return self._ds

    def inputs(self, images):
        from .plotting import to_input

        return to_input(images, self.mean, self.std, self.device)

    def test(self, n: int | None = None):
        if n is not None and n < 1:
            raise UserError(f"--n-images must be at least 1, got {n}")
        x, y = self.ds.test_x, self.ds.test_y
        return self.inputs(x[:n] if n else x), (y[:n] if n else y).to(self.device)

    def images(self, split: str, n: int, seed: int | None = None):
        """(x, y, info): n images of the split, no augmentation; all of them if it has fewer.

        Without a seed the first n (a fixed subset, as before seeds existed); with one, n drawn at
        random without replacement by numpy's default_rng(seed), sorted. The first m < n drawn with a
        seed are a subset of the n, so --hessian-n images come from the landscape's own. info (for
        the JSON) has split, seed, n_images and the indices (None: the first n_images).
        """
        import numpy as np
        import torch

        if split not in SPLITS:
            raise UserError(f"unknown --split {split!r}; use {' or '.join(SPLITS)}")
        if n < 1:
            raise UserError(f"--n must be at least 1, got {n}")
        if split == "train" and self.ds.test_only:
            raise UserError(f"{self.ds.name} is test-only data (no training images): pass --split test")
        x, y = (self.ds.train_x, self.ds.train_y) if split == "train" else (self.ds.test_x, self.ds.test_y)
        idx = None
        if seed is None:
            x, y = x[:n], y[:n]
        else:
            idx = np.sort(np.random.default_rng(seed).permutation(len(y))[:n])
            x, y = x[torch.from_numpy(idx)], y[torch.from_numpy(idx)]
        info = {
            "split": split,
            "seed": seed,
            "n_images": int(len(y)),
            "subset": "first n_images" if idx is None else "random without replacement",
            "indices": None if idx is None else idx.tolist(),
        }
        return self.inputs(x), y.to(self.device), info

    def learning_rate(self) -> float:
        """The run's (initial) learning rate, optim.lr of its config; 1 when the checkpoint does not say."""
        return float(self.ckpt.get("config", {}).get("optim", {}).get("lr") or 1.0)

    def loss_fn(self):
        from cifarlab.train.losses import make_loss

        name = self.ckpt.get("config", {}).get("train", {}).get("loss", "ce")
        return make_loss(name, 0.0, len(self.classes) or 10)  # no label smoothing: the plain loss
