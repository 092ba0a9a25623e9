"""The engine's per-step work for the fast-training methods (airbench and its descendants).

- `setup_whitening`: patch-whitening init of the first layer, before the optimizer is built;
- `RecipeSteps`: per-step work - drop the whitening bias's gradient once its epochs are over,
  airbench's lookahead every k steps;
- `warm_up`: compile (and cuDNN autotuning) on real batches before the clock starts, then put
  weights, buffers, optimizer state and random state back (`undone`, also what the capture of the
  step uses), so the run is the one it would have been;
- `stopwatch`: device time of a stretch of work (CUDA events on a GPU).
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..config import TrainConfig
from .lookahead import Lookahead, lookahead_decay
from .whiten import find_whiten_layer, init_whitening, normalized_images


def stopwatch(device: torch.device) -> Callable[[], float]:
    """Start timing now; the returned function gives the seconds since (waiting for the GPU to finish)."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()

        def stop() -> float:
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000

        return stop
    t0 = time.perf_counter()
    return lambda: time.perf_counter() - t0


def setup_whitening(model: nn.Module, cfg: TrainConfig, train_x: torch.Tensor, mean: Sequence[float],
                    std: Sequence[float], device: torch.device) -> nn.Conv2d:  # fmt: skip
    """Whiten the first layer from the first `whiten_images` training images; returns the layer."""
    layer = find_whiten_layer(model)
    images = normalized_images(train_x[: max(cfg.whiten_images, 1)], mean, std, device)
    init_whitening(layer, images, cfg.whiten_eps)
    return layer


class RecipeSteps:
    """What the step calls for the fast methods (cheap no-ops when off).

    The step body (Trainer.step_body: eager, captured and warm-up alike) calls `before_step(phase)`
    between backward and the optimizer step: device work only, decided by `phase(epoch)`, which keys
    the captured graphs (one per phase). The host calls `after_step(step)` after every step."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, total_steps: int, whiten_layer: nn.Conv2d | None):
        self.cfg, self.total = cfg, total_steps
        self.whiten_bias = whiten_layer.bias if whiten_layer is not None and cfg.whiten_bias_epochs >= 0 else None
        self.lookahead = Lookahead(model) if cfg.lookahead_every > 0 else None

    def bias_frozen(self, epoch: int) -> bool:
        """Whether the whitening layer's bias is frozen in this epoch (its whiten_bias_epochs are over)."""
        return self.whiten_bias is not None and epoch >= self.cfg.whiten_bias_epochs

    def phase(self, epoch: int) -> bool:
        """What makes one epoch's step differ from another's: here whether the bias is frozen."""
        return self.bias_frozen(epoch)

    def before_step(self, phase: bool) -> None:
        # A frozen bias gets no gradient, so no step, momentum or decay: what airbench's
        # requires_grad=False does, without changing the graph (no recompilation under torch.compile).
        if phase:
            self.whiten_bias.grad = None

    def after_step(self, step: int) -> None:
        """step: optimizer steps taken so far in the run (1-based)."""
        la = self.lookahead
        if la is None:
            return
        if step % self.cfg.lookahead_every == 0:
            la.update(lookahead_decay(step, self.total, self.cfg.lookahead_decay, self.cfg.lookahead_power))
        if step == self.total:
            la.update(1.0)  # end on the slow weights

    def state_dict(self) -> dict | None:
        return self.lookahead.state_dict() if self.lookahead is not None else None

    def load_state_dict(self, state: dict | None) -> None:
        if self.lookahead is not None and state is not None:
            self.lookahead.load_state_dict(state)


@contextlib.contextmanager
def undone(t):
    """Steps of the Trainer `t` run within are undone on leaving: weights, buffers, optimizer state,
    EMA, gradient scaler, the running sums and the random state are put back as they were, tensors in
    place (a captured graph keeps these very tensors); optimizer state the steps created is dropped."""
    if t.loss_sum is None:
        t.zero_sums()
    tensors = list(t.model.state_dict(keep_vars=True).values()) + [t.loss_sum, t.correct]
    if t.ema is not None:
        tensors += list(t.ema.state_dict(keep_vars=True).values())
    saved = [x.detach().clone() for x in tensors]
    opt_state = {p: {k: (v, _copy(v)) for k, v in s.items()} for p, s in t.opt.state.items()}
    scaler = copy.deepcopy(t.scaler.state_dict())
    devices = []
    if t.device.type == "cuda":
        devices = [t.device.index if t.device.index is not None else torch.cuda.current_device()]
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        with torch.no_grad():
            for x, s in zip(tensors, saved):
                x.copy_(s)
            for p in [p for p in t.opt.state if p not in opt_state]:
                del t.opt.state[p]
            for p, items in opt_state.items():
                t.opt.state[p] = {k: obj.copy_(s) if torch.is_tensor(obj) else s for k, (obj, s) in items.items()}
        if scaler:  # {} when disabled (no fp16)
            t.scaler.load_state_dict(scaler)
        t.opt.zero_grad(set_to_none=True)


def _copy(v):
    return v.detach().clone() if torch.is_tensor(v) else copy.deepcopy(v)


def warm_up(t, batch: tuple, steps: int = 3) -> float:
    """Run `steps` training steps of the Trainer `t` on `batch` (compiling, autotuning), then undo
    them (`undone`): the run is the one it would have been. Returns the seconds it took."""
    stop = stopwatch(t.device)
    if t.cfg.train.compile and hasattr(t.opt, "compile_step"):  # Muon's Newton-Schulz iteration
        t.opt.compile_step()
    t.model.train()
    with undone(t):
        for _ in range(steps):
            t.step_body(*batch, phase=t.recipe.phase(t.epoch + 1))
    return stop()
