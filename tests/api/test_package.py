"""`import cifarlab` offers the API: help() lists it, it stays light, errors speak Python."""

import importlib
import pydoc
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import cifarlab
from cifarlab.api.errors import python_words


def test_help_lists_the_api():
    text = pydoc.render_doc(cifarlab, renderer=pydoc.plaintext)
    for name in ("fit", "load", "create_model", "gradcam", "landscape", "hessian_eigs", "SLBI", "sweep", "bn_study"):
        assert name in cifarlab.__all__ and name in dir(cifarlab)
        assert f"\n    {name}(" in text or f"class {name}(" in text, name
    importlib.import_module("cifarlab.sweeps.runner")  # the subpackage is `sweeps`: it cannot shadow sweep()
    assert callable(cifarlab.sweep)
    with pytest.raises(AttributeError):
        cifarlab.no_such_name  # noqa: B018


def test_import_is_light_and_typed():
    code = "import sys, cifarlab; print('torch' in sys.modules, cifarlab.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", cifarlab.__version__]
    from importlib.resources import files

    assert files("cifarlab").joinpath("py.typed").is_file()


def test_models_and_messages():
    assert "resnet18" in cifarlab.list_models() and "VGG_A" in cifarlab.list_models()
    m = cifarlab.create_model("plainnet", num_classes=4, stages=[8, 16])
    assert m(torch.zeros(2, 3, 16, 16)).shape == (2, 4) and cifarlab.count_params(m) > 0
    with pytest.raises(cifarlab.UserError, match="unknown model 'nope'"):
        cifarlab.create_model("nope")
    assert python_words("use --resume or another --out") == "use resume=True or another out="
    assert python_words("--set expects key=value, got 'x'") == "overrides expects {'key': value}, got 'x'"
    assert (
        python_words("--iters must be at least 1 (--batch-size too)") == "iters= must be at least 1 (batch_size= too)"
    )


def test_slbi_prune_recover_torch_style():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    opt = cifarlab.SLBI(model, lr=0.05, kappa=1, mu=20)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    for epoch in range(3):
        for _ in range(5):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        opt.end_epoch(epoch)
    w = model[0].weight.detach().clone()
    report = cifarlab.prune(opt, model, 50, ["0.weight"])
    assert report["layers"]["0.weight"]["removed"] == 4
    assert int((model[0].weight.flatten(1).abs().sum(1) == 0).sum()) == 4
    assert cifarlab.recover(opt, model) == ["0.weight"] and torch.equal(model[0].weight, w)
    adam = cifarlab.SLBIAdam(model.named_parameters(), lr=1e-3)
    assert isinstance(adam, torch.optim.Optimizer)
    with pytest.raises(TypeError, match="named_parameters"):
        cifarlab.SLBI(model.parameters(), lr=0.1)


@pytest.mark.slow
def test_mypy_sees_the_api_types(tmp_path):
    """A user's file type-checked through `import cifarlab` (py.typed, the TYPE_CHECKING imports)."""
    pytest.importorskip("mypy")
    user = tmp_path / "user.py"
    user.write_text(
        "import cifarlab\n"
        "run = cifarlab.fit('quick', overrides={'train.epochs': 1})\n"
        "reveal_type(run.model)\n"
        "wrong: int = cifarlab.hessian_eigs\n"
    )
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent", str(user)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=root).stdout
    assert 'Revealed type is "cifarlab.api.classifier.Classifier"' in out
    assert "user.py:4: error: Incompatible types in assignment" in out and out.count("error:") == 1, out
