"""The captured training step (train.graph): forward, loss, backward, clipping, the optimizer step with
its learning rates as a device tensor, the EMA and the epoch's running sums, recorded once as a CUDA
graph and replayed for every full batch.

A ResNet-18 step at batch 128 launches some 320 kernels; eagerly the host needs ~12 ms to launch what
the GPU runs in ~3 ms. A replay is one launch. What stays eager, outside the graph: the augmentation
(the loader's), the schedule (a host scheduler whose lrs are copied into the device tensor only when
they change), lookahead every k steps, the optimizer's host part (SLBI's solution path:
GroupSteps.after_step), and the last, smaller batch of an epoch (the same body, run uncaptured).
Each phase of the recipe's per-step work (RecipeSteps.phase: whether the whitening bias is frozen) gets a graph of
its own (the body differs), captured before the clock starts like the first.

The body is Trainer.step_body, the eager step's own, given the groups' learning rates as a device
tensor (tensor_lr.lrs_from). `why_not` names what cannot be captured (fp16's scaler checks on the host,
DDP, torch.compile, OneCycle's per-step momentum, mixed targets, an optimizer class without
`tensor_lr`); the run then says so in one line and steps eagerly. On CPU, train.graph=on runs the
body uncaptured with the tensor lrs: the test of the step (tests/train/test_graph.py) compares it with
Trainer.train_step.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from ..config import Config
from .device import uncached
from .fast import undone
from .optim import OPTIMIZERS, tensor_lr_names


def why_not(cfg: Config, distributed: bool) -> str | None:
    """Why this run's step cannot be captured, or None when it can."""
    t, name = cfg.train, cfg.optim.name.lower()
    if not getattr(OPTIMIZERS[name].cls, "tensor_lr", False):
        return f"optimizer {name} has no tensor-lr step (graphed: {', '.join(tensor_lr_names())})"
    if t.amp == "fp16":
        return "fp16's gradient scaler checks for overflow on the host (use train.amp=bf16)"
    if distributed:
        return "DDP's gradient buckets are launched from the host (torchrun)"
    if t.compile:
        return "train.compile builds its own graphs"
    if cfg.schedule.name.lower() == "onecycle":
        return "the onecycle schedule changes momentum every step"
    if cfg.augment.cutmix > 0 or cfg.augment.mixup > 0:
        return "cutmix/mixup draw their mixing on the host"
    return None


class StepGraph:
    """The training step of a Trainer as one replayable graph per whitening phase (see the module doc)."""

    def __init__(self, trainer, capture: bool):
        self.t, self.capture = trainer, capture
        self.opt = trainer.opt
        self.opt.init_state()
        self.opt._opt_called = True  # the scheduler's check that opt.step ran first: a replay is that step
        self.lrs = torch.tensor([g["lr"] for g in self.opt.param_groups], device=trainer.device)
        self._host_lrs = [g["lr"] for g in self.opt.param_groups]
        self.graphs: dict[bool, torch.cuda.CUDAGraph] = {}
        self._keep: list = []  # the graphs' static tensors (inputs, gradients): they must outlive the graphs
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None
        self.eval_graphs: dict[int, EvalGraph] = {}

    def eval_model(self, model: nn.Module) -> EvalGraph:
        """The graphed evaluation forward of `model` (the model or its EMA), made once per model."""
        if id(model) not in self.eval_graphs:
            self.eval_graphs[id(model)] = EvalGraph(model, self.t.amp_ctx, self.capture)
        return self.eval_graphs[id(model)]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One optimizer step, as Trainer.train_step."""
        t = self.t
        self._set_lrs()
        phase = t.recipe.phase(t.epoch)
        graph = self.graphs.get(phase) if self.x is not None and x.shape == self.x.shape else None
        if graph is not None:
            self.x.copy_(x)
            self.y.copy_(y)
            graph.replay()
        else:  # no graph for this phase, or the epoch's last, smaller batch
            t.step_body(x, y, phase=phase, lrs=self.lrs)
        if hasattr(self.opt, "after_step"):  # the host's part of the optimizer step (SLBI's path)
            self.opt.after_step()
        t.end_step()

    def _set_lrs(self) -> None:
        # One small fill per group, and only when the schedule moved it: most steps of a constant
        # schedule launch nothing here.
        for i, g in enumerate(self.opt.param_groups):
            if g["lr"] != self._host_lrs[i]:
                self.lrs[i].fill_(g["lr"])
                self._host_lrs[i] = g["lr"]

    def capture_phases(self, batch: tuple[torch.Tensor, torch.Tensor], epochs: range) -> float:
        """Capture a graph for each phase (RecipeSteps.phase) the epochs will see; returns the seconds it took.
        The warm-up steps it needs are undone: the run is the one it would have been."""
        if not self.capture:
            return 0.0
        start = time.perf_counter()
        x, y = batch
        self.x, self.y = x.clone(), y.clone()
        for phase in sorted({self.t.recipe.phase(e) for e in epochs}):
            self.graphs[phase] = self._capture(phase)
        torch.cuda.synchronize(self.t.device)
        return time.perf_counter() - start

    def _capture(self, phase) -> torch.cuda.CUDAGraph:
        t, dev = self.t, self.t.device
        main, side = torch.cuda.current_stream(dev), torch.cuda.Stream(dev)
        with undone(t):  # also when a step fails: the eager fallback starts from the run's own state
            side.wait_stream(main)  # after undone's snapshot
            try:
                with torch.cuda.stream(side):  # cuDNN/cuBLAS choose and allocate here, not during capture
                    for _ in range(3):
                        t.step_body(self.x, self.y, phase=phase, lrs=self.lrs)
            finally:
                main.wait_stream(side)  # before undone puts the state back
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # records, runs nothing: the state is left as it is
            t.step_body(self.x, self.y, phase=phase, lrs=self.lrs)
        self._keep.append([p.grad for p in t.model.parameters()])
        return graph


class EvalGraph:
    """A model's evaluation forward as one CUDA graph per batch shape (the full batch and the last);
    a replay reads the weights and BN statistics where they are, so it follows the training. Stands in
    for the model in engine.predict (eval() and calls); a capture that fails says so once and the
    forward runs eagerly from then on."""

    def __init__(self, model: nn.Module, amp, capture: bool):
        self.model, self.capture = model, capture
        self.amp = uncached(amp)
        self.graphs: dict[tuple, tuple] = {}

    def eval(self) -> EvalGraph:
        self.model.eval()
        return self

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.capture:
            return self.model(x)
        key = (tuple(x.shape), x.stride(), x.dtype)
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(x)
            except RuntimeError as e:
                self.capture = False
                print(f"note: train.graph: evaluation not captured ({str(e).splitlines()[0]}); eager", flush=True)
                return self.model(x)
        graph, static_x, static_out = self.graphs[key]
        static_x.copy_(x)
        graph.replay()
        return static_out.clone()  # the next replay writes over static_out

    def _capture(self, x: torch.Tensor) -> tuple:
        static_x = x.clone()
        dev = x.device
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), self.amp:  # cuDNN's choices and lazy allocations, outside the graph
            self.model(static_x)
        torch.cuda.current_stream(dev).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph), self.amp:
            static_out = self.model(static_x)
        return graph, static_x, static_out
