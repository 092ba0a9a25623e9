import gzip
import math

import numpy as np
import pytest
import torch
from torch import nn

from cifarlab.errors import UserError
from cifarlab.models import count_params, create_model, make_activation, model_aliases, model_names
from cifarlab.models.blocks import ACTIVATIONS

try:
    from conftest import shared_file
except ImportError:  # pytest's importlib mode registers tests/conftest.py as `tests.conftest` only
    from tests.conftest import shared_file


def input_for(name: str, n: int = 2) -> torch.Tensor:
    """LeNet's default layout is MNIST (1x28x28); everything else gets CIFAR (3x32x32)."""
    return torch.randn(n, 1, 28, 28) if name == "LeNet" else torch.randn(n, 3, 32, 32)


def build(name: str, **kw) -> nn.Module:
    if name == "LeNet":
        kw.setdefault("in_channels", 1)
    return create_model(name, **kw)


def convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


# ---------------------------------------------------------------- every model


@pytest.mark.parametrize("name", model_names())
def test_forward_backward_reach_every_parameter(name):
    torch.manual_seed(0)
    model = build(name, num_classes=7).train()
    out = model(input_for(name))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not unused, f"parameters the forward never uses: {unused}"


@pytest.mark.parametrize("name", model_names())
def test_stage_names_resolve_in_forward_order(name):
    model = build(name).eval()
    assert model.stage_names, "every model names its stages"
    seen = []
    hooks = [
        model.get_submodule(s).register_forward_hook(lambda m, i, o, s=s: seen.append((s, o.dim())))
        for s in model.stage_names
    ]
    with torch.no_grad():
        model(input_for(name, 1))
    for h in hooks:
        h.remove()
    assert [s for s, _ in seen] == model.stage_names
    assert all(d == 4 for _, d in seen), "stages are feature maps (N, C, H, W)"


def test_lenet_runs_on_cifar_shaped_input():
    model = create_model("lenet", in_channels=3)
    assert count_params(model) == 61_706 - 6 * 25 + 6 * 75  # conv1 sees 3 channels
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------- exact architectures


@pytest.mark.parametrize(
    "name, options, expected",
    [
        ("VGG_A", {}, 9_750_922),
        ("VGG_A_BatchNorm", {}, 9_756_426),
        ("VGG_A_BatchNorm", {"bn1d": True}, 9_758_474),
        ("VGG_A_Light", {}, 285_162),
        ("VGG_A_Dropout", {}, 9_750_922),
        ("LeNet", {"in_channels": 1}, 61_706),
        ("resnet18", {}, 11_173_962),
        ("resnet50", {}, 23_520_842),
    ],
)
def test_parameter_counts(name, options, expected):
    assert count_params(create_model(name, **options)) == expected


def test_course_state_dict_keys():
    keys = create_model("VGG_A").state_dict().keys()
    assert {"features.0.weight", "features.3.weight", "classifier.0.weight", "classifier.4.bias"} <= set(keys)
    bn = create_model("VGG_BatchNorm", bn1d=True)
    assert isinstance(bn.features[1], nn.BatchNorm2d) and isinstance(bn.classifier[1], nn.BatchNorm1d)
    light = create_model("VGG_A_Light").state_dict().keys()
    assert {"stage1.0.weight", "stage2.0.weight", "classifier.0.weight"} <= set(light)
    drop = create_model("VGG_A_Dropout", dropout=0.3)
    ps = [m.p for m in drop.classifier if isinstance(m, nn.Dropout)]
    assert ps == [0.3, 0.3] and isinstance(drop.classifier[0], nn.Dropout)
    assert isinstance(drop.classifier[1], nn.Linear) and isinstance(drop.classifier[4], nn.Linear)


