"""The engine's hooks for the fast-training methods (airbench and its descendants).

- `setup_whitening`: patch-whitening init of the first layer, before the optimizer is built;
- `StepHooks`: per-step work - drop the whitening bias's gradient once its epochs are over,
  airbench's lookahead every k steps;
- `warm_up`: compile (and cuDNN autotuning) on real batches before the clock starts, then put
  weights, buffers, optimizer state and random state back, so the run is the one it would have been;
- `stopwatch`: device time of a stretch of work (CUDA events on a GPU).
"""

from __future__ import annotations

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


class StepHooks:
    """What the engine calls around each optimizer step for the fast methods (cheap no-ops when off)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, total_steps: int, whiten_layer: nn.Conv2d | None):
        self.cfg, self.total = cfg, total_steps
        self.whiten_bias = whiten_layer.bias if whiten_layer is not None and cfg.whiten_bias_epochs >= 0 else None
        self.lookahead = Lookahead(model) if cfg.lookahead_every > 0 else None

    def bias_frozen(self, epoch: int) -> bool:
        """Whether the whitening layer's bias is frozen in this epoch (its whiten_bias_epochs are over)."""
        return self.whiten_bias is not None and epoch >= self.cfg.whiten_bias_epochs

    def before_step(self, epoch: int) -> None:
        # A frozen bias gets no gradient, so no step, momentum or decay: what airbench's
        # requires_grad=False does, without changing the graph (no recompilation under torch.compile).
        if self.bias_frozen(epoch):
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


def warm_up(
    step_model: nn.Module,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batch,
    loss_fn: Callable,
    amp_ctx,
    device: torch.device,
    *,
    compile: bool,
    steps: int = 3,
) -> float:
    """Run `steps` training steps on `batch` (compiling, autotuning, recording CUDA graphs), then
    restore the model, optimizer and RNG state. Returns the seconds it took."""
    from ..data import mixed_loss

    stop = stopwatch(device)
    if compile and hasattr(opt, "compile_step"):  # Muon's Newton-Schulz iteration
        opt.compile_step()
    weights = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(opt.state_dict())
    x, y = batch
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        model.train()
        for _ in range(steps):
            with amp_ctx:
                loss = mixed_loss(loss_fn, step_model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    opt.zero_grad(set_to_none=True)
    model.load_state_dict(weights)  # in place: parameter storage (and CUDA-graph addresses) unchanged
    opt.load_state_dict(opt_state)
    return stop()
