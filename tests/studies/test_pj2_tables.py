"""pj2's own tables from hand-written study summaries (no training): the final test accuracy leads,
a best epoch says it was chosen on test, differences within the seed spread are marked."""

import json

from cifarlab.studies.pj2 import bn_rows, dessilbi_groups
from cifarlab.sweeps import load_sweep


def test_bn_rows_lead_with_the_final_accuracy_of_the_best_lr(tmp_path):
    runs = [
        {"model": "vgg", "lr": 1e-3, "final_test_acc": 0.80, "best_test_acc": 0.85},
        {"model": "vgg", "lr": 1e-4, "final_test_acc": 0.82, "best_test_acc": 0.83},
    ]
    (tmp_path / "summary.json").write_text(json.dumps({"runs": runs}))
    (row,) = bn_rows(tmp_path)
    assert row["final_test_acc"] == 0.82 and row["lr"] == 1e-4 and row["best_test_acc"] == 0.85


def test_dessilbi_groups_give_mean_std_over_seeds_and_mark_the_spread():
    rows = []
    for opt, accs in (("slbi", [98.0, 99.0]), ("momentum", [98.2, 98.8]), ("slbi_adam", [90.0, 90.2])):
        for seed, acc in enumerate(accs):
            r = {"run": f"lenet-{opt}-seed{seed}", "model": "LeNet", "optimizer": opt, "test_acc": acc}
            rows.append({**r, "stalled": False, "pruned": "conv3.weight at 80%", "pruned_acc": acc - 1, "removed": ""})
    g = {x["optimizer"]: x for x in dessilbi_groups(rows)}
    assert g["slbi"]["n"] == 2 and g["slbi"]["test_acc"] == "98.50 ± 0.71" and g["slbi"]["vs_best"] == "best"
    assert g["momentum"]["vs_best"] == "+0.00 (≈ within seed spread)"
    assert g["slbi_adam"]["vs_best"] == "-8.40"


def test_a_sweep_says_once_that_pj2_overrides_its_variants(capsys):
    load_sweep("resnet50_anchors", ["model.width=0.25", "train.epochs=1"])  # what pj2's plan loads
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "cifarlab: note: sweep resnet50_anchors: --set model.width, train.epochs replaces the variants' own "
        "values: half_width (model.width=0.5, train.epochs=75)"
    ]
