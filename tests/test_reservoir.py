"""Echo state networks: reservoir properties, the batched harvest, readout features, training."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from echoes.api import train
from echoes.config import load_config
from echoes.errors import EchoesError
from echoes.models import create_model
from echoes.models.reservoir import eigenvalues, make_layer, radius_scale

SMALL = dict(units=60, connectivity=0.2)
FIXED = dict(leak_rate=0.1, spectral_radius=0.9, input_scaling=None)  # the settings `auto` builds before tuning


def esn(name="esn", f=3, c=2, **kw):
    """A small reservoir, fixed settings unless ``kw`` says otherwise (the default, ``auto``, is tuned by ridge)."""
    return create_model(name, input_size=f, num_classes=c, **{**SMALL, **FIXED, **kw})


def reference_states(model, x):
    """Every layer's states for one sequence x [T, F], stepped one at a time in float64 NumPy."""
    out, z = [], x.astype(np.float64)
    for layer in model.members[0]:
        w_in, w, b = (t.double().numpy() for t in (layer.w_in, layer.w, layer.bias))
        h, states = np.zeros(layer.units), []
        for u in z:
            h = (1 - layer.leak_rate) * h + layer.leak_rate * np.tanh(w_in @ u + w @ h + b)
            states.append(h)
        z = np.array(states)
        out.append(z)
    return out


def batch(seed=0, n=5, t=14, f=3):
    """Variable lengths (1 included) and junk, not zeros, on the padded steps."""
    rng = np.random.default_rng(seed)
    lengths = np.array([t, 1, 6, t - 1, 3][:n])
    x = rng.standard_normal((n, t, f)).astype(np.float32)
    junk = np.arange(t)[None, :] >= lengths[:, None]
    x[junk] = 50 * rng.standard_normal((int(junk.sum()), f))
    return torch.from_numpy(x), torch.from_numpy(lengths)


def test_echo_state_property_forgets_the_initial_state():
    layer = esn(units=100).members[0][0]
    u = layer.drive(torch.randn(300, 3, 1))
    h_zero, h_rand = torch.zeros(100, 1), torch.rand(100, 1) * 2 - 1
    a = layer.run(u.clone(), h_zero, [1] * 300)
    b = layer.run(u.clone(), h_rand, [1] * 300)
    gap = (a - b).norm(dim=1).squeeze()
    assert gap[0] > 0.1 and gap[-1] < 1e-4 * gap[0]


@pytest.mark.parametrize("method", ["dense", "arpack"])
def test_spectral_radius_is_exact(method):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 300)) * (rng.random((300, 300)) < 0.1)
    scaled = w * radius_scale(eigenvalues(w, method), 0.9)
    assert np.abs(np.linalg.eigvals(scaled)).max() == pytest.approx(0.9, abs=1e-9)


@pytest.mark.parametrize("units, connectivity, seed", [(40, 0.3, 0), (120, 0.1, 1), (250, 0.05, 2), (400, 1.0, 3)])
def test_arpack_radius_matches_all_eigenvalues_and_is_deterministic(units, connectivity, seed):
    """The radius from ARPACK's largest-magnitude eigenvalues is numpy's (every eigenvalue) to 1e-9
    relative, and the same W always gives bit-identical eigenvalues (ARPACK starts from a fixed vector)."""
    layer = make_layer(2, units, rng=np.random.default_rng(seed), spectral_radius=1.0, connectivity=connectivity,
                       input_scaling=1.0, input_connectivity=1.0, bias_scaling=0.0, leak_rate=1.0,
                       activation="tanh", effective_radius=False, sparse=None, dtype=torch.float64)
    w = layer.w.numpy()  # dense float64 (the CSR copy is made for the step)
    assert np.abs(np.linalg.eigvals(w)).max() == pytest.approx(1.0, rel=1e-9)
    first, again = eigenvalues(w, "arpack"), eigenvalues(w.copy(), "arpack")
    assert len(first) == 8 and np.array_equal(first, again)
    assert np.abs(first).max() == pytest.approx(np.abs(np.linalg.eigvals(w)).max(), rel=1e-9)


def test_model_reservoir_radius_and_effective_leaky_radius():
    w = esn(units=200, spectral_radius=1.1).members[0][0].w.double().numpy()
    assert np.abs(np.linalg.eigvals(w)).max() == pytest.approx(1.1, abs=1e-5)
    layer = make_layer(3, 200, rng=np.random.default_rng(1), spectral_radius=0.95, connectivity=0.1,
                       input_scaling=1.0, input_connectivity=1.0, bias_scaling=0.0, leak_rate=0.2,
                       activation="tanh", effective_radius=True, sparse=None, dtype=torch.float64)
    leaky = 0.8 * np.eye(200) + 0.2 * layer.w.numpy()
    assert np.abs(np.linalg.eigvals(leaky)).max() == pytest.approx(0.95, abs=1e-9)


