"""`inspect RUN hessian`: the top of the Hessian spectrum and its trace at the trained weights (analysis/hessian.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..registry import option, register
from .fields import batch_size, iters, n, seed, split


@dataclass
class HessianOptions:
    n: int = n(1000)
    split: str = split()
    seed: int | None = seed()
    batch_size: int = batch_size()
    k: int = option(3, "top eigenvalues")
    iters: int = iters()
    trace_samples: int = option(50, "Hutchinson samples for the trace")


def describe(res: dict, classes: list[str]) -> str:
    eig = ", ".join(f"{v:.4g}" for v in res["eigenvalues"])
    return (
        f"largest eigenvalue {res['largest_eigenvalue']:.4g}; largest in magnitude {eig}; "
        f"trace {res['trace']:.4g} ± {res['trace_std_error']:.2g}"
    )


@register(
    "hessian",
    HessianOptions,
    describe=describe,
    captions={r"hessian.*": "Hessian spectrum of the training loss at the trained weights."},
)
def hessian(s, o: HessianOptions, out: Path) -> dict:
    from .. import hessian as h

    x, y, data = s.images(o.split, o.n, o.seed)
    return h.run_hessian(
        s.model,
        x,
        y,
        out,
        k=o.k,
        iters=o.iters,
        trace_samples=o.trace_samples,
        batch_size=o.batch_size,
        seed=0 if o.seed is None else o.seed,  # the vectors' seed; o.seed itself also picks the images
        loss_fn=s.loss_fn(),
        data=data,
        title=f"{s.ckpt.get('model_name', 'model')}, {data['n_images']} {o.split} images",
    )
