import pytest

from cifarlab.config import Config, from_dict, load_config, parse_overrides
from cifarlab.errors import UserError


def test_defaults_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: x\nmodel: {name: VGG_A}\noptim: {lr: 0.01}\n")
    cfg = load_config(str(f), ["optim.lr=0.5", "train.epochs=3", "augment.hflip=true", "optim.betas=[0.8, 0.9]"])
    assert cfg.name == "x" and cfg.model.name == "VGG_A"
    assert cfg.optim.lr == 0.5 and cfg.train.epochs == 3 and cfg.augment.hflip is True
    assert cfg.optim.betas == [0.8, 0.9]
    assert cfg.data.batch_size == Config().data.batch_size  # untouched default


def test_one_set_with_several_assignments():
    assert parse_overrides(["a=1 b.c=x"]) == {"a": 1, "b": {"c": "x"}}


def test_int_accepted_for_float_but_not_reverse():
    assert from_dict(Config, {"optim": {"lr": 1}}).optim.lr == 1.0
    assert load_config(None, ["optim.lr=1e-3"]).optim.lr == 1e-3  # YAML reads 1e-3 as a string
    with pytest.raises(UserError, match="optim.lr"):
        from_dict(Config, {"optim": {"lr": "fast"}})
    with pytest.raises(UserError, match="train.epochs"):
        from_dict(Config, {"train": {"epochs": 1.5}})


def test_on_off_settings_read_by_yaml_as_booleans():
    # YAML 1.1 reads `off` as False: `--set train.amp=off` must still mean "off"
    cfg = load_config(None, ["train.amp=off", "train.channels_last=on"])
    assert cfg.train.amp == "off" and cfg.train.channels_last == "on"


@pytest.mark.parametrize(
    "data,needle",
    [
        ({"optim": {"lrr": 0.1}}, "unknown key 'optim.lrr'"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"train": {"epochs": "ten"}}, "'train.epochs' must be int"),
        ({"augment": {"hflip": "yes"}}, "'augment.hflip' must be bool"),
        ({"model": 3}, "'model' must be a mapping"),
    ],
)
def test_bad_config_names_the_key(data, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        from_dict(Config, data)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(str(bad))


def test_presets_all_load():
    from cifarlab.config import preset_dirs

    files = sorted((preset_dirs()[0] / "train").glob("*.yaml"))
    assert len(files) >= 10
    for f in files:
        load_config(str(f))  # raises on any unknown key or wrong type
    assert load_config("quick").name == "quick"  # preset names resolve