def test_features_match_a_step_by_step_reference():
    model = esn("deep_esn", num_reservoirs=2, units=40, pooling="last_mean", washout=2, dtype="float64")
    x, lengths = batch()
    feats = model.features(x, lengths).double().numpy()
    for i, n in enumerate(lengths.tolist()):
        layers = reference_states(model, x[i, :n].numpy())
        start = min(2, n - 1)
        expect = np.concatenate([np.concatenate([s[-1], s[start:].mean(0)]) for s in layers])
        np.testing.assert_allclose(feats[i], expect, atol=1e-10)


def test_times_pooling_picks_evenly_spaced_states():
    model = esn(pooling="times", num_times=3, dtype="float64")
    x, lengths = batch()
    feats = model.features(x, lengths).double().numpy()
    for i, n in enumerate(lengths.tolist()):
        states = reference_states(model, x[i, :n].numpy())[0]
        picks = [int(np.ceil(n * (j + 1) / 3)) - 1 for j in range(3)]
        np.testing.assert_allclose(feats[i], states[picks].ravel(), atol=1e-10)


def _in_features(model):
    ro = model.readout
    return ro.in_features if hasattr(ro, "in_features") else sum(ro.sizes)


@pytest.mark.parametrize("kw", [dict(), dict(bidirectional=True, concat_input=True)])
def test_framewise_states_per_step_ignore_padding(kw):
    model = esn("deep_esn", num_reservoirs=2, framewise=True, **kw)
    x, lengths = batch()
    feats = model.features(x, lengths)
    assert feats.shape[:2] == x.shape[:2] and feats.shape[2] == _in_features(model)
    for i, n in enumerate(lengths.tolist()):
        alone = model.features(x[i:i + 1, :n], lengths[i:i + 1])
        torch.testing.assert_close(alone[0], feats[i, :n], atol=1e-5, rtol=1e-5)
    if not kw:  # forward states at step t are the states of the first t steps
        ref = reference_states(model, x[0].numpy())
        np.testing.assert_allclose(feats[0].numpy(), np.concatenate(ref, axis=1), atol=1e-5)


def test_sparse_and_dense_reservoirs_agree():
    x, lengths = batch()
    a = esn(units=250, connectivity=0.05, sparse=True)
    b = esn(units=250, connectivity=0.05, sparse=False)
    assert a.members[0][0].recurrent().layout == torch.sparse_csr
    torch.testing.assert_close(a.features(x, lengths), b.features(x, lengths), atol=1e-5, rtol=1e-5)


def test_seed_determines_the_reservoir():
    x, lengths = batch()
    a, b, c = esn(seed=3), esn(seed=3), esn(seed=4)
    assert torch.equal(a.features(x, lengths), b.features(x, lengths))
    assert not torch.equal(a.members[0][0].w, c.members[0][0].w)


def test_only_the_readout_is_trainable():
    model = esn("esn_ensemble", members=2)
    trainable, total = model.parameter_counts()
    assert trainable == 2 * (2 * 60 * 2 + 2)  # two readouts over last+mean of 60 units
    assert total == trainable + 2 * (60 * 60 + 60 * 3 + 60)
    assert all(p.requires_grad for p in model.parameters())
    assert {n.rsplit(".", 1)[-1] for n, _ in model.named_buffers()} == {"w_in", "w", "bias"}


@pytest.mark.parametrize("kw, message", [
    (dict(pooling="max"), "model.pooling must be one of last, mean, last_mean, times, got 'max'"),
    (dict(leak_rate=0.0), "leak_rate"),
    (dict(activation="tanhh"), "did you mean 'tanh'"),
    (dict(spectral_radius=0.5, leak_rate=0.3, effective_radius=True), "1 - leak_rate"),
    (dict(dtype="float16"), "model.dtype must be one of float32, float64"),
    (dict(connectivity=0.0), r"model.connectivity must be a number in \(0, 1\]"),
    (dict(units="abc"), "model.units must be an integer >= 1, got 'abc' .* e.g. model.units=500"),
])
def test_bad_hyperparameters_are_one_line_errors(kw, message):
    with pytest.raises(EchoesError, match=message):
        esn(**kw)


def _cfg(npz, *extra):
    return load_config(None, [f"data=npz:{npz}", "tracking=false", "model.units=100", *extra])


