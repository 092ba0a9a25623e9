"""The report's numbers from hand-written folders (no training): each model of a study its own final
test accuracy in the overview, a run's scorecard, and thousands separators in CSV tables."""

import json

from cifarlab.report.build import overview
from cifarlab.report.scan import csv_table, scan


def test_each_model_of_a_study_has_its_own_overview_row(tmp_path):
    study = tmp_path / "task3_dessilbi"
    study.mkdir()
    runs = [  # LeNet runs written before the study named their model: found by their part
        {"part": "lenet", "run": "lenet-slbi-seed1", "final_test_acc": 13.0, "best_test_acc": 13.0},
        {"part": "lenet", "run": "lenet-momentum-seed1", "final_test_acc": 11.0, "best_test_acc": 12.0},
        {"part": "vgg", "model": "VGG_A_BatchNorm", "final_test_acc": 10.5, "best_test_acc": 11.0},
    ]
    (study / "summary.json").write_text(json.dumps({"study": "dessilbi", "runs": runs, "seconds": 3.0}))
    table = overview(scan(tmp_path))
    col = table.columns.index("final test accuracy")
    rows = {r[table.columns.index("model")]: r[col] for r in table.rows}
    assert rows == {"LeNet": "13.00%", "VGG_A_BatchNorm": "10.50%"}


def test_a_run_shows_final_accuracy_first_and_its_scorecard(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    summary = {
        "final_test_acc": 0.91,
        "best_test_acc": 0.92,
        "train_seconds": 75.0,
        "params": 176402,
        "macs_per_image": 556_000_000,
        "images_per_s": 1234.5,
        "peak_memory_mb": 812.0,
    }
    (run / "summary.json").write_text(json.dumps(summary))
    sec = scan(run)
    stats = dict(sec.stats)
    assert sec.stats[0] == ("final test acc", "91.00%") and stats["best test acc (chosen on test)"] == "92.00%"
    assert stats["parameters"] == "176,402" and stats["FLOPs / image"] == "0.56 G multiply-adds"
    assert stats["images / s"] == "1,234" and stats["peak memory"] == "812 MB"
    assert overview(sec).rows[0][6] == "91.00%"


def test_csv_cells_have_thousands_separators(tmp_path):
    p = tmp_path / "results.csv"
    p.write_text("seed,total,params,macs_per_image\n12345,176402,176402,556000000\n")
    t = csv_table(p)
    assert t.rows == [["12345", "176,402", "176,402", "0.56 G"]]
    assert t.columns[-1] == "FLOPs/image (multiply-adds)"
