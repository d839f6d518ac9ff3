import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from echoes.api import train
from echoes.cli import main
from echoes.config import load_config
from echoes.errors import EchoesError
from echoes.sweep import HOST, load_sweep, lost_reason, make_storage, run_sweep, worker_identity

BASE = {"model": {"name": "gru", "hidden_size": 8},
        "train": {"epochs": 3, "batch_size": 16, "lr": 0.02, "patience": None}}


def _write(path, npz, **spec):
    raw = {"name": "t", "base": {**BASE, "data": f"npz:{npz}"}, "sampler": "tpe", "trials": 3,
           "space": {"train.lr": {"float": [0.005, 0.05], "log": True}, "model.hidden_size": [4, 8]}}
    raw.update(spec)
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _trials(sweep):
    return optuna.load_study(study_name=sweep.name, storage=make_storage(sweep.storage_url)).get_trials()


def test_space_grid_and_points(run_dir, tiny_npz):
    grid = load_sweep(_write(run_dir / "g.yaml", tiny_npz, sampler="grid", trials=None,
                             space={"train.lr": [0.01, 0.02, 0.03], "model.hidden_size": [4, 8]}))
    assert grid.budget == 6 and {(p["train.lr"], p["model.hidden_size"]) for p in grid.points} == {
        (lr, h) for lr in (0.01, 0.02, 0.03) for h in (4, 8)}
    rng = load_sweep(_write(run_dir / "r.yaml", tiny_npz, space={
        "model.hidden_size": {"int": [4, 64], "log": True}, "train.lr": {"float": [1e-3, 1e-1], "step": 1e-3}}))
    d = rng.distributions
    assert isinstance(d["model.hidden_size"], optuna.distributions.IntDistribution) and d["model.hidden_size"].log
    assert isinstance(d["train.lr"], optuna.distributions.FloatDistribution) and d["train.lr"].step == 1e-3
    points = [{"train.lr": 5e-5, "train.batch_size": 24}, {"train.lr": 1e-4, "train.batch_size": 24}]
    pts = load_sweep(_write(run_dir / "p.yaml", tiny_npz, sampler="grid", trials=None, space={}, points=points),
                     ["trials=2", "train.epochs=7"])
    assert pts.points == points and pts.config_for(points[1]).train.lr == 1e-4
    assert pts.base_config.train.epochs == 7  # a non-sweep key overrides the base experiment