def test_ridge_and_gradient_both_train_the_esn_readout(run_dir, tiny_npz):
    ridge = train(_cfg(tiny_npz, "model=esn"))
    assert ridge["learner"] == "ridge" and ridge["epochs"] == 1 and ridge["ridge_alpha"] > 0
    assert ridge["test_accuracy"] >= 0.9  # chance 0.5: the first step's sign, kept to the end
    grad = train(_cfg(tiny_npz, "model=esn", "learner=gradient", "train.epochs=15", "train.lr=0.02"))
    assert grad["label"] == "esn+gradient" and grad["test_accuracy"] >= 0.8
    deep = train(_cfg(tiny_npz, "model=deep_esn", "model.num_reservoirs=2"))
    assert deep["family"] == "reservoir" and deep["test_accuracy"] >= 0.9


def test_cli_trains_esn_on_basic_motions(run_dir):
    p = subprocess.run([sys.executable, "-m", "echoes", "train", "model=esn", "data=uea:BasicMotions",
                        "--json", "r.json"], cwd=run_dir, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "learner ridge" in p.stdout
    r = json.loads((run_dir / "r.json").read_text())
    assert r["test_accuracy"] >= 0.8  # 4 classes
    assert r["ridge_alpha"] > 0 and r["mlflow_run_id"]
    import mlflow

    run = mlflow.MlflowClient(f"sqlite:///{run_dir}/echoes-runs/mlflow.db").get_run(r["mlflow_run_id"])
    assert run.data.metrics["ridge_alpha"] == pytest.approx(r["ridge_alpha"])


def test_import_sets_a_short_openmp_spin_unless_told_otherwise():
    code = "import os, echoes; print(os.environ.get('GOMP_SPINCOUNT'))"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}

    def spin(**chosen: str) -> str:
        out = subprocess.run([sys.executable, "-c", code], env={**env, **chosen}, capture_output=True, text=True)
        return out.stdout.strip()

    assert spin() == "10000"
    assert spin(GOMP_SPINCOUNT="500") == "500"
    assert spin(OMP_WAIT_POLICY="ACTIVE") == "None"


def _motion_like(n=40, t=12, f=3, seed=0):
    """Two classes: the sign of a slow drift in the first feature, under noise."""
    from echoes.data import Dataset, Sequences

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, t, f)).astype(np.float32)
    x[:, :, 0] += (2 * y[:, None] - 1) * np.linspace(0, 0.8, t)[None, :]
    seqs = Sequences(x, np.full(n, t), y)
    return Dataset("drift", seqs, seqs, seqs, ["a", "b"])


def test_retune_equals_a_fresh_build():
    """`auto` options are tuned by rescaling one draw in place: the same reservoir as building with the values."""
    x, lengths = batch()
    tuned = esn(leak_rate="auto", spectral_radius="auto", input_scaling="auto", seed=3)
    base = 1 / np.sqrt(3)
    assert tuned.tunable["leak_rate"] == (0.05, 0.2, 0.5, 1.0)
    np.testing.assert_allclose(tuned.tunable["input_scaling"], [0.5 * base, base, 2 * base])
    tuned.retune(leak_rate=0.5, spectral_radius=1.2, input_scaling=2 * base)
    fresh = esn(leak_rate=0.5, spectral_radius=1.2, input_scaling=2 * base, seed=3)
    assert not fresh.tunable
    for a, b in zip(tuned.members[0][0].buffers(), fresh.members[0][0].buffers(), strict=True):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(tuned.features(x, lengths), fresh.features(x, lengths))


def test_ridge_tunes_auto_options_by_leave_one_out(tmp_path):
    """The chosen leak rate is the one with the best leave-one-out accuracy, its readout is the one a fixed
    build gets, and a saved model keeps it (the leak rate travels in the state dict)."""
    from echoes.config import ExperimentConfig, TrainConfig
    from echoes.learners import create_learner
    from echoes.model import Model

    ds = _motion_like()
    ridge = create_learner("ridge", select="loo")
    scores = {}
    for leak in (0.05, 0.2, 0.5, 1.0):
        model = esn(leak_rate=leak, seed=1)
        scores[leak] = (ridge.fit(model, ds, TrainConfig(), device=torch.device("cpu"), seed=0)
                        .history[0]["loo_accuracy"], model)
    assert len({s for s, _ in scores.values()}) > 1  # the leak rate matters here
    model = esn(leak_rate="auto", seed=1)
    result = ridge.fit(model, ds, TrainConfig(), device=torch.device("cpu"), seed=0)
    chosen = result.extra["esn_leak_rate"]
    assert result.extra["tune_candidates"] == 4
    assert scores[chosen][0] == max(s for s, _ in scores.values())
    assert model.members[0][0].leak_rate == chosen
    torch.testing.assert_close(model.readout.weight, scores[chosen][1].readout.weight)

    cfg = ExperimentConfig(**{"model": {"name": "esn", **SMALL, "leak_rate": "auto", "seed": 1}})
    folder = Model(model, cfg, ["a", "b"]).save(tmp_path / "m")
    loaded = Model.load(folder).module
    assert loaded.members[0][0].leak_rate == chosen
    x, lengths = batch()
    torch.testing.assert_close(loaded(x, lengths), model(x, lengths))
    state = loaded.init_state(len(x))  # streaming runs the chosen reservoir too
    for t in range(int(lengths.max())):
        logits, state = loaded.step(x[:, t], state)
    full = lengths == lengths.max()
    torch.testing.assert_close(logits[full], model(x, lengths)[full], atol=1e-5, rtol=1e-5)