@pytest.mark.parametrize("name", ["VGG_A", "VGG_A_BatchNorm"])
def test_course_init_is_xavier_normal_with_zero_bias(name):
    torch.manual_seed(0)
    model = create_model(name, bn1d=True) if name == "VGG_A_BatchNorm" else create_model(name)
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 11
    for m in layers:
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
        want = math.sqrt(2.0 / (fan_in + fan_out))
        assert m.weight.std().item() == pytest.approx(want, rel=0.06)
        assert abs(m.weight.mean().item()) < 0.1 * want
        assert torch.all(m.bias == 0)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)


def test_light_and_dropout_keep_pytorch_default_init():
    torch.manual_seed(0)
    for name in ("VGG_A_Light", "VGG_A_Dropout"):
        first = convs(create_model(name))[0]
        bound = 1 / math.sqrt(3 * 9)  # PyTorch's default kaiming_uniform(a=sqrt(5)) bound for fan_in 27
        assert first.bias.abs().max() > 0 and first.weight.abs().max() <= bound


def test_official_lenet_checkpoint_loads_strictly_and_classifies_mnist():
    ckpt = torch.load(shared_file("dessilbi-official/lenet.pth"), map_location="cpu", weights_only=False)
    model = create_model("LeNet", in_channels=1)
    model.load_state_dict(ckpt["model"], strict=True)
    with gzip.open(shared_file("mnist/t10k-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:1000]
    with gzip.open(shared_file("mnist/t10k-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:1000]
    x = torch.from_numpy(images.astype(np.float32) / 255)  # the official recipe: ToTensor only
    with torch.no_grad():
        logp = model.eval()(x)
    assert torch.allclose(logp.exp().sum(1), torch.ones(len(x)), atol=1e-5), "forward returns log-softmax"
    acc = (logp.argmax(1).numpy() == labels).mean()
    assert acc > 0.97, acc  # 98.61% on the full test set


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resvgg16_light", "vgg_a_res", "plainnet", "resnet_small"])
def test_width_multiplier_halves_every_conv(name):
    full, half = convs(create_model(name)), convs(create_model(name, width=0.5))
    assert len(full) == len(half)
    for a, b in zip(full, half):
        assert b.out_channels * 2 == a.out_channels
        assert b.in_channels * 2 == a.in_channels or b.in_channels == a.in_channels == 3


def test_resnet18_half_width_and_mlp_head():
    m = create_model("resnet18", width=0.5, head=[256], dropout=0.2)
    assert m.conv1.out_channels == 32 and m.layer4[-1].conv2.out_channels == 256
    kinds = [type(x) for x in m.fc]
    assert kinds == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert m.fc[0].in_features == 256 and m.fc[0].out_features == 256 and m.fc[2].p == 0.2


def test_resvgg_classifiers():
    assert [x.out_features for x in create_model("resvgg16_light").classifier if isinstance(x, nn.Linear)] == [
        1024,
        512,
        10,
    ]
    large = create_model("resvgg16", classifier="large", width=0.125)
    assert [x.out_features for x in large.classifier if isinstance(x, nn.Linear)] == [4096, 4096, 10]
    assert [len(getattr(large, s)) for s in large.stage_names] == [2, 2, 3, 3, 3]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activation_option_reaches_every_layer(activation):
    m = create_model("resnet_small", activation=activation, stages=[8, 16])
    kinds = {type(x) for x in m.modules() if type(x) in ACTIVATIONS.values()}
    assert kinds == {ACTIVATIONS[activation]}
    assert isinstance(make_activation(activation.upper()), ACTIVATIONS[activation])


def test_plain_and_residual_twins_differ_only_by_the_shortcut():
    torch.manual_seed(0)
    plain = create_model("plainnet", stages=[16], blocks_per_stage=2)
    res = create_model("resnet_small", stages=[16], blocks_per_stage=2)
    res.load_state_dict(plain.state_dict(), strict=True)  # same weights when no projection is needed
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.allclose(plain.eval()(x), res.eval()(x))
    deeper = create_model("resnet_small", stages=[8, 16, 32, 64], blocks_per_stage=[1, 2, 2, 1], bn=False)
    assert deeper.stage_names == ["layer1", "layer2", "layer3", "layer4"] and len(deeper.layer2) == 2
    assert not any(isinstance(x, nn.BatchNorm2d) for x in deeper.modules())
    assert all(c.bias is not None for c in convs(deeper))


def test_fastnet_follows_airbench():
    m = create_model("fastnet")
    assert m.whiten.kernel_size == (2, 2) and m.whiten.out_channels == 24 and not m.whiten.weight.requires_grad
    assert m.whiten.bias.requires_grad and m.head.bias is None
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    assert len(bns) == 6
    assert all(
        b.eps == 1e-12 and b.momentum == 0.4 and not b.weight.requires_grad and b.bias.requires_grad for b in bns
    )
    assert [getattr(m, s).conv2.out_channels for s in m.stage_names] == [64, 256, 256]
    # the first filters of each 3x3 conv start as identities
    w = m.block2.conv1.weight
    assert torch.equal(w[:64, :, 1, 1], torch.eye(64)) and w[:64].abs().sum() == 64
    # the output is the head's logits times `scale`
    unscaled = create_model("fastnet_small", scale=1.0)
    small = create_model("fastnet_small")
    small.load_state_dict(unscaled.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(small.eval()(x) * 9, unscaled.eval()(x), atol=1e-5)
    trainable = create_model("fastnet_small", train_bn_weight=True, widths=[8, 8, 8])
    assert all(b.weight.requires_grad for b in trainable.modules() if isinstance(b, nn.BatchNorm2d))
    assert count_params(m) > sum(p.numel() for p in m.parameters() if p.requires_grad)  # frozen ones count


@pytest.mark.slow
def test_fastnet_compiled_under_bf16_has_finite_gradients():
    """Its global max-pool once was x.amax: compiled under bf16 autocast, the backward matched no
    element to the max and divided by zero, so every gradient below the head was NaN."""
    torch.manual_seed(0)
    m = create_model("fastnet_small", widths=[8, 16, 16]).train()
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = nn.functional.cross_entropy(torch.compile(m)(x), y)
    loss.backward()
    grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
    assert all(g is not None and g.isfinite().all() and g.abs().sum() > 0 for g in grads.values()), [
        n for n, g in grads.items() if g is None or not g.isfinite().all()
    ]
    torch._dynamo.reset()


# ---------------------------------------------------------------- registry


def test_names_and_aliases_are_case_insensitive():
    assert model_names() == sorted(model_names(), key=str.lower)
    assert model_aliases()["VGG_BatchNorm"] == "VGG_A_BatchNorm"
    for name, canonical in [
        ("VGG_BatchNorm", "VGG_A_BatchNorm"),
        ("vgg_batchnorm", "VGG_A_BatchNorm"),
        ("lenet", "LeNet"),
        ("RESNET18", "resnet18"),
        ("vgg_a", "VGG_A"),
    ]:
        kw = {"in_channels": 1} if canonical == "LeNet" else {}
        assert create_model(name, **kw).cifarlab_name == canonical


def test_options_are_recorded_and_rebuild_the_model():
    m = create_model("resnet_small", activation="gelu", stages=[8, 16], head=[32], dropout=0.1, init="xavier_uniform")
    assert m.cifarlab_name == "resnet_small"
    assert m.cifarlab_options == {
        "num_classes": 10,
        "in_channels": 3,
        "activation": "gelu",
        "dropout": 0.1,
        "stages": [8, 16],
        "head": [32],
    }  # None options (width) are not passed
    again = create_model(m.cifarlab_name, **m.cifarlab_options)
    again.load_state_dict(m.state_dict(), strict=True)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: create_model("resnet19"), "unknown model 'resnet19'; choose one of: "),
        (lambda: create_model("resnet18", foo=1), "model resnet18 does not take option 'foo'; it takes: num_classes,"),
        (lambda: create_model("LeNet", width=0.5), "model LeNet does not take option 'width'"),
        (lambda: create_model("VGG_A", dropout=0.5), "model VGG_A does not take option 'dropout'"),
        (lambda: create_model("resnet18", activation="swishy"), "unknown activation 'swishy'"),
        (lambda: create_model("resnet18", width=0), "width must be a number > 0"),
        (lambda: create_model("resnet18", width=-1.0), "width must be a number > 0"),
        (lambda: create_model("resnet18", dropout=1.5), "dropout must be in [0, 1)"),
        (lambda: create_model("resnet18", num_classes=0), "num_classes must be a positive integer"),
        (lambda: create_model("resnet18", init="orthogonal"), "unknown init 'orthogonal'"),
        (lambda: create_model("plainnet", stages=[]), "stages must be"),
        (lambda: create_model("plainnet", stages=[8, 16], blocks_per_stage=[1]), "blocks_per_stage must be"),
        (lambda: create_model("resnet18", head=[0]), "positive integers"),
        (lambda: create_model("resvgg16", classifier="huge"), "unknown classifier 'huge'"),
        (lambda: create_model("fastnet", widths=[8, 8]), "fastnet widths must be 3"),
        (lambda: make_activation("relu6"), "unknown activation 'relu6'; choose one of: relu, leaky_relu"),
    ],
)
def test_user_errors_name_the_problem(call, message):
    with pytest.raises(UserError) as e:
        call()
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_model_lists_the_names():
    with pytest.raises(UserError) as e:
        create_model("nope")
    assert all(n in str(e.value) for n in model_names())


@pytest.mark.parametrize(
    "scheme, expected_std",
    [
        ("kaiming_normal", lambda fi, fo, s: math.sqrt(2 / fi)),
        ("kaiming_uniform", lambda fi, fo, s: math.sqrt(2 / fi)),
        ("xavier_normal", lambda fi, fo, s: math.sqrt(2 / (fi + fo))),
        ("xavier_uniform", lambda fi, fo, s: math.sqrt(2 / (fi + fo))),
        ("normal", lambda fi, fo, s: s),
    ],
)
def test_init_schemes_apply(scheme, expected_std):
    torch.manual_seed(0)
    std = 0.05
    m = create_model("plainnet", stages=[64, 64], bn=False, init=scheme, init_std=std)
    w = m.layer2[0].conv2.weight  # 64x64x3x3: enough samples for a tight estimate
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
    assert w.std().item() == pytest.approx(expected_std(fan_in, fan_out, std), rel=0.05)
    limit = w.abs().max().item() / w.std().item()
    assert (limit < 2.0) == scheme.endswith("uniform")  # uniform: max |w| = sqrt(3) std; normal: ~4 std
    biases = [x.bias for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]
    assert len(biases) > 4 and all(torch.all(b == 0) for b in biases)


def test_default_init_keeps_the_models_own():
    torch.manual_seed(1)
    a = create_model("VGG_A_Light")
    torch.manual_seed(1)
    b = create_model("VGG_A_Light", init="default")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    c = create_model("VGG_A", init="kaiming_normal")
    w = c.features[0].weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / 27), rel=0.1)  # course xavier replaced


def test_variants_forward_options_to_their_family_and_keep_their_own_architecture():
    assert count_params(create_model("resnet34", width=0.25)) < count_params(create_model("resnet18"))
    standard = create_model("resvgg16_light", classifier="standard").classifier
    assert [x.out_features for x in standard if isinstance(x, nn.Linear)] == [512, 512, 10]  # not light's 1024
    with pytest.raises(UserError, match="model resnet18 does not take option 'depths'"):
        create_model("resnet18", depths=[1, 1, 1, 1])  # what makes it resnet18 is not an option
    with pytest.raises(UserError, match="model plainnet does not take option 'residual'"):
        create_model("plainnet", residual=True)
