import numpy as np
import torch
from torch import nn

from cifarlab.analysis import metrics


class Fixed(nn.Module):
    """Predicts the class stored in the image's first pixel: known predictions for any labels."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0, 0, 0].long(), 3).float() * 5 + self.dummy


def test_confusion_matrix_and_per_class_accuracy():
    y = torch.tensor([0, 0, 0, 1, 1, 2])
    p = torch.tensor([0, 1, 0, 1, 2, 2])
    cm = metrics.confusion_matrix(y, p, 4)
    np.testing.assert_array_equal(cm, [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    acc = metrics.per_class_accuracy(cm)
    np.testing.assert_allclose(acc[:3], [2 / 3, 0.5, 1.0])
    assert np.isnan(acc[3])  # no images of class 3


def test_run_metrics_figures_and_most_confident_mistakes(tmp_path):
    pred = torch.tensor([0, 1, 2, 2, 0, 1, 1])
    y = torch.tensor([0, 1, 2, 1, 2, 1, 0])
    x = torch.rand(7, 3, 6, 6)
    x[:, 0, 0, 0] = pred.float()
    out = metrics.run_metrics(Fixed(), x, y, tmp_path, classes=["a", "b", "c"])
    assert out["accuracy"] == 4 / 7 and out["n_misclassified"] == 3
    np.testing.assert_allclose(out["per_class_accuracy"], [0.5, 2 / 3, 0.5])
    with np.load(tmp_path / "metrics.npz") as z:
        np.testing.assert_array_equal(z["predictions"], pred.numpy())
        assert sorted(z["misclassified"].tolist()) == [3, 4, 6]
        assert z["confusion"].sum() == 7
    for name in ("confusion", "per_class", "misclassified"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_run_metrics_with_no_mistakes(tmp_path):
    y = torch.tensor([0, 1, 2])
    x = torch.zeros(3, 1, 4, 4)
    x[:, 0, 0, 0] = y.float()
    out = metrics.run_metrics(Fixed(), x, y, tmp_path, num_classes=3)
    assert out["accuracy"] == 1.0 and (tmp_path / "misclassified.png").stat().st_size > 1000
