"""DeviceLoader: seeded order, drop_last, normalization, layout, augmentation as f(seed, epoch)."""

import pytest
import torch

from cifarlab.config import AugmentConfig
from cifarlab.data import Augment, DeviceLoader, Mixed
from cifarlab.errors import UserError
from cifarlab.train.device import pick_device as resolve_device

N = 50


def indexed(n=N, h=4, w=4, c=3):
    """Images whose pixels encode their index (labels = index too), so batches reveal the order."""
    x = (torch.arange(n) % 256).view(n, 1, 1, 1).expand(n, h, w, c).to(torch.uint8).contiguous()
    return x, torch.arange(n)


def order(loader):
    return torch.cat([y for _, y in loader]).tolist()


def loader(**kw):
    x, y = indexed()
    args = dict(batch_size=8, shuffle=True, seed=0, device="cpu")
    return DeviceLoader(x, y, **{**args, **kw})


def test_shuffle_is_seeded_and_a_permutation_per_epoch():
    a, b, c = loader(), loader(), loader(seed=1)
    oa = order(a)
    assert sorted(oa) == list(range(N)) and oa != list(range(N))
    assert order(b) == oa and order(c) != oa
    assert order(a) != oa  # the next pass is the next epoch
    a.set_epoch(0)
    assert order(a) == oa  # set_epoch replays an epoch exactly
    assert order(loader(shuffle=False)) == list(range(N))


def test_len_and_drop_last():
    keep, drop = loader(), loader(drop_last=True)
    assert len(keep) == 7 and len(drop) == 6
    sizes = [len(y) for _, y in keep]
    assert sizes == [8] * 6 + [2]
    assert [len(y) for _, y in drop] == [8] * 6 and len(set(order(drop))) == 48


def test_batches_normalized_nchw_float():
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    x, y = next(iter(loader(mean=mean, std=std, shuffle=False)))
    assert x.shape == (8, 3, 4, 4) and x.dtype == torch.float32 and y.dtype == torch.int64
    want = (torch.arange(8).float().view(8, 1, 1, 1) / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    assert torch.allclose(x, want.expand(8, 3, 4, 4))
    assert x.is_contiguous()


def test_channels_last_and_dtype():
    x, _ = next(iter(loader(channels_last=True, dtype=torch.bfloat16)))
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)


def test_pixels_of_real_images_survive_the_trip():
    imgs = torch.randint(0, 256, (10, 5, 6, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    dl = DeviceLoader(imgs, torch.zeros(10, dtype=torch.int64), 10, shuffle=False, seed=0, device="cpu")
    x, _ = next(iter(dl))
    assert torch.equal((x * 255).round().to(torch.uint8), imgs.permute(0, 3, 1, 2))


def test_augmented_epochs_are_a_function_of_seed_and_epoch():
    cfg = AugmentConfig(crop_padding=1, hflip=True, cutout=2, cutmix=1.0, mix_prob=0.5)

    def epoch_batches(dl, e):
        dl.set_epoch(e)
        return [(x.clone(), y) for x, y in dl]

    a = loader(augment=Augment(cfg), seed=3)
    first = [epoch_batches(a, e) for e in range(3)]
    b = loader(augment=Augment(cfg), seed=3)  # a "resumed" run: fresh loader straight at epoch 2
    for (xa, ya), (xb, yb) in zip(first[2], epoch_batches(b, 2)):
        assert torch.equal(xa, xb)
        assert type(ya) is type(yb)
        if isinstance(ya, Mixed):
            assert torch.equal(ya.y_a, yb.y_a) and torch.equal(ya.y_b, yb.y_b) and ya.lam == yb.lam
        else:
            assert torch.equal(ya, yb)
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(first[1], first[2]))
    kinds = {isinstance(y, Mixed) for batches in first for _, y in batches}
    assert kinds == {True, False}  # mix_prob 0.5: some batches mixed, some not


def test_inactive_augment_is_skipped():
    plain = [x for x, _ in loader(shuffle=False)]
    noop = [x for x, _ in loader(shuffle=False, augment=Augment(AugmentConfig()))]
    assert all(torch.equal(p, q) for p, q in zip(plain, noop))


def test_alternating_flip_sees_dataset_indices():
    imgs = torch.randint(0, 256, (16, 4, 4, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    dl = DeviceLoader(imgs, torch.arange(16), 4, shuffle=True, seed=0, device="cpu",
                      augment=Augment(AugmentConfig(alternating_flip=True)))  # fmt: skip
    seen = []
    for e in range(2):
        dl.set_epoch(e)
        flips = {}
        for x, y in dl:
            for img, i in zip(x, y.tolist()):
                ref = imgs[i].permute(2, 0, 1).float() / 255
                flips[i] = torch.allclose(img, ref.flip(2)) and not torch.allclose(img, ref)
        seen.append(flips)
    assert all(seen[0][i] != seen[1][i] for i in range(16))  # each image flips on alternate epochs


def test_bad_arguments():
    x, y = indexed()
    with pytest.raises(ValueError):
        DeviceLoader(x.float(), y, 8)
    with pytest.raises(UserError):
        DeviceLoader(x, y, 0)
    with pytest.raises(UserError, match="data.device"):
        resolve_device("gpu7")
    assert resolve_device("cpu").type == "cpu" and resolve_device("auto").type in ("cpu", "cuda", "mps")
