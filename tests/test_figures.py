"""Figure behaviour: integer epoch ticks, plain log labels, 'lr = ' legends, the stalled-VGG note."""

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg

from cifarlab.report.curves import curves_figure
from cifarlab.studies.dessilbi_figures import plot_vgg, vgg_note
from cifarlab.sweeps.figures import _label, per_axis_figure


def _visible_ticks(ax):
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


def test_one_epoch_curve_has_integer_ticks():
    fig = curves_figure([{"epoch": 1, "train_loss": 2.3, "train_acc": 0.1, "test_acc": 0.12, "lr": 0.1}])
    for ax in fig.axes:
        ticks = _visible_ticks(ax)
        assert ticks == [1.0], ticks


def test_log_loss_axis_has_plain_labels():
    hist = [{"epoch": e, "train_loss": 10.0**-e, "train_acc": 0.5, "lr": 0.1} for e in range(1, 6)]
    fig = curves_figure(hist)
    FigureCanvasAgg(fig).draw()
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()] + [
        t.get_text() for t in fig.axes[0].get_yticklabels(minor=True)
    ]
    assert any(labels) and not any("times" in s or "^" in s for s in labels), labels


def test_sweep_labels_name_the_axis():
    assert _label({"optim.lr": "0.3", "config_id": "c"}, ["optim.lr"]) == "lr = 0.3"
    rows = [{"optim.lr": "0.3", "status": "done", "final_test_acc": 0.5}]
    fig = per_axis_figure(rows, ["optim.lr"], "final_test_acc")
    assert fig._suptitle.get_text().startswith("final_test_acc\n")


def test_stalled_vgg_figure_says_why(tmp_path: Path):
    run = {
        "model": "VGG_A_Light",
        "stalled": True,
        "final_test_acc": 10.0,
        "history": {"epoch": [1], "test_acc": [0.1], "train_acc": [0.1]},
    }
    assert "stalled at chance" in vgg_note(run)
    plot_vgg(tmp_path, None, run, [])
    assert (tmp_path / "vgg_pruning.png").is_file()
