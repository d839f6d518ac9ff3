import csv
import multiprocessing
import os
import shutil
import signal
import threading
import time

import optuna
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from echoes.api import train
from echoes.cli import main
from echoes.config import load_config
from echoes.errors import EchoesError
from echoes.models import MODELS, register_model
from echoes.models.base import SequenceModel
from echoes.sweep import attempt, load_sweep, lost_reason, make_storage, open_study, retry_of, run_sweep
from echoes.sweep.liveness import STALE, fail_stale, worker_storage
from echoes.sweep.optuna_parts import HEARTBEAT
from echoes.sweep.trials import claim, run_trial

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
    assert first.state == TrialState.FAIL and "later.npz" in lost_reason(first)
    assert second.state == TrialState.COMPLETE and retry_of(second) == 0
    assert summary["counts"]["complete"] == 1 and summary["best"]["trial"] == 1


def test_killed_worker_trial_is_marked_failed_and_retried(tracked_dir, tiny_npz, capfd):
    path = _write(tracked_dir / "k.yaml", tiny_npz, name="kill", trials=2, pruning=False, heartbeat=2)
    sweep = load_sweep(path, ["train.epochs=20"])
    exit_code = []
    launcher = threading.Thread(target=lambda: exit_code.append(
        main(["sweep", path, "train.epochs=20", "--workers", "2"])))
    launcher.start()  # the launcher runs here; its two workers are child processes of this one
    storage, running, deadline = None, [], time.time() + 120
    while len(running) < 2 and time.time() < deadline and launcher.is_alive():
        time.sleep(0.05)
        try:
            storage = storage or make_storage(sweep.storage_url)
            study_id = storage.get_study_id_from_name("kill")
        except (KeyError, OSError):  # not created yet
            continue
        running = [t for t in storage.get_all_trials(study_id, states=(TrialState.RUNNING,))
                   if HEARTBEAT in t.system_attrs]
    if len(running) == 2:  # both workers have started a trial: kill one mid-way
        os.kill(multiprocessing.active_children()[0].pid, signal.SIGKILL)
    launcher.join(timeout=180)
    out, err = capfd.readouterr()
    trials = _trials(sweep)
    lost = [t for t in trials if lost_reason(t)]
    assert len(running) == 2 and exit_code == [0] and len(lost) == 1, out + err
    (victim,) = lost
    assert victim.number in [t.number for t in running]
    assert victim.state == TrialState.FAIL and "stopped" in lost_reason(victim)
    retry = next(t for t in trials if retry_of(t) == victim.number)
    assert retry.state == TrialState.COMPLETE
    if victim.params:  # killed after sampling (maybe mid-way): the retry repeats the parameters it had drawn
        assert {k: retry.params[k] for k in victim.params} == victim.params
    assert retry.user_attrs["slot"] == victim.user_attrs["slot"] and attempt(retry) == 2
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.user_attrs["slot"] for t in complete) == [0, 1]  # none lost, none run twice
    assert len(trials) == 3 and f"trial {victim.number} lost" in out and "1 lost" in out
    client = MlflowClient(f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweep-kill")
    runs = client.search_runs([exp.experiment_id], f"tags.`sweep.trial` = '{victim.number}'")
    assert [r.info.status for r in runs] in ([], ["FAILED"])  # killed before or after its run began
    assert all("worker lost" in r.data.tags["stopped"] for r in runs)


@pytest.mark.parametrize("storage", ["journal", "sqlite"])
def test_a_trial_silent_for_four_heartbeats_is_failed_and_retried(run_dir, tiny_npz, storage):
    url = [] if storage == "journal" else [f"storage=sqlite:///{run_dir / 'study.db'}"]
    sweep = load_sweep(_write(run_dir / "h.yaml", tiny_npz, name="beat", trials=2, heartbeat=1),
                       ["tracking=false", *url])
    open_study(sweep, echo=lambda _: None)
    lines = []
    store = worker_storage(sweep, lines.append)
    silent, beating = claim(sweep, store), claim(sweep, store)
    study_id = store.get_study_id_from_name("beat")
    ids = [store.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in (silent, beating)]
    store.record_heartbeat(ids[0])
    time.sleep(5.2)  # over four heartbeat intervals (SQLite keeps whole seconds) without a beat from the first
    store.record_heartbeat(ids[1])
    fail_stale(sweep.load_study(store))
    trials = _trials(sweep)
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.RUNNING, TrialState.WAITING]
    assert lost_reason(trials[0]) == STALE and lost_reason(trials[1]) is None
    assert retry_of(trials[2]) == silent.number and attempt(trials[2]) == 2
    assert trials[2].user_attrs["slot"] == silent.user_attrs["slot"] and HEARTBEAT not in trials[2].system_attrs
    assert lines == [f"trial {silent.number} lost ({STALE}): marked failed, retried as a new trial"]


