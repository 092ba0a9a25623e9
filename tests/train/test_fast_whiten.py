"""Patch whitening: the frozen first layer decorrelates the patches it was fit on; its bias trains
for whiten_bias_epochs only."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cifarlab.config import Config, from_dict
from cifarlab.data import Dataset
from cifarlab.errors import UserError
from cifarlab.train import engine
from cifarlab.train.whiten import init_whitening, patch_covariance


def correlated_images(n=48, c=3, size=12, seed=0):
    """Smooth, channel-correlated images: a patch covariance far from the identity."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size + 2, size + 2, generator=g)
    x = F.avg_pool2d(x, 3, stride=1)  # neighbouring pixels correlate
    mix = torch.tensor([[1.0], [0.8], [0.5]])[:c].view(1, c, 1, 1)
    return x * mix + 0.3 * torch.randn(n, c, size, size, generator=g)


def second_moment(y: torch.Tensor) -> torch.Tensor:
    flat = y.permute(0, 2, 3, 1).reshape(-1, y.shape[1]).double()
    return flat.T @ flat / len(flat)


def test_whitened_patches_have_identity_covariance():
    x = correlated_images()
    cov_in = patch_covariance(x, (2, 2))
    assert (cov_in - torch.eye(12, dtype=torch.float64)).abs().max() > 0.3  # far from white to start with
    conv = nn.Conv2d(3, 24, 2, bias=False)
    init_whitening(conv, x, eps=1e-9)
    assert not conv.weight.requires_grad
    with torch.no_grad():
        y = conv(x)
    pos, neg = y[:, :12], y[:, 12:]
    assert torch.allclose(neg, -pos)  # each eigenvector with both signs
    assert torch.allclose(second_moment(pos), torch.eye(12, dtype=torch.float64), atol=2e-4)


def test_eps_damps_small_directions_and_fewer_filters_keep_the_top_ones():
    x = correlated_images(seed=1)
    evals = torch.linalg.eigvalsh(patch_covariance(x, (2, 2))).flip(0)
    conv = nn.Conv2d(3, 8, 2, bias=False)  # the top 4 eigenvectors, both signs
    init_whitening(conv, x, eps=0.05)
    with torch.no_grad():
        m = second_moment(conv(x)[:, :4])
    expected = torch.diag(evals[:4] / (evals[:4] + 0.05))
    assert torch.allclose(m, expected, atol=2e-4)


def test_bad_whitening_layers_are_user_errors():
    x = correlated_images(n=4)
    with pytest.raises(UserError, match="even number of filters up to 2 x 12"):
        init_whitening(nn.Conv2d(3, 26, 2), x)
    with pytest.raises(UserError, match="even number"):
        init_whitening(nn.Conv2d(3, 5, 2), x)
    with pytest.raises(UserError, match="takes 1 channels"):
        init_whitening(nn.Conv2d(1, 8, 2), x)


def tiny_cifar(n_train=64, n_test=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    mk = lambda n: (
        torch.randint(0, 256, (n, 16, 16, 3), generator=g, dtype=torch.uint8),
        torch.randint(0, 4, (n,), generator=g),
    )  # noqa: E731
    (xtr, ytr), (xte, yte) = mk(n_train), mk(n_test)
    return Dataset(xtr, ytr, xte, yte, [f"c{k}" for k in range(4)], "tiny", "tiny", (0.5,) * 3, (0.29,) * 3)


def run_and_watch_whiten(tmp_path, bias_epochs, epochs=3):
    cfg = from_dict(
        Config,
        {
            "name": "w",
            "out": str(tmp_path),
            "seed": 0,
            "model": {"name": "fastnet_small", "args": {"widths": [8, 8, 8]}},
            "data": {"batch_size": 32, "device": "cpu", "drop_last": True},
            "optim": {"name": "nesterov", "lr": 0.05, "weight_decay": 5e-4},
            "train": {
                "epochs": epochs,
                "progress": False,
                "save_checkpoints": False,
                "log_tensorboard": False,
                "whiten": True,
                "whiten_bias_epochs": bias_epochs,
            },
        },
    )
    ds = tiny_cifar()
    seen = []  # (bias, weight) before each epoch, then after the last
    real = engine.Trainer.train_epoch

    def watching(self, *a, **k):
        model = self.model
        seen.append((model.whiten.bias.detach().clone(), model.whiten.weight.detach().clone()))
        return real(self, *a, **k)

    engine.Trainer.train_epoch = watching
    try:
        engine.train(cfg, run_dir=tmp_path / f"r{bias_epochs}", dataset=ds)
    finally:
        engine.Trainer.train_epoch = real
    return seen, ds


def test_whitening_bias_trains_for_its_epochs_then_freezes(tmp_path):
    seen, ds = run_and_watch_whiten(tmp_path, bias_epochs=1)
    (b0, w0), (b1, w1), (b2, _) = seen
    assert not torch.equal(b0, b1)  # epoch 1 moved the bias
    assert torch.equal(b1, b2)  # epoch 2 did not
    assert torch.equal(w0, w1)  # the whitened weight never trains
    # and it is the whitening of the (normalized) training images
    x = (ds.train_x.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.29
    ref = nn.Conv2d(3, 24, 2)
    init_whitening(ref, x, eps=5e-4)
    assert torch.allclose(w0, ref.weight, atol=1e-4)


def test_whitening_bias_trains_throughout_when_not_limited(tmp_path):
    seen, _ = run_and_watch_whiten(tmp_path, bias_epochs=-1)
    (b0, _), (b1, _), (b2, _) = seen
    assert not torch.equal(b0, b1) and not torch.equal(b1, b2)
