"""analysis/registry.py: an analysis registered here (this module is all it takes) is listed by
`cifarlab inspect --help` with its flag, runs as `cifarlab inspect RUN mean_weight --scale 3`, is
captioned in the report and runs in pj2; the built-in analyses keep their flags and defaults."""

import html
import json
from dataclasses import dataclass

import pytest
from conftest import make_image_folder, train_tiny_run

from cifarlab.analysis import registry
from cifarlab.analysis.plotting import figure, save_figure
from cifarlab.analysis.registry import option, register
from cifarlab.cli import build_parser, main
from cifarlab.errors import UserError
from cifarlab.train.checkpoint import load_model

CAPTION = "The mean of each weight tensor of the network, times --scale."


@dataclass
class MeanWeightOptions:
    scale: float = option(1.0, "multiply the means by this")


def mean_weight(s, o: MeanWeightOptions, out):
    means = {name: o.scale * p.detach().mean().item() for name, p in s.model.named_parameters() if p.ndim > 1}
    fig = figure(4, 3)
    fig.add_subplot(1, 1, 1).bar(range(len(means)), list(means.values()))
    return {
        "layers": list(means),
        "means": list(means.values()),
        "figures": [str(save_figure(fig, out / "mean_weight"))],
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """plainnet trained one epoch on a two-class image folder."""
    root = tmp_path_factory.mktemp("registry")
    yield train_tiny_run(root, make_image_folder(root / "imgs"), epochs=1)


@pytest.fixture(autouse=True)
def cache(run, monkeypatch):
    monkeypatch.setenv("CIFARLAB_CACHE", str(run.parent / "cache"))


@pytest.fixture
def registered():
    register(
        "mean_weight",
        MeanWeightOptions,
        describe=lambda res, classes: f"{len(res['layers'])} weight tensors",
        captions={"mean_weight": CAPTION},
    )(mean_weight)
    yield registry.get("mean_weight")
    registry.unregister("mean_weight")


def own_means(run, scale):
    model, _ = load_model(run / "best.pt")
    return [scale * p.mean().item() for p in model.parameters() if p.ndim > 1]


def test_a_registered_analysis_is_in_the_command_its_flags_and_the_report(run, tmp_path, capsys, registered):
    with pytest.raises(SystemExit) as e:
        main(["inspect", "--help"])
    assert e.value.code == 0
    help = " ".join(capsys.readouterr().out.split())
    assert "mean_weight, all;" in help and "--scale SCALE multiply the means by this (default 1.0)" in help

    assert main(["inspect", str(run), "mean_weight", "--scale", "3"]) == 0
    where = run / "analysis" / "mean_weight"
    assert capsys.readouterr().out == f"mean_weight: {len(own_means(run, 1.0))} weight tensors -> {where}\n"
    res = json.loads((where / "result.json").read_text())
    assert res["analysis"] == "mean_weight" and res["checkpoint"] == str(run / "best.pt")
    assert res["means"] == pytest.approx(own_means(run, 3.0), rel=1e-6)

    assert main(["report", str(run), "--out", str(tmp_path / "report.html")]) == 0
    page = html.unescape((tmp_path / "report.html").read_text())
    assert "mean_weight/" in page and f"<figcaption>{CAPTION}<" in page


def test_pj2_runs_a_registered_analysis_with_its_options(run, tmp_path, registered):
    from cifarlab.studies.pj2 import load_pj2_config, run_analysis

    cfg = load_pj2_config(
        "smoke", overrides=["analyses.names=[filters,mean_weight]", "analyses.options.mean_weight.scale=2"]
    )
    run_analysis(run, "mean_weight", tmp_path / "mw", cfg.analyses, "cpu")
    res = json.loads((tmp_path / "mw" / "result.json").read_text())
    assert res["means"] == pytest.approx(own_means(run, 2.0), rel=1e-6)
    with pytest.raises(UserError, match="analyses.options.mean_weight takes scale; got 'shift'"):
        load_pj2_config("smoke", overrides=["analyses.options.mean_weight.shift=2"])
    with pytest.raises(UserError, match="unknown analysis 'trajectory' in analyses.names"):
        load_pj2_config("smoke", overrides=["analyses.names=[trajectory]"])  # it needs epoch checkpoints


def test_an_unregistered_analysis_is_gone(run, tmp_path, capsys):
    assert registry.get("mean_weight") is None
    assert main(["inspect", str(run), "mean_weight", "--out", str(tmp_path)]) == 2
    assert "unknown analysis 'mean_weight'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["inspect", str(run), "filters", "--scale", "3"])


def test_a_shared_option_must_be_of_one_kind():
    @dataclass
    class Odd:
        n: str = option("all")  # --n is an int for landscape, hessian, probes, ...

    with pytest.raises(TypeError, match="option 'n'"):
        register("odd", Odd)(lambda s, o, out: {})
    assert registry.get("odd") is None


def parse(*args):
    a = build_parser().parse_args(["inspect", "RUN", "landscape", *args])
    return {k: v for k, v in vars(a).items() if k in registry.declared()}


# the flags, and each analysis' defaults, as `cifarlab inspect` had them before the registry
FLAGS = (
    "data device batch_size seed layer kernel_mode n_images methods target n split bn chunk method amp dims grid "
    "norm include_biasbn shard merge hessian_grid hessian_n iters other steps margin k trace_samples etas"
).split()
DEFAULTS = {
    "filters": {"layer": None, "kernel_mode": "mean"},
    "features": {"layer": None, "n_images": 4},
    "gradcam": {"layer": None, "n_images": 16, "methods": "all", "target": None, "batch_size": 500},
    "metrics": {"batch_size": 500},
    "landscape": {
        "n": 10000,
        "split": "train",
        "seed": None,
        "batch_size": 500,
        "bn": "eval",
        "chunk": 8,
        "method": "auto",
        "amp": False,
        "dims": 2,
        "grid": "-1:1:51",
        "norm": "filter",
        "include_biasbn": False,
        "shard": None,
        "merge": None,
        "hessian_grid": None,
        "hessian_n": 1000,
        "iters": 100,
    },
    "interpolate": {"n": 10000, "grid": "-0.5:1.5:41", "other": None, "bn": "eval"},
    "trajectory": {"n": 10000, "steps": 21, "margin": 0.3, "include_biasbn": False, "bn": "eval"},
    "hessian": {"n": 1000, "split": "train", "k": 3, "iters": 100, "trace_samples": 50, "batch_size": 500},
    "probes": {"n": None, "bn": "train", "etas": None, "batch_size": 500},
}


def test_builtin_analyses_keep_their_flags_and_defaults():
    assert sorted(registry.declared()) == sorted(FLAGS)
    assert registry.names() == tuple(DEFAULTS)
    assert [a.name for a in registry.in_all()] == ["filters", "features", "gradcam", "metrics", "landscape"]
    for name, defaults in DEFAULTS.items():
        opts = vars(registry.get(name).make_options({}))
        assert {k: opts[k] for k in defaults} == defaults, name
    coarse = registry.get("landscape").make_options({"n": 64}, in_all=True)
    assert (coarse.grid, coarse.n) == ("-1:1:11", 64)
    assert registry.get("landscape").folder(in_all=True) == "landscape-coarse"
    assert parse() == {}  # a flag not given leaves each analysis its own default
    given = parse("--layer", "a", "--layer", "b,c", "--hessian-grid", "--include-biasbn", "--grid", "-1:1:3")
    assert given == {"layer": ["a", "b,c"], "hessian_grid": "-1:1:5", "include_biasbn": True, "grid": "-1:1:3"}
    assert parse("--n", "7", "--margin", "0.5", "--batch-size", "8") == {"n": 7, "margin": 0.5, "batch_size": 8}
