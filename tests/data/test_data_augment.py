"""Each augmentation does what it says, on tiny batches, and is a function of the generator."""

import math

import pytest
import torch
import torch.nn.functional as F

from cifarlab.config import AugmentConfig
from cifarlab.data.augment import (
    Augment,
    Mixed,
    adjust_colour,
    alternating_flip_mask,
    cutmix,
    cutout,
    flip_where,
    mixed_loss,
    mixup,
    random_crop,
    rotate,
)
from cifarlab.errors import UserError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(n=8, c=3, h=8, w=8, seed=0):
    return torch.rand(n, c, h, w, generator=gen(seed))


def test_defaults_inactive_and_bad_config_rejected():
    assert not Augment(AugmentConfig()).active
    assert Augment(AugmentConfig(hflip=True)).active and Augment(AugmentConfig(cutout=4)).mixing
    assert not Augment(AugmentConfig(mixup=0.2, mix_prob=0.0)).mixing
    for bad in (dict(crop_mode="wrap"), dict(crop_padding=-1), dict(mix_prob=1.5), dict(cutmix=-0.1)):
        with pytest.raises(UserError, match="augment."):
            Augment(AugmentConfig(**bad))


def _is_window(out, padded, h, w):
    return any(
        torch.equal(out, padded[:, dy : dy + h, dx : dx + w])
        for dy in range(padded.shape[1] - h + 1)
        for dx in range(padded.shape[2] - w + 1)
    )


@pytest.mark.parametrize("mode", ["zero", "reflect"])
def test_random_crop_is_a_window_of_the_padded_image(mode):
    x = batch(16)
    out = random_crop(x, 2, gen(1), mode)
    assert out.shape == x.shape
    padded = F.pad(x, (2,) * 4, mode="reflect" if mode == "reflect" else "constant")
    assert all(_is_window(out[i], padded[i], 8, 8) for i in range(16))
    assert not torch.equal(out, x)  # 16 images: some offset is not the centre
    assert torch.equal(random_crop(x, 2, gen(1), mode), out)  # same generator state, same crops
    if mode == "zero":
        assert (out == 0).any()


def test_translate_uses_reflection():
    x = batch(16) * 0.5 + 0.5  # no zeros in the image: reflection never makes zeros
    out = Augment(AugmentConfig(translate=3))(x, gen())
    assert out.shape == x.shape and (out > 0).all() and not torch.equal(out, x)


def test_hflip_twice_is_identity_and_random_flip_flips_some():
    x = batch(32)
    m = torch.rand(32, generator=gen()) < 0.5
    assert torch.equal(flip_where(flip_where(x, m), m), x)
    out = Augment(AugmentConfig(hflip=True))(x, gen(3))
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(32)]
    assert all(f or torch.equal(out[i], x[i]) for i, f in enumerate(flipped))
    assert 4 < sum(flipped) < 28


def test_vflip_flips_rows():
    x = batch(32)
    out = Augment(AugmentConfig(vflip=True))(x, gen(3))
    flipped = [torch.equal(out[i], x[i].flip(1)) for i in range(32)]
    assert all(f or torch.equal(out[i], x[i]) for i, f in enumerate(flipped)) and 4 < sum(flipped) < 28


def test_alternating_flip_alternates_per_image():
    idx = torch.arange(1000)
    m0, m1, m2 = (alternating_flip_mask(idx, e) for e in (0, 1, 2))
    assert torch.equal(m0, ~m1) and torch.equal(m0, m2)
    assert 400 < int(m0.sum()) < 600 and m0[:500].float().mean() != m0[::2].float().mean()
    x = batch(4)
    aug = Augment(AugmentConfig(alternating_flip=True))
    sel = torch.tensor([5, 6, 7, 8])
    a, b = aug(x, gen(0), 0, sel), aug(x, gen(99), 1, sel)  # generator does not matter, epoch does
    for i in range(4):
        assert torch.equal(a[i], x[i].flip(2)) == bool(m0[sel[i]])
        assert torch.equal(b[i], x[i].flip(2)) != torch.equal(a[i], x[i].flip(2))
    with pytest.raises(ValueError, match="idx"):
        aug(x, gen(), 0)


def test_rotation_by_90_matches_rot90_and_zero_is_identity():
    x = batch(2)
    assert torch.allclose(rotate(x, torch.zeros(2)), x, atol=1e-6)
    # counter-clockwise in the displayed image: row 0 at the top
    assert torch.allclose(rotate(x, torch.full((2,), 90.0)), torch.rot90(x, 1, (2, 3)), atol=1e-5)
    out = Augment(AugmentConfig(rotation=30))(x, gen())
    assert out.shape == x.shape and not torch.allclose(out, x)