def test_a_worker_whose_trial_was_given_up_as_lost_goes_on(run_dir, tiny_npz):
    sweep = load_sweep(_write(run_dir / "g.yaml", tiny_npz, name="gone", trials=1), ["tracking=false"])
    open_study(sweep, echo=lambda _: None)
    lines = []
    store = worker_storage(sweep, lines.append)
    trial = claim(sweep, store)
    other = make_storage(sweep.storage_url)  # another worker, which found this trial stale
    other.set_trial_state_values(other.get_trial_id_from_study_id_trial_number(
        other.get_study_id_from_name("gone"), trial.number), state=TrialState.FAIL)
    assert run_trial(sweep, store, trial, {}, lines.append) == "lost"
    assert lines == [f"trial {trial.number}: finished after being given up as lost; its retry counts"]


class Broken(SequenceModel):
    """A model whose every forward pass fails, as one that does not fit in memory would."""

    def __init__(self, input_size: int, num_classes: int, framewise: bool = False, hidden_size: int = 4) -> None:
        super().__init__(input_size, num_classes, framewise)
        self.readout = torch.nn.Linear(hidden_size, num_classes)

    def features(self, x, lengths):
        raise RuntimeError(f"out of memory at hidden_size={self.readout.in_features}\nsecond line")


@pytest.fixture
def broken_model():
    register_model("broken_for_test")(Broken)
    yield "broken_for_test"
    MODELS._items.pop("broken_for_test")


def test_a_sweep_whose_every_trial_fails_exits_2_naming_the_first_error(run_dir, tiny_npz, broken_model, capsys):
    path = _write(run_dir / "f.yaml", tiny_npz, name="fail", sampler="grid", trials=None,
                  space={"model.hidden_size": [4, 8, 16]})
    assert main(["sweep", path, f"model.name={broken_model}", "tracking=false"]) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("echoes: error: sweep 'fail': all 3 trials failed, the first (trial 0) with "
                          "RuntimeError: out of memory at hidden_size=4 — fix")
    assert "second line" not in err and "name=" in err
    assert out.count("fail ") == 3  # each trial's own line says why it failed
    with open(run_dir / "echoes-runs" / "sweeps" / "fail" / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["state"], r["model.hidden_size"]) for r in rows] == [("fail", "4"), ("fail", "8"), ("fail", "16")]
    assert all(r["error"].startswith("RuntimeError: out of memory") for r in rows)


def test_a_worker_joining_a_database_study_waits_for_its_budget(tracked_dir, tiny_npz):
    """Two workers started together on a database: the one that found the study already created waits
    until its creator has enqueued the budget, instead of enqueueing every slot a second time."""
    from echoes.sweep.liveness import SLOT
    from echoes.sweep.prepare import SPEC, refill, spec_fingerprint

    url = f"sqlite:///{tracked_dir / 'study.db'}"
    sweep = load_sweep(_write(tracked_dir / "g.yaml", tiny_npz, sampler="grid", trials=None,
                              space={"model.hidden_size": [4, 6, 8]}), [f"storage={url}"])
    optuna.create_study(study_name=sweep.name, storage=url, direction="maximize")  # created, not yet filled
    joined = {}
    worker = threading.Thread(target=lambda: joined.update(study=open_study(sweep, echo=lambda _: None)))
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive()  # waiting for the creator
    creator = optuna.load_study(study_name=sweep.name, storage=url)
    refill(sweep, creator)
    creator.set_user_attr(SPEC, spec_fingerprint(sweep))
    worker.join(timeout=60)
    assert not worker.is_alive()
    slots = sorted(t.user_attrs[SLOT] for t in creator.get_trials(deepcopy=False))
    assert slots == [0, 1, 2]  # each slot once
