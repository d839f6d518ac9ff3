"""Suites that survive: a compare records each run as it ends, resumes when run again, goes on past a
failing run, runs in parallel processes, and never shares its folder with another compare."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from echoes.api import compare
from echoes.errors import EchoesError
from echoes.suite import claim_folder, load_suite

QUIET = {"echo": lambda *a: None}


def _suite(run_dir, datasets, *, name="t", models="[{name: esn, units: 20}, {name: lstm, hidden_size: 4}]",
           seeds="[0, 1]", tracking="{log_weights: false}"):
    path = run_dir / f"{name}.yaml"
    path.write_text(f"name: {name}\nbase: {{train: {{epochs: 1, batch_size: 32}}, tracking: {tracking}}}\n"
                    f"models: {models}\ndatasets: {datasets}\nseeds: {seeds}\n")
    return path


def _cli(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "echoes", "compare", *args, "--no-report"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _csv(folder):
    with open(folder / "runs.csv") as f:
        return list(csv.DictReader(f))


def _finished(folder):
    try:
        return [r for r in json.loads((folder / "runs.json").read_text()) if r["status"] == "finished"]
    except FileNotFoundError:
        return []


def test_killed_compare_resumed_records_every_run_once(tracked_dir, tiny_npz):
    from mlflow.tracking import MlflowClient

    suite = _suite(tracked_dir, f"['npz:{tiny_npz}']")  # 4 runs
    p = _cli(str(suite), cwd=tracked_dir)
    compare_dir = tracked_dir / "echoes-runs" / "compare"
    deadline = time.monotonic() + 300
    while not any(_finished(d) for d in compare_dir.glob("t-*")) and p.poll() is None:
        assert time.monotonic() < deadline, "no run finished"
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()[1]
    p.send_signal(signal.SIGKILL)
    p.communicate()
    [folder] = compare_dir.glob("t-*")
    before = _finished(folder)
    assert 1 <= len(before) < 4, "the compare should have been killed part-way"

    p = _cli(str(suite), cwd=tracked_dir)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert f"resuming {folder.relative_to(tracked_dir)}: {len(before)} of 4 runs already finished" in out
    assert list(compare_dir.glob("t-*")) == [folder]  # the same folder, not a new one
    rows = _csv(folder)
    assert len(rows) == 4 and len({r["run_key"] for r in rows}) == 4
    assert {(r["label"], r["seed"]) for r in rows} == {(m, s) for m in ("esn", "lstm") for s in "01"}
    assert all(r["status"] == "finished" for r in rows)
    for old in before:  # finished runs were kept, not run again
        assert old["mlflow_run_id"] in {r["mlflow_run_id"] for r in rows}

    client = MlflowClient(f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("echoes-t")
    runs = client.search_runs([exp.experiment_id])
    finished = {r.info.run_id for r in runs if r.info.status == "FINISHED"}
    assert finished == {r["mlflow_run_id"] for r in rows}
    assert all(r.info.status == "KILLED" for r in runs if r.info.run_id not in finished)  # the interrupted one


def test_failing_runs_are_recorded_the_others_go_on_and_the_exit_code_says_so(run_dir, tiny_npz):
    np.savez(run_dir / "nan.npz", X_train=np.full((4, 3, 1), np.inf), y_train=np.zeros(4),
             X_test=np.zeros((2, 3, 1)), y_test=np.zeros(2))
    suite = _suite(run_dir, f"['npz:{tiny_npz}', 'npz:nan.npz']", models="[{name: esn, units: 20}]",
                   tracking="false")
    p = _cli(str(suite), "--out", "cmp", "--workers", "2", cwd=run_dir)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 1, err
    assert "Traceback" not in err
    assert "2 run(s) failed" in err and err.count("NaN or inf") == 2  # one line per failed run
    rows = {(r["data"], r["seed"]): r for r in _csv(run_dir / "cmp")}
    assert len(rows) == 4
    assert all(rows[(f"npz:{tiny_npz}", s)]["status"] == "finished" for s in "01")
    assert all(rows[("npz:nan.npz", s)]["status"] == "failed" for s in "01")
    assert "NaN or inf" in rows[("npz:nan.npz", "0")]["error"]
    summary = json.loads((run_dir / "cmp" / "summary.json").read_text())
    assert [r["data"] for r in summary["rows"]] == [f"npz:{tiny_npz}"]  # the table holds what finished


def test_unexpected_error_is_a_failed_run_with_its_traceback_in_a_log(run_dir, tiny_npz, monkeypatch):
    import echoes.run

    real = echoes.run.run_experiment

    def breaks_on_seed_1(cfg, *args, **kwargs):  # a bug inside a run, not bad input
        if cfg.seed == 1:
            raise ZeroDivisionError("division by zero\nsecond line")
        return real(cfg, *args, **kwargs)

    monkeypatch.setattr(echoes.run, "run_experiment", breaks_on_seed_1)
    suite = _suite(run_dir, f"['npz:{tiny_npz}']", models="[{name: esn, units: 20}]", tracking="false")
    summary = compare(str(suite), out_dir="cmp", **QUIET)
    [failure] = summary["failures"]
    assert failure["seed"] == 1 and failure["error"] == "ZeroDivisionError: division by zero"
    log = (run_dir / "cmp" / "logs").glob("*.log")
    [log] = list(log)
    assert "Traceback" in log.read_text() and "breaks_on_seed_1" in log.read_text()
    assert [r["seeds"] for r in summary["rows"]] == [1]

    monkeypatch.setattr(echoes.run, "run_experiment", real)  # fixed: running again retries only the failed run
    lines = []
    summary = compare(str(suite), out_dir="cmp", echo=lines.append)
    assert summary["failures"] == [] and [r["seeds"] for r in summary["rows"]] == [2]
    assert lines[0].startswith("resuming cmp: 1 of 2") and len([x for x in lines if x.startswith("[")]) == 1


def test_two_workers_give_the_results_of_one(tracked_dir, tiny_npz):
    suite = _suite(tracked_dir, f"['npz:{tiny_npz}']", seeds="[3]")
    one = compare(str(suite), ["tracking.enabled=false"], out_dir="one", **QUIET)
    two = compare(str(suite), out_dir="two", workers=2, **QUIET)  # MLflow written by both workers
    assert two["failures"] == [] and len(two["runs"]) == 2
    for a, b in zip(one["runs"], two["runs"], strict=True):  # same order: the suite's
        assert (a["label"], a["seed"]) == (b["label"], b["seed"])
        for key in ("test_accuracy", "val_accuracy", "train_accuracy", "trainable_params"):
            assert a[key] == pytest.approx(b[key]), key
        assert a["mlflow_run_id"] is None and b["mlflow_run_id"]
    again = compare(str(suite), out_dir="two", workers=2, **QUIET)  # all finished: nothing runs
    assert again["runs"] == two["runs"]


def test_compares_started_together_get_their_own_folders_and_a_rerun_finds_its_own(run_dir, tiny_npz):
    suite = load_suite(str(_suite(run_dir, f"['npz:{tiny_npz}']", tracking="false")), [])
    first, lock1 = claim_folder(suite, None, fresh=False)
    second, lock2 = claim_folder(suite, None, fresh=False)  # the first still runs: its folder is taken
    assert first != second and first.parent == second.parent
    os.close(lock1)
    os.close(lock2)
    again, lock = claim_folder(suite, None, fresh=False)  # the same command later resumes the latest
    assert again == second
    os.close(lock)
    fresh, lock = claim_folder(suite, None, fresh=True)
    assert fresh not in (first, second)
    os.close(lock)
    other = load_suite(str(_suite(run_dir, f"['npz:{tiny_npz}']", tracking="false")), ["seeds=[0]"])
    elsewhere, lock = claim_folder(other, None, fresh=False)  # other settings, other folder
    assert elsewhere not in (first, second, fresh)
    os.close(lock)


def test_out_folder_of_another_suite_is_refused(run_dir, tiny_npz):
    suite = _suite(run_dir, f"['npz:{tiny_npz}']", models="[{name: esn, units: 20}]", seeds="[0]",
                   tracking="false")
    compare(str(suite), out_dir="cmp", **QUIET)
    with pytest.raises(EchoesError, match="another suite or other settings"):
        compare(str(suite), ["seeds=[1]"], out_dir="cmp", **QUIET)
    with pytest.raises(EchoesError, match="--fresh starts over"):
        compare(str(suite), out_dir="cmp", fresh=True, **QUIET)
    assert len(_csv(run_dir / "cmp")) == 1  # nothing written was lost


def test_runs_made_under_other_defaults_are_not_resumed(monkeypatch):
    """A run's key holds every model and learner option with its default filled in: after a default changes
    (a newer echoes), the same suite gets a new folder and runs again instead of reusing the old results."""
    from dataclasses import replace

    from echoes.config import load_config
    from echoes.learners import LEARNERS
    from echoes.models import MODELS
    from echoes.run import run_key as checkpoint_key
    from echoes.suite import run_key

    cfg = load_config(None, ["model=deep_esn"])
    before, ckpt = run_key(cfg), checkpoint_key(cfg, "deep_esn")
    entry = MODELS.entry("deep_esn")
    monkeypatch.setitem(MODELS._items, "deep_esn", replace(entry, defaults={**entry.defaults, "units": 301}))
    assert run_key(cfg) != before and checkpoint_key(cfg, "deep_esn") != ckpt
    assert run_key(load_config(None, ["model=deep_esn", "model.units=301"])) == run_key(cfg)  # set = default
    ridge = LEARNERS.entry("ridge")
    changed = run_key(cfg)
    monkeypatch.setitem(LEARNERS._items, "ridge", replace(ridge, defaults={**ridge.defaults, "cache_mb": 1}))
    assert run_key(cfg) != changed  # the model's default learner, resolved
