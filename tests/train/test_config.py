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


def test_compose_is_preset_then_overrides_in_turn(tmp_path):
    from cifarlab.config import compose, compose_dict, to_dict

    # dotted and nested keys mean the same; a later override wins; a dict base works like a preset
    cfg = compose("quick", {"optim.lr": 0.5, "train": {"epochs": 2}}, {"train.epochs": 3, "model.args": {"a": 1}})
    assert cfg.optim.lr == 0.5 and cfg.train.epochs == 3 and cfg.model.args == {"a": 1}
    assert to_dict(cfg) == to_dict(load_config("quick", ["optim.lr=0.5", "train.epochs=3", "model.args={a: 1}"]))
    base = compose_dict("quick", {"optim.lr": 0.5})
    assert to_dict(compose(base, {"train.epochs": 3, "model.args.a": 1})) == to_dict(cfg)
    assert compose(None).optim.lr == Config().optim.lr
    with pytest.raises(UserError, match="presets: "):
        compose("no_such_preset")
    with pytest.raises(UserError, match="conflicts"):
        compose(None, {"optim": 1, "optim.lr": 0.5})


def test_flatten_keeps_empty_and_whole_mappings():
    from cifarlab.config import flatten, nest

    d = {"model": {"name": "x", "args": {"a": {"b": 1}}}, "e": {}}
    assert flatten(d) == {"model.name": "x", "model.args.a.b": 1, "e": {}}
    assert flatten(d, whole=("args",)) == {"model.name": "x", "model.args": {"a": {"b": 1}}, "e": {}}
    assert nest(flatten(d)) == d


def test_choices_and_ranges_are_declared_on_the_fields_and_checked_in_one_pass():
    from cifarlab.config import AugmentConfig, TrainConfig, check, choices

    assert choices(TrainConfig, "tta") == ("none", "flip", "multiview")
    check(Config())
    with pytest.raises(UserError, match=r"unknown train.tta 'flipp'; choose from: none, flip, multiview"):
        check(from_dict(Config, {"train": {"tta": "flipp"}}))
    with pytest.raises(UserError, match=r"'train.tta' must be str"):
        from_dict(Config, {"train": {"tta": 3}})
    with pytest.raises(UserError, match=r"optim.betas\[1\]=1.0 is out of range; allowed: in \[0, 1\)"):
        check(from_dict(Config, {"optim": {"betas": [0.9, 1.0]}}))
    with pytest.raises(UserError, match=r"augment.mix_prob=1.5 is out of range; allowed: in \[0, 1\]"):
        check(AugmentConfig(mix_prob=1.5), "augment.")
    with pytest.raises(UserError, match="augment.crop_mode 'wrap'"):
        check(AugmentConfig(crop_mode="wrap"), "augment.")
