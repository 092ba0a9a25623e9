"""airbench's lookahead: every k steps the weights are pulled to a slow exponential average of themselves.

Unlike an EMA kept on the side for evaluation, this one is written back into the model: with
decay d, slow <- d * slow + (1 - d) * fast, then fast <- slow. The decay follows
d(t) = decay * (t / total) ** power, so early training runs free (d ~ 0) and the end is averaged
strongly. BN running statistics are averaged too; integer buffers (num_batches_tracked) are not.
At the last step the model takes the slow weights (d = 1), as airbench does.
"""

from __future__ import annotations

import torch
from torch import nn


def lookahead_decay(step: int, total: int, decay: float, power: float) -> float:
    return decay * (step / max(total, 1)) ** power


class Lookahead:
    def __init__(self, model: nn.Module):
        self.live = [t for t in model.state_dict().values() if t.is_floating_point()]
        self.slow = [t.detach().clone() for t in self.live]

    @torch.no_grad()
    def update(self, decay: float) -> None:
        """slow <- decay * slow + (1 - decay) * live; live <- slow (in place: no host sync, no new tensors)."""
        torch._foreach_lerp_(self.slow, self.live, 1.0 - decay)
        torch._foreach_copy_(self.live, self.slow)

    def state_dict(self) -> dict:
        return {"slow": [t.clone() for t in self.slow]}

    def load_state_dict(self, state: dict) -> None:
        for s, t in zip(self.slow, state["slow"]):
            s.copy_(t)
