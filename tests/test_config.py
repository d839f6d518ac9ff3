import pytest

from echoes.config import load_config, parse_overrides
from echoes.errors import EchoesError


def test_overrides_parse_types_and_shorthands():
    cfg = load_config(None, ["model=gru", "model.hidden_size=16", "data=uea:GunPoint", "train.lr=1e-3",
                             "train.epochs=7", "tracking=false", "learner=gradient", "seed=3"])
    assert cfg.model.name == "gru" and cfg.model.options() == {"hidden_size": 16}
    assert cfg.data.source == "uea:GunPoint"
    assert cfg.train.lr == pytest.approx(1e-3) and cfg.train.epochs == 7
    assert cfg.tracking.enabled is False and cfg.learner.name == "gradient" and cfg.seed == 3


def test_yaml_file_then_overrides(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("model: {name: lstm, hidden_size: 8}\ntrain: {epochs: 2}\n")
    cfg = load_config(f, ["model.hidden_size=32"])
    assert cfg.model.name == "lstm" and cfg.model.options()["hidden_size"] == 32 and cfg.train.epochs == 2


def test_unknown_key_suggests_closest():
    with pytest.raises(EchoesError, match=r"unknown config key 'train.epoch' — did you mean 'epochs'"):
        load_config(None, ["train.epoch=3"])


def test_wrong_type_names_the_key():
    with pytest.raises(EchoesError, match=r"train.epochs.*'ten'"):
        load_config(None, ["train.epochs=ten"])


def test_override_without_equals():
    with pytest.raises(EchoesError, match="KEY=VALUE"):
        parse_overrides(["train.epochs"])


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(EchoesError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(EchoesError, match="not valid YAML"):
        load_config(bad)
