"""The authors' LeNet checkpoint: their accuracies before and after pruning, reproduced."""

import pytest
import torch
from conftest import shared_file

from cifarlab.errors import UserError
from cifarlab.sparsity.official import accuracy, load_official, mnist_test
from cifarlab.sparsity.prune import prune, recover
from cifarlab.train.slbi import SLBI

CKPT = "dessilbi-official/lenet.pth"


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    return mnist_test(shared_file("mnist"), cache_dir=tmp_path_factory.mktemp("cache"))


def test_official_accuracies_before_after_pruning_and_recovered(mnist):
    x, y = mnist
    model, opt = load_official(shared_file(CKPT))
    assert accuracy(model, x, y) == pytest.approx(98.61, abs=1e-9)

    report = prune(opt, model, 80, "conv3.weight", prune_bias=True)
    conv3 = report["layers"]["conv3.weight"]
    assert (conv3["kind"], conv3["removed"], conv3["total"]) == ("filters", 96, 120)
    assert model.conv3.weight.flatten(1).norm(dim=1).eq(0).sum() == 96
    assert accuracy(model, x, y) == pytest.approx(97.85, abs=1e-9)
    recover(opt, model)
    assert accuracy(model, x, y) == pytest.approx(98.61, abs=1e-9)

    report = prune(opt, model, 80, ["conv3.weight", "fc1.weight"], prune_bias=True)
    fc1 = report["layers"]["fc1.weight"]
    assert (fc1["kind"], fc1["removed"], fc1["total"]) == ("weights", 8335, 10080)
    assert fc1["fraction"] > 0.8  # the ties at -2000: more than the nominal 80% goes
    assert int((model.fc1.weight == 0).sum()) >= 8335
    assert accuracy(model, x, y) == pytest.approx(97.85, abs=1e-9)
    recover(opt, model)
    assert accuracy(model, x, y) == pytest.approx(98.61, abs=1e-9)


def test_official_state_is_what_our_end_epoch_computes():
    """Their last update_prune_order ran after epoch index 59 on the saved weights: ours, run
    again on the same weights, must give the same record, order and w_star."""
    model, opt = load_official(shared_file(CKPT))
    g = opt.param_groups[0]
    assert (g["kappa"], g["mu"], g["momentum"], g["weight_decay"]) == (1.0, 20.0, 0.9, 0.0)
    assert opt.tracked_names() == ["conv1.weight", "conv2.weight", "conv3.weight", "fc1.weight", "fc2.weight"]
    saved = {
        n: {k: opt.state[p][k].clone() for k in ("epoch_record", "prune_order", "w_star")}
        for n, p in opt.named_parameters()
        if "z_buffer" in opt.state[p]
    }
    assert saved["conv3.weight"]["epoch_record"].shape == (120,)
    opt.end_epoch(59)
    for n, p in opt.named_parameters():
        if n in saved:
            st = opt.state[p]
            assert torch.equal(st["epoch_record"], saved[n]["epoch_record"]), n
            assert torch.equal(st["w_star"], saved[n]["w_star"]), n
            assert torch.allclose(st["prune_order"], saved[n]["prune_order"], atol=1e-5, rtol=0), n


def test_official_optimizer_round_trips_and_keeps_training():
    model, opt = load_official(shared_file(CKPT))
    again = SLBI(list(model.named_parameters()), lr=0.1)
    again.load_state_dict(opt.state_dict())
    assert again.param_groups[0]["lr"] == pytest.approx(1e-3) and again.param_groups[0]["mu"] == 20
    x = torch.rand(16, 1, 28, 28)
    loss = torch.nn.functional.nll_loss(model(x), torch.arange(16) % 10)
    loss.backward()
    z = opt.state[model.fc1.weight]["z_buffer"].clone()
    opt.step()
    assert not torch.equal(opt.state[model.fc1.weight]["z_buffer"], z)


def test_not_a_checkpoint_is_a_user_error(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(UserError, match="cannot read DessiLBI checkpoint"):
        load_official(junk)
    other = tmp_path / "other.pth"
    torch.save({"model": {"w": torch.zeros(1)}}, other)
    with pytest.raises(UserError, match="not an official DessiLBI checkpoint"):
        load_official(other)
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "optimizer": {"state": {}, "param_groups": [{"params": []}]}}, wrong)
    with pytest.raises(UserError, match="do not fit the DessiLBI LeNet"):
        load_official(wrong)
    with pytest.raises(UserError, match="no such checkpoint"):
        load_official(tmp_path / "missing.pth")
