"""--set, --data, presets and --version: the same meaning for every subcommand, from any folder."""

import pytest
from conftest import SHARED, make_image_folder, shared_file

from cifarlab import __version__
from cifarlab.cli import build_parser, main
from cifarlab.cli.options import overrides
from cifarlab.config import find_preset, load_config, parse_overrides
from cifarlab.data.sources import resolve_source
from cifarlab.errors import UserError


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "quick", "--set", "data.n_items=256", "train.epochs=1"],  # as argparse users write it
        ["train", "quick", "--set", "data.n_items=256 train.epochs=1"],  # one quoted string
        ["train", "quick", "--set", "data.n_items=256", "--set", "train.epochs=1"],  # the repeated flag
        ["train", "--set", "data.n_items=256", "train.epochs=1", "quick"],  # the config after --set's values
    ],
)
def test_set_takes_several_assignments_in_every_spelling(argv):
    a = build_parser().parse_args(argv)
    sets = overrides(a, "config")
    assert a.config == "quick"
    assert parse_overrides(sets) == {"data": {"n_items": 256}, "train": {"epochs": 1}}
    cfg = load_config(a.config, sets)
    assert (cfg.data.n_items, cfg.train.epochs) == (256, 1)


def test_every_study_command_takes_several_assignments():
    for argv in (
        ["pj2", "--scale", "smoke", "--set", "a=1", "b=2"],
        ["bn-study", "--set", "a=1", "b=2"],
        ["dessilbi", "--set", "a=1", "b=2"],
        ["sweep", "ablation_lr", "--set", "a=1", "b=2"],
    ):
        assert overrides(build_parser().parse_args(argv)) == ["a=1", "b=2"], argv


def test_a_word_without_equals_is_one_clear_error(capsys):
    assert main(["sweep", "ablation_lr", "--set", "a=1", "oops", "--dry-run"]) == 2
    assert "--set expects key=value, got 'oops'" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"cifarlab {__version__}"


def test_presets_come_with_the_package_and_a_local_folder_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the checkout: the shipped presets are still found
    shipped = find_preset("quick", "train")
    assert shipped.is_file() and "cifarlab" in shipped.parts and load_config("quick").name == "quick"
    assert find_preset("grid_resvgg16_24", "sweeps").is_file() and find_preset("pj2_smoke", "studies").is_file()
    (tmp_path / "configs" / "train").mkdir(parents=True)
    (tmp_path / "configs" / "train" / "quick.yaml").write_text("name: my-quick\n")
    assert load_config("quick").name == "my-quick"  # the user's own configs/ comes first
    with pytest.raises(UserError, match="not found"):
        find_preset("no-such-preset", "train")


def test_data_folder_of_sources_means_what_cifarlab_data_means(tmp_path, monkeypatch):
    shared_file("cifar10-jpeg.tar.gz")
    assert resolve_source(str(SHARED), "cifar10") == str((SHARED / "cifar10-jpeg.tar.gz").resolve())
    assert resolve_source(str(SHARED), "mnist") == str((SHARED / "mnist").resolve())
    assert resolve_source("cifar10") == "cifar10"  # a name stays a name
    folder = make_image_folder(tmp_path / "imgs", n_train=2, n_test=2)
    monkeypatch.chdir(tmp_path)
    assert resolve_source("imgs") == str(folder.resolve())  # a single source, stored absolute
    (tmp_path / "empty" / "notes").mkdir(parents=True)
    with pytest.raises(UserError, match="holds no mnist data"):
        resolve_source(str(tmp_path / "empty"), "mnist")


def test_resume_without_out_is_one_line(capsys):
    assert main(["train", "quick", "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--resume needs --out" in err
