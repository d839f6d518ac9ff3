import pytest

from echoes.config import load_config
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


def test_yaml_merge_keys_may_be_overridden_but_keys_not_repeated(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("model: {<<: {name: gru, hidden_size: 8}, hidden_size: 16}\n")  # `<<` then an override: fine
    cfg = load_config(f)
    assert cfg.model.name == "gru" and cfg.model.options() == {"hidden_size": 16}
    f.write_text("model: {name: gru}\nseed: 1\nseed: 2\n")
    with pytest.raises(EchoesError, match="key 'seed' is given twice"):
        load_config(f)
