"""Step hooks: host-side work a run does around its optimizer steps (`train(cfg, hooks=[...])`).

A hook measures a run without being a second training loop: the BN study's probes, proxies and ICS
measure are hooks, so its runs get run folders, resume, TensorBoard and report sections like every
other run. The engine calls, in this order, for every step of every epoch:

    before_step(trainer, x, y)         before the forward; trainer.step is the 0-based index of this step
    after_backward(trainer)            the step's gradients are in the parameters' .grad (after clipping)
    after_step(trainer, x, y, loss)    after the optimizer (and lookahead) step; loss: the batch's mean
                                       loss, detached, still on the device
    end_epoch(trainer, record)         after the evaluation; keys the hook adds to `record` go to
                                       metrics.jsonl and TensorBoard like the engine's own

and state_dict() / load_state_dict(state) with last.pt, so a resumed run continues the hook where the
checkpoint left it (tensors, numbers, strings, lists and dicts only: checkpoints load weights_only).
Every method is optional. A hook that works on the host at some steps cannot sit inside a captured
CUDA graph: `why_not_graph` (a sentence, or None for a hook that is safe to capture) makes the run step
eagerly and say why.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


class StepHook:
    """The hook protocol with every method a no-op: subclass it and override what you need."""

    why_not_graph: str | None = "a step hook runs on the host"

    def before_step(self, trainer, x, y) -> None:
        pass

    def after_backward(self, trainer) -> None:
        pass

    def after_step(self, trainer, x, y, loss) -> None:
        pass

    def end_epoch(self, trainer, record: dict) -> None:
        pass

    def state_dict(self) -> Any:
        return None

    def load_state_dict(self, state: Any) -> None:
        pass


def check_hooks(hooks: Iterable | None) -> list:
    """The hooks as a list; anything that is not a StepHook is a programming error, caught at once."""
    hooks = list(hooks or ())
    for h in hooks:
        if not isinstance(h, StepHook):
            raise TypeError(f"train(hooks=...) takes StepHook instances, got {type(h).__name__}")
    return hooks


def why_not_graph(hooks: Sequence[StepHook]) -> str | None:
    """Why these hooks keep the step out of a CUDA graph, or None when they do not."""
    reasons = [h.why_not_graph for h in hooks if h.why_not_graph]
    return f"step hooks: {reasons[0]}" if reasons else None
