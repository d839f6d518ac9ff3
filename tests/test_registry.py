"""The registries: typed options checked in one place, discoverable options, plugins by entry point."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
from pydantic import Field

from echoes.cli import main, stopped_early
from echoes.config import ExperimentConfig
from echoes.errors import EchoesError
from echoes.models import MODELS, Options
from echoes.registry import Registry, load_entry_point
from echoes.run import Metric, RunResult

README = Path(__file__).resolve().parents[1] / "README.md"


# The option-type cases of the hardening issue (units=abc, hidden_size=-4, ...) are rows of tests/test_bad_input.py.
@pytest.mark.parametrize(("override", "message"), [
    ("model.pooling=maxx", r"model.pooling must be one of last, mean, last_mean, times, got 'maxx' .* did you mean"),
    ("data.n_train=abc", r"data.n_train must be an integer, got 'abc' \(data source 'synthetic'\)"),
    ("model.unitz=5", r"model 'esn' has no option 'unitz' — did you mean 'units'\?"),
])
def test_bad_options_are_one_line_errors_before_anything_runs(override, message, run_dir, capsys):
    assert main(["train", "model=esn", "data=synthetic:motion", "tracking=false", override]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1, err
    assert not (run_dir / "echoes-runs").exists()  # nothing started


@pytest.mark.parametrize(("override", "message"), [
    ("learner.alpha=1", r"learner 'gradient' has no option 'alpha'"),  # the model's own learner, resolved
])
def test_options_of_gradient_models_are_checked_too(override, message, run_dir, capsys):
    assert main(["train", "model=lstm", "tracking=false", override]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_cross_option_rule_is_one_line():
    with pytest.raises(EchoesError, match=r"model 'transformer': d_model \(10\) must be even and divisible by nhead"):
        MODELS.check("transformer", {"d_model": 10, "nhead": 4})


def test_variants_are_defaults_of_one_family():
    esn, deep = MODELS.entry("esn"), MODELS.entry("deep_esn")
    assert esn.options is deep.options and esn.builder is deep.builder
    assert dict(MODELS.check("deep_esn", {}))["units"] == 300 and dict(MODELS.check("esn", {}))["units"] == 500
    assert dict(MODELS.check("esn_ensemble", {"units": 20}))["members"] == 5


def test_a_builder_taking_kwargs_must_declare_its_options():
    reg = Registry("thing", "thing", [], group="echoes.test-none")
    with pytest.raises(TypeError, match="must declare options"):
        reg.register("loose")(lambda **kwargs: kwargs)

    class LooseOptions(Options):
        size: int = Field(3, ge=1)

    reg.register("typed", options=LooseOptions)(lambda **kwargs: kwargs)
    assert reg.build("typed", size=4) == {"size": 4}
    with pytest.raises(EchoesError, match="thing.size must be an integer >= 1"):
        reg.build("typed", size=0)


def test_cli_lists_models_learners_and_sources_with_their_options(capsys):
    assert main(["models", "esn"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"units\s+500\s+an integer\s+reservoir neurons \(per layer\) \(>= 1\)", out)
    assert re.search(r"pooling\s+last_mean\s+one of last, mean, last_mean, times", out)
    assert "learner: ridge" in out
    assert main(["models", "deep_esn"]) == 0
    assert re.search(r"units\s+300\s", capsys.readouterr().out)  # the variant's own default
    assert main(["learners"]) == 0
    out = capsys.readouterr().out
    assert {"eprop", "gradient", "ridge"} <= {line.split()[0] for line in out.splitlines()}
    assert main(["learners", "ridge"]) == 0
    assert re.search(r"alpha\s+null\s+a number or null\s+a fixed λ", capsys.readouterr().out)
    assert main(["datasets", "ucf101"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"frames\s+16\s+an integer\s+frames per clip", out) and "data.NAME=VALUE" in out
    assert main(["models", "lsm"]) == 2
    assert "did you mean 'lstm'" in capsys.readouterr().err


def test_early_stopping_is_reported_from_the_result():
    cfg = ExperimentConfig.model_validate({"train": {"epochs": 30}})

    def result(epochs, best):
        return RunResult("lstm", "lstm", "gradient", "recurrent", "synthetic:motion", 0,
                         {Metric.EPOCHS: epochs, Metric.BEST_EPOCH: best}, config=cfg)

    assert stopped_early(result(19, 9)) == "stopped early at epoch 19, best epoch 9 restored"
    assert stopped_early(result(30, 12)) is None  # ran every epoch
    assert stopped_early(result(1, None)) is None  # closed-form learners have no best epoch


# --- loading: all or nothing, plugins by entry point ------------------------------------------


def test_a_family_that_fails_to_import_is_named_on_every_lookup(tmp_path, monkeypatch):
    (tmp_path / "fine_family.py").write_text("VALUE = 1\n")
    (tmp_path / "broken_family.py").write_text("import math\n\nx = math.tau\ny = undefined_name + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg = Registry("model", "model", ["fine_family", "broken_family"], group="echoes.test-none")
    for _ in range(2):  # not marked loaded after a failure: never a partial registry
        with pytest.raises(EchoesError, match=r"cannot load broken_family \(.*broken_family.py:4\): NameError: "
                                              r"name 'undefined_name' is not defined"):
            reg.names()
    with pytest.raises(EchoesError, match="broken_family"):
        reg.get("anything")  # not a misleading "did you mean"


def test_a_broken_plugin_names_its_entry_point(tmp_path, monkeypatch):
    (tmp_path / "bad_plugin.py").write_text("raise RuntimeError('needs a GPU driver')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="bad", value="bad_plugin", group="echoes.models")
    with pytest.raises(EchoesError, match=r"cannot load plugin 'bad = bad_plugin' \(.*bad_plugin.py:1, entry point "
                                          r"group echoes.models\): RuntimeError: needs a GPU driver"):
        load_entry_point(ep)


def readme_plugin() -> str:
    """The one-file model of the README's "Add your own model" section."""
    section = README.read_text().split("### Add your own model", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_plugin_is_found_through_its_entry_point(tmp_path, tiny_npz):
    """An installed package (a real dist-info with entry_points.txt on sys.path) registers a model."""
    (tmp_path / "tiny_gru.py").write_text(readme_plugin())
    info = tmp_path / "tiny_gru-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-gru\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text('[echoes.models]\ntiny_gru = tiny_gru\n')
    script = textwrap.dedent(f"""
        from echoes.cli import main
        assert main(["models"]) == 0
        assert main(["models", "tiny_gru"]) == 0
        assert main(["train", "model=tiny_gru", "model.hidden_size=abc", "tracking=false"]) == 2
        assert main(["train", "model=tiny_gru", "model.hidden_size=6", "data=npz:{tiny_npz}", "tracking=false",
                     "train.epochs=1"]) == 0
    """)
    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(src)])}
    p = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr
    assert re.search(r"\ntiny_gru\s+A one-layer GRU read out at the last valid step", p.stdout)
    assert re.search(r"hidden_size\s+16\s+an integer\s+GRU units \(>= 1\)", p.stdout)
    assert "model.hidden_size must be an integer >= 1, got 'abc' (model 'tiny_gru')" in p.stderr
    assert "model tiny_gru (recurrent, learner gradient)" in p.stdout
