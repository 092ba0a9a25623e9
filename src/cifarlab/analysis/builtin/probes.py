"""`inspect RUN probes`: Santurkar et al.'s probes at a checkpoint (analysis/bn_probe.py).

Its probes.png takes the BN study's caption (report/captions.py): the same probes, one model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..registry import option, register
from .fields import batch_size, bn, n, seed, split

ETAS = (0.05, 0.4, 8)  # as bn-study's defaults (eta_range 0.05..0.4, 8 of them), times the run's learning rate
BATCHES = 4  # --n defaults to this many batches of --batch-size


@dataclass
class ProbesOptions:
    n: int | None = n(None, f"{BATCHES} x --batch-size")
    split: str = split()
    seed: int | None = seed()
    batch_size: int = batch_size()
    bn: str = bn("train")  # Santurkar et al. probe the training-mode network
    etas: str | None = option(
        None,
        "step sizes",
        default_text="{}:{}:{} times the run's learning rate, as bn-study".format(*ETAS),
        metavar="MIN:MAX:NUM",
    )


def describe(res: dict, classes: list[str]) -> str:
    return (
        f"loss variation {res['loss_variation']:.4g}, gradient predictiveness {res['gradient_predictiveness']:.4g}, "
        f"effective beta-smoothness {res['beta_smooth']:.4g} ({res['n_batches']} batches)"
    )


@register(
    "probes",
    ProbesOptions,
    describe=describe,
    doc="Santurkar et al.'s probes at the checkpoint's weights, one per batch of --batch-size of\n"
    "the --n images: loss and gradient after a step -eta g along the batch's gradient g.",
)
def probes(s, o: ProbesOptions, out: Path) -> dict:
    import numpy as np

    from .. import hessian, landscape
    from ..bn_probe import run_probes

    x, y, data = s.images(o.split, BATCHES * o.batch_size if o.n is None else o.n, o.seed)
    etas = landscape.parse_range(o.etas) if o.etas else np.linspace(*ETAS) * s.learning_rate()
    return run_probes(
        s.model,
        hessian.batches_of(x, y, o.batch_size),
        etas.tolist(),
        out,
        loss_fn=s.loss_fn(),
        bn=o.bn,
        data=data,
        title=f"{s.ckpt.get('model_name', 'model')}, {data['n_images']} {o.split} images",
    )