@pytest.mark.parametrize("spec, message", [
    ({"trails": 5}, "did you mean 'trials'"),
    ({"sampler": "tpee"}, "did you mean 'tpe'"),
    ({"sampler": "grid", "trials": None}, "a grid needs lists of values, but 'train.lr' is a range"),
    ({"space": {"model.hiden_size": [4, 8]}}, "did you mean 'hidden_size'"),
    ({"space": {"train.lr": {"float": [0.1]}}}, "float needs [low, high]"),
    ({"space": {"train.lr": {"float": [0.0, 0.1], "log": True}}}, "'train.lr'"),
    ({"space": {"train.lr": "fast"}}, "must be a list of values or a mapping"),
    ({"points": [{"train.lr": 0.1}]}, "use sampler: grid"),
    ({"sampler": {"name": "tpe", "n_startup": 2}}, "did you mean 'n_startup_trials'"),
    ({"objective": "val_accuracy", "direction": "up"}, "direction"),
])
def test_bad_sweep_files_say_what_to_fix(run_dir, tiny_npz, spec, message):
    with pytest.raises(EchoesError, match="sweep|model|sampler") as e:
        load_sweep(_write(run_dir / "bad.yaml", tiny_npz, **spec))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_sweep_tracks_trials_resumes_and_its_best_config_reruns(tracked_dir, tiny_npz):
    path = _write(tracked_dir / "s.yaml", tiny_npz)
    lines = []
    summary = run_sweep(load_sweep(path), echo=lines.append)
    sweep = load_sweep(path)
    trials = _trials(sweep)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3 and summary["counts"]["complete"] == 3
    assert sorted(t.user_attrs["slot"] for t in trials) == [0, 1, 2]  # one trial per slot, none twice
    assert sum("complete" in line for line in lines) == 3

    client = MlflowClient(f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweep-t")
    runs = client.search_runs([exp.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("echoes.sweep") == "t")
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_complete"] == 3
    assert sorted(int(r.data.tags["sweep.trial"]) for r in children) == [0, 1, 2]
    for r in children:  # each trial's MLflow run holds the parameters Optuna chose
        t = trials[int(r.data.tags["sweep.trial"])]
        assert float(r.data.params["train.lr"]) == pytest.approx(t.params["train.lr"])
        assert r.data.metrics["val_accuracy"] == pytest.approx(t.value)

    best = summary["best"]
    assert best["value"] == max(t.value for t in trials)
    again = train(load_config(best["config"], ["tracking=false"]))
    assert again["val_accuracy"] == best["value"] and again["test_accuracy"] == best["test_accuracy"]

    run_sweep(load_sweep(path), echo=lines.append)  # finished: resuming runs nothing
    assert len(_trials(sweep)) == 3
    run_sweep(load_sweep(path, ["trials=4"]), echo=lines.append)  # a bigger budget: one more trial
    assert [t.state for t in _trials(sweep)] == [TrialState.COMPLETE] * 4
    with pytest.raises(EchoesError, match="already exists .* another base, space or objective"):
        run_sweep(load_sweep(path, ["train.epochs=5"]), echo=lines.append)


def test_pruned_trial_is_pruned_in_optuna_and_killed_in_mlflow(tracked_dir, tiny_npz):
    # Trial 0 learns; trial 1 (a learning rate that cannot move) is worse than it after one epoch.
    path = _write(tracked_dir / "p.yaml", tiny_npz, name="prune", sampler="grid", trials=None, space={},
                  points=[{"train.lr": 0.05}, {"train.lr": 1e-9}], objective="val_loss", direction="minimize",
                  pruning={"n_startup_trials": 1, "n_warmup_steps": 0})
    summary = run_sweep(load_sweep(path, ["train.epochs=4"]), echo=lambda _: None)
    trials = _trials(load_sweep(path, ["train.epochs=4"]))
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert summary["counts"]["pruned"] == 1 and summary["best"]["trial"] == 0
    client = MlflowClient(f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweep-prune")
    pruned = client.search_runs([exp.experiment_id], "tags.`sweep.trial` = '1'")[0]
    assert pruned.info.status == "KILLED" and pruned.data.tags["stopped"] == "pruned at epoch 1"


def test_a_trial_stopped_by_an_error_runs_again_when_the_sweep_resumes(tracked_dir, tiny_npz):
    later = tracked_dir / "later.npz"
    path = _write(tracked_dir / "e.yaml", tiny_npz, name="err", trials=1)
    with pytest.raises(EchoesError, match="later.npz"):
        run_sweep(load_sweep(path, [f"data=npz:{later}"]), echo=lambda _: None)
    shutil.copyfile(tiny_npz, later)  # the user fixes what the error named, and runs the sweep again
    summary = run_sweep(load_sweep(path, [f"data=npz:{later}"]), echo=lambda _: None)
    first, second = _trials(load_sweep(path, [f"data=npz:{later}"]))
    assert first.state == TrialState.FAIL and "later.npz" in first.user_attrs["lost"]
    assert second.state == TrialState.COMPLETE and second.user_attrs["retry_of"] == 0
    assert summary["counts"]["complete"] == 1 and summary["best"]["trial"] == 1


def test_killed_worker_trial_is_marked_failed_and_retried(tracked_dir, tiny_npz, capfd):
    path = _write(tracked_dir / "k.yaml", tiny_npz, name="kill", trials=2, pruning=False)
    sweep = load_sweep(path, ["train.epochs=20"])
    exit_code = []
    launcher = threading.Thread(target=lambda: exit_code.append(
        main(["sweep", path, "train.epochs=20", "--workers", "2"])))
    launcher.start()  # the launcher runs here; its two workers are processes
    storage, victim, deadline = None, None, time.time() + 120
    while victim is None and time.time() < deadline and launcher.is_alive():
        time.sleep(0.05)
        try:
            storage = storage or make_storage(sweep.storage_url)
            study_id = storage.get_study_id_from_name("kill")
        except (KeyError, OSError):  # not created yet
            continue
        for t in storage.get_all_trials(study_id, states=(TrialState.RUNNING,)):
            if "echoes:worker" in t.system_attrs:  # a worker has started this trial: kill it mid-way
                victim = t
                os.kill(t.system_attrs["echoes:worker"]["pid"], signal.SIGKILL)
                break
    launcher.join(timeout=180)
    out = capfd.readouterr().out
    assert victim is not None and exit_code == [0], out
    trials = _trials(sweep)
    assert [t.number for t in trials if t.user_attrs.get("lost")] == [victim.number], out
    lost = trials[victim.number]
    assert lost.state == TrialState.FAIL and "stopped" in lost.user_attrs["lost"]
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == victim.number)
    assert retry.state == TrialState.COMPLETE
    if lost.params:  # killed after sampling: the retry repeats the same parameters
        assert retry.params == lost.params
    assert retry.user_attrs["slot"] == victim.user_attrs["slot"] and retry.user_attrs["attempt"] == 2
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["slot"] for t in complete) == [0, 1]  # none lost, none run twice
    assert len(trials) == 3 and f"trial {victim.number} lost" in out and "1 lost" in out
    client = MlflowClient(f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweep-kill")
    runs = client.search_runs([exp.experiment_id], f"tags.`sweep.trial` = '{victim.number}'")
    assert [r.info.status for r in runs] in ([], ["FAILED"])  # killed before or after its run began
    assert all("worker lost" in r.data.tags["stopped"] for r in runs)


def test_lost_reason_by_process_and_by_heartbeat():
    def running(**system_attrs):
        return optuna.trial.create_trial(state=TrialState.RUNNING, system_attrs=system_attrs)

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    me = worker_identity()
    now = time.time()
    assert "stopped" in lost_reason(running(**{"echoes:worker": {"host": HOST, "pid": done.pid}}), 30)
    assert lost_reason(running(**{"echoes:worker": me}), 30) is None
    assert "stopped" in lost_reason(running(**{"echoes:worker": {**me, "start": "1"}}), 30)  # pid reused
    far = {"host": "elsewhere", "pid": 1}
    assert lost_reason(running(**{"echoes:worker": far, "echoes:heartbeat": now - 10}), 30, now) is None
    assert "no heartbeat for 130s" in lost_reason(
        running(**{"echoes:worker": far, "echoes:heartbeat": now - 130}), 30, now)