def test_state_dicts_saved_before_tuning_still_load():
    old = esn(leak_rate=0.3, seed=2)
    state = {k: v for k, v in old.state_dict().items() if not k.endswith("_extra_state")}
    new = esn(leak_rate=0.3, seed=2)
    new.load_state_dict(state)
    assert new.members[0][0].leak_rate == 0.3


def test_auto_is_the_default_and_effective_radius_needs_fixed_settings():
    default = create_model("esn", input_size=3, num_classes=2, **SMALL)
    assert set(default.tunable) == {"leak_rate", "spectral_radius", "input_scaling"}
    with pytest.raises(EchoesError, match="model.leak_rate=0.3 model.spectral_radius=0.9"):
        esn(leak_rate="auto", effective_radius=True)


def test_auto_options_with_a_fixed_alpha_are_scored_at_that_alpha():
    """learner.alpha fixed: candidates are scored by leave-one-out at that λ alone, and the readout kept is
    the chosen reservoir's ridge fit at that λ."""
    from echoes.config import TrainConfig
    from echoes.learners import create_learner

    ds, cpu = _motion_like(), torch.device("cpu")
    ridge = create_learner("ridge", alpha=1.0, calibrate=False)
    model = esn(leak_rate="auto", seed=1)
    result = ridge.fit(model, ds, TrainConfig(), device=cpu, seed=0)
    assert result.extra["ridge_alpha"] == 1.0 and result.extra["tune_candidates"] == 4
    fixed = esn(leak_rate=result.extra["esn_leak_rate"], seed=1)
    ridge.fit(fixed, ds, TrainConfig(), device=cpu, seed=0)
    torch.testing.assert_close(model.readout.weight, fixed.readout.weight)


def test_auto_on_a_large_set_is_scored_on_a_subset_then_fitted_on_all():
    """Beyond TUNE_MIN_ROWS sequences the candidates see a seeded subset (together about one harvest of
    the whole set); the chosen reservoir's readout is the one a fixed build fits on all of it."""
    from echoes.config import TrainConfig
    from echoes.learners import create_learner
    from echoes.learners.ridge import TUNE_MIN_ROWS, tuning_rows

    ds, cpu = _motion_like(n=600), torch.device("cpu")
    rows = tuning_rows(len(ds.train), 0)
    assert len(rows) == TUNE_MIN_ROWS and len(np.unique(rows)) == len(rows) and (np.diff(rows) > 0).all()
    assert (tuning_rows(40, 0) == np.arange(40)).all()  # small: all of it
    ridge = create_learner("ridge")
    model = esn(leak_rate="auto", seed=1)
    result = ridge.fit(model, ds, TrainConfig(), device=cpu, seed=0)
    assert result.extra["tune_rows"] == TUNE_MIN_ROWS and result.history[0]["train_rows"] == 600
    fixed = esn(leak_rate=result.extra["esn_leak_rate"], seed=1)
    ridge.fit(fixed, ds, TrainConfig(), device=cpu, seed=0)
    torch.testing.assert_close(model.readout.weight, fixed.readout.weight)


def test_echoes_train_says_which_reservoir_auto_chose(tmp_path, monkeypatch, capsys):
    from echoes.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["train", "model=esn", "model.units=30", "data=synthetic:motion", "data.n_train=40", "data.n_test=20",
            "tracking=false", "--json", "r.json"]
    assert main(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("reservoir: "))
    out = json.loads((tmp_path / "r.json").read_text())
    assert f"leak_rate {out['esn_leak_rate']:.3g}" in line and "tuned over 8 candidates on 32 training" in line
    assert main([*args[:2], "model.leak_rate=0.3", "model.spectral_radius=0.9", "model.input_scaling=null",
                 *args[2:]]) == 0
    assert "reservoir: " not in capsys.readouterr().out  # nothing was tuned