def test_colour_adjustments():
    x = batch(4)
    one = torch.ones(4)
    assert torch.allclose(adjust_colour(x, one, one, one), x)
    assert torch.allclose(adjust_colour(x, one * 0.5, one, one), x * 0.5)
    gray = adjust_colour(x, one, one, torch.zeros(4))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    flat = adjust_colour(x, one, torch.zeros(4), one)
    assert torch.allclose(flat, flat.mean((2, 3), keepdim=True).expand_as(flat), atol=1e-6)
    out = Augment(AugmentConfig(color_jitter=0.4))(x, gen())
    assert out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, x)
    g1 = batch(4, c=1)
    assert Augment(AugmentConfig(color_jitter=0.4))(g1, gen()).shape == g1.shape  # gray images work too


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(10, 3, 12, 12)
    out = cutout(x, 5, gen())
    for img in out:
        zero = img[0] == 0
        assert torch.equal(zero, img[1] == 0) and torch.equal(zero, img[2] == 0)
        rows, cols = zero.any(1).nonzero().flatten(), zero.any(0).nonzero().flatten()
        assert len(rows) == len(cols) == 5 and int(zero.sum()) == 25
        assert rows[-1] - rows[0] == 4 and cols[-1] - cols[0] == 4
    assert len({tuple((o[0] == 0).nonzero()[0].tolist()) for o in out}) > 1  # placed at random


def test_mixup_is_a_convex_combination():
    x, y = batch(6), torch.arange(6)
    perm = torch.tensor([1, 2, 0, 4, 5, 3])
    out, m = mixup(x, y, 0.3, perm)
    assert torch.allclose(out, 0.3 * x + 0.7 * x[perm]) and torch.equal(m.y_b, perm) and m.lam == 0.3

    aug = Augment(AugmentConfig(mixup=0.4))
    out, m = aug.mix(x, y, gen(5))
    assert isinstance(m, Mixed) and 0 <= m.lam <= 1 and torch.equal(m.y_a, y)
    assert sorted(m.y_b.tolist()) == list(range(6))
    assert torch.allclose(out, m.lam * x + (1 - m.lam) * x[m.y_b], atol=1e-6)
    out2, m2 = aug.mix(x, y, gen(5))
    assert m2.lam == m.lam and torch.equal(out2, out)  # a function of the generator


def test_cutmix_area_matches_lam():
    n, h, w = 8, 16, 16
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, h, w).contiguous()
    y = torch.arange(n)
    for seed in range(5):
        out, m = Augment(AugmentConfig(cutmix=1.0)).mix(x, y, gen(seed))
        assert isinstance(m, Mixed)
        for i in range(n):
            if m.y_b[i] == i:
                continue
            pasted = (out[i, 0] == m.y_b[i].float()).float().mean().item()
            assert math.isclose(pasted, 1 - m.lam, abs_tol=1e-9)
            assert torch.equal(out[i, 0] == m.y_b[i].float(), out[i, 2] == m.y_b[i].float())
    perm = torch.tensor([1, 0])
    out, m = cutmix(x[:2], y[:2], 0.75, perm, gen())
    assert m.lam <= 1 and (out[0] == 1).float().mean().item() == pytest.approx(1 - m.lam)


def test_mix_prob_and_mixed_loss():
    x, y = batch(4), torch.arange(4)
    never = Augment(AugmentConfig(mixup=1.0, mix_prob=0.0))
    always = Augment(AugmentConfig(mixup=1.0, cutmix=1.0, mix_prob=1.0))
    assert all(never.mix(x, y, gen(s))[1] is y for s in range(10))
    assert all(isinstance(always.mix(x, y, gen(s))[1], Mixed) for s in range(10))
    logits = torch.randn(4, 5, generator=gen())
    m = Mixed(torch.tensor([0, 1, 2, 3]), torch.tensor([4, 4, 4, 4]), 0.25)
    want = 0.25 * F.cross_entropy(logits, m.y_a) + 0.75 * F.cross_entropy(logits, m.y_b)
    assert torch.allclose(mixed_loss(F.cross_entropy, logits, m), want)
    assert torch.allclose(mixed_loss(F.cross_entropy, logits, m.y_a), F.cross_entropy(logits, m.y_a))


def test_mix_draws_batch_scalars_from_the_cpu_generator():
    aug = Augment(AugmentConfig(mixup=1.0))
    x, y = batch(4), torch.arange(4)
    lams = {aug.mix(x, y, gen(s), cpu_gen=gen(7))[1].lam for s in range(5)}
    assert len(lams) == 1  # lam comes from cpu_gen alone; gen only draws the pairing
