import json
import subprocess
import sys

import numpy as np
import pytest

from echoes.api import compare, train
from echoes.config import load_config


def _cfg(npz, *extra):
    return load_config(None, [f"data=npz:{npz}", "model=gru", "model.hidden_size=16", "train.epochs=12",
                              "train.batch_size=16", "train.lr=0.01", *extra])


def test_training_learns_a_memory_task(run_dir, tiny_npz):
    r = train(_cfg(tiny_npz, "tracking=false"))
    assert r["test_accuracy"] >= 0.85  # chance is 0.5; the cue must be carried to the end
    assert r["mlflow_run_id"] is None
    assert 1 <= r["epochs"] <= 12 and r["convergence_epoch"] <= r["epochs"]
    assert r["train_seconds"] > 0 and r["inference_seconds_per_sample"] > 0
    assert r["overfit_gap"] == pytest.approx(r["train_accuracy"] - r["val_accuracy"])
    assert np.array(r.confusion_matrix).sum() == 40


def test_same_seed_same_metrics_other_seed_differs(run_dir, tiny_npz):
    keys = ["test_accuracy", "val_accuracy", "train_accuracy", "test_loss", "epochs"]
    a = train(_cfg(tiny_npz, "tracking=false", "train.epochs=3", "seed=7"))
    b = train(_cfg(tiny_npz, "tracking=false", "train.epochs=3", "seed=7"))
    c = train(_cfg(tiny_npz, "tracking=false", "train.epochs=3", "seed=8"))
    assert [a[k] for k in keys] == [b[k] for k in keys]
    assert [h["train_loss"] for h in a.history] == [h["train_loss"] for h in b.history]
    assert a["test_loss"] != c["test_loss"]


def test_early_stopping_restores_the_best_epoch(run_dir, tiny_npz):
    r = train(_cfg(tiny_npz, "tracking=false", "train.epochs=40", "train.patience=2", "train.lr=0.05"))
    scores = [(h["val_accuracy"], -h["val_loss"]) for h in r.history]  # accuracy, ties by loss
    best = max(range(len(scores)), key=lambda i: scores[i]) + 1
    assert r["best_epoch"] == best
    assert r["epochs"] == min(40, best + 2)  # stops after `patience` epochs without improvement
    assert r["val_accuracy"] == pytest.approx(scores[best - 1][0])  # the kept weights are the best epoch's


def test_cosine_schedule_with_warm_restart(run_dir, tiny_npz):
    r = train(_cfg(tiny_npz, "tracking=false", "train.epochs=4", "train.schedule=cosine",
                   "train.restart_epochs=2", "train.patience=null"))
    lrs = [h["lr"] for h in r.history]
    assert lrs[0] < 0.01 and lrs[1] == pytest.approx(0.01)  # decays, then restarts at epoch 2's end


def test_mlflow_run_has_params_metrics_tags_and_artifacts(run_dir, tiny_npz):
    from mlflow.tracking import MlflowClient

    r = train(_cfg(tiny_npz, "train.epochs=3", "train.patience=null"))
    uri = f"sqlite:///{run_dir / 'echoes-runs' / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.get_run(r["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["model.name"] == "gru" and run.data.params["train.epochs"] == "3"
    assert run.data.tags["learner"] == "gradient" and run.data.tags["family"] == "recurrent"
    assert run.data.tags["seed"] == "0" and run.data.tags["data"].startswith("npz:")
    assert len(run.data.tags["git_commit"]) == 40
    assert run.data.metrics["test_accuracy"] == pytest.approx(r["test_accuracy"])
    assert len(client.get_metric_history(run.info.run_id, "epoch/val_accuracy")) == 3
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "confusion_matrix.json", "model"} <= names


def test_mlflow_tracking_uri_is_respected(run_dir, tiny_npz, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{run_dir / 'elsewhere.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    r = train(_cfg(tiny_npz, "train.epochs=1", "tracking.log_weights=false"))
    assert MlflowClient(uri).get_run(r["mlflow_run_id"]).info.status == "FINISHED"
    assert not (run_dir / "echoes-runs" / "mlflow.db").exists()


def test_compare_writes_table_csv_json_with_mean_and_std(run_dir, tiny_npz):
    suite = run_dir / "s.yaml"
    suite.write_text(
        "name: t\nbase: {train: {epochs: 2, batch_size: 32}, tracking: {enabled: false}}\n"
        "models: [rnn, {name: gru, hidden_size: 8, label: small_gru}]\n"
        f"datasets: ['npz:{tiny_npz}']\nseeds: [0, 1]\n"
    )
    summary = compare(str(suite), out_dir=str(run_dir / "out"), echo=lambda *a: None)
    rows = {r["label"]: r for r in summary["rows"]}
    assert set(rows) == {"rnn", "small_gru"} and rows["rnn"]["seeds"] == 2
    runs = json.loads((run_dir / "out" / "runs.json").read_text())
    accs = [r["test_accuracy"] for r in runs if r["label"] == "rnn"]
    assert rows["rnn"]["test_accuracy"] == pytest.approx(np.mean(accs))
    assert rows["rnn"]["test_accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert (run_dir / "out" / "runs.csv").read_text().count("\n") == 5
    assert "small_gru" in summary["table"] and "±" in summary["table"]


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "echoes", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_cli_train_writes_all_json_keys(run_dir, tiny_npz):
    p = _cli("train", "model=lstm", f"data=npz:{tiny_npz}", "model.hidden_size=8", "train.epochs=2",
             "--json", "r.json", cwd=run_dir)
    assert p.returncode == 0, p.stderr
    assert "test accuracy" in p.stdout
    r = json.loads((run_dir / "r.json").read_text())
    for key in ["model", "data", "seed", "test_accuracy", "test_top5", "val_accuracy", "train_accuracy",
                "train_seconds", "inference_seconds_per_sample", "peak_memory_mb", "trainable_params",
                "total_params", "convergence_epoch", "mlflow_run_id"]:
        assert key in r, key
    assert r["model"] == "lstm" and r["mlflow_run_id"]


def test_cli_models_and_datasets_list(run_dir):
    models = _cli("models", cwd=run_dir)
    assert models.returncode == 0 and "simple_rnn" in models.stdout
    data = _cli("datasets", cwd=run_dir)
    assert "uea:BasicMotions" in data.stdout and "synthetic:motion" in data.stdout
