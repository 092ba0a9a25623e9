"""`inspect RUN metrics`: accuracy per class, the confusion matrix and the worst mistakes (analysis/metrics.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..registry import register
from .fields import batch_size


@dataclass
class MetricsOptions:
    batch_size: int = batch_size()


def describe(res: dict, classes: list[str]) -> str:
    acc = res["per_class_accuracy"]
    worst = min(range(len(acc)), key=lambda i: acc[i] if acc[i] == acc[i] else 2.0)  # NaN: no images
    name = classes[worst] if worst < len(classes) else str(worst)
    return (
        f"accuracy {res['accuracy']:.4f}, {res['n_misclassified']} misclassified, "
        f"worst class {name} at {acc[worst]:.3f}"
    )


@register(
    "metrics",
    MetricsOptions,
    describe=describe,
    captions={
        r"confusion": "Confusion matrix on the test set: colours are the share of each true class, cells the counts.",
        r"per_class": "Test accuracy for each class.",
        r"misclassified": "The test images the model gets wrong with the highest confidence (true -> predicted).",
    },
    in_all=True,
)
def metrics(s, o: MetricsOptions, out: Path) -> dict:
    from ..metrics import run_metrics

    x, y = s.test()
    return run_metrics(
        s.model,
        x,
        y,
        out,
        classes=s.classes,
        mean=s.mean,
        std=s.std,
        num_classes=len(s.classes) or None,
        batch_size=o.batch_size,
    )
