"""Checkpoints and resume: a killed run continues to the same end as an uninterrupted one, in the
same MLflow run; a run whose process died is closed as KILLED by the next start."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import echoes
from echoes.api import train
from echoes.cli import main
from echoes.config import load_config
from echoes.run import Metric, checkpoints, run_experiment

TIMING = {"epoch_seconds", Metric.TRAIN_SECONDS, Metric.BUILD_SECONDS, Metric.TRAIN_SECONDS_PER_EPOCH,
          Metric.INFERENCE_SECONDS_PER_BATCH, Metric.INFERENCE_SECONDS_PER_SAMPLE, Metric.PEAK_MEMORY_MB,
          Metric.RESUMED_FROM_EPOCH, "mlflow_run_id"}


def _without_timing(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMING}


def _memory_npz(path: Path, n_train: int, n_test: int = 40, steps: int = 12) -> Path:
    """Padded (N, T, F) + lengths: the class is the sign of the first step, to be remembered to the end."""
    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        x = (0.3 * rng.standard_normal((n, steps, 3))).astype(np.float32)
        x[:, 0, 0] = np.where(y == 1, 2.0, -2.0)
        return x, rng.integers(steps // 2, steps + 1, n), y

    (x_tr, l_tr, y_tr), (x_te, l_te, y_te) = split(n_train), split(n_test)
    np.savez(path, X_train=x_tr, lengths_train=l_tr, y_train=y_tr, X_test=x_te, lengths_test=l_te, y_test=y_te)
    return path


@pytest.fixture
def one_thread():
    """Bit-equal results across processes need the same number of threads in each."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    src = str(Path(echoes.__file__).parents[1])  # the subprocess runs the same code as this one
    yield {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    torch.set_num_threads(before)


def _wait_for(predicate, what: str, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the training process ended (rc {proc.returncode}) before {what}: "
                                 f"{log.read_text()[-2000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def test_sigkilled_run_resumes_to_the_same_end_in_the_same_mlflow_run(tracked_dir, one_thread):
    from mlflow.tracking import MlflowClient

    npz = _memory_npz(tracked_dir / "memory.npz", n_train=1500)  # about 100 batches an epoch: time to kill
    epochs = 4
    uri = f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}"
    args = [f"data=npz:{npz}", "model=gru", "model.hidden_size=8", f"train.epochs={epochs}",
            "train.batch_size=16", "train.lr=0.01", "train.schedule=cosine", "train.restart_epochs=3",
            "model.dropout=0.2", "train.patience=null", "tracking.log_weights=false", f"tracking.uri={uri}"]

    log = tracked_dir / "killed.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "echoes", "train", *args], cwd=tracked_dir, env=one_thread,
                                stdout=subprocess.DEVNULL, stderr=err)
    folder = tracked_dir / "echoes-runs" / "checkpoints"
    try:
        _wait_for(lambda: any(folder.glob("*/epoch-*.pt")), "the first checkpoint", proc, log)
        proc.send_signal(signal.SIGKILL)  # during epoch 2 (at the latest, the last one)
    finally:
        proc.kill()
        proc.wait()
    killed_at = max(int(p.stem.split("-")[1]) for p in folder.glob("*/epoch-*.pt"))
    assert 1 <= killed_at < epochs
    client = MlflowClient(uri)
    (killed,) = client.search_runs([client.get_experiment_by_name("echoes").experiment_id])
    assert killed.info.status == "RUNNING"  # nobody closed it

    # The uninterrupted run (its own results folder, the same store): starting it closes the dead run.
    assert main(["train", *args, "tracking.results_dir=uninterrupted", "--json", "whole.json",
                 "--save", "whole-model"]) == 0
    dead = client.get_run(killed.info.run_id)
    assert dead.info.status == "KILLED" and "ended without closing" in dead.data.tags["stopped"]

    assert main(["train", *args, "--resume", "--json", "resumed.json", "--save", "resumed-model"]) == 0
    whole, resumed = (json.loads((tracked_dir / f).read_text()) for f in ("whole.json", "resumed.json"))
    assert resumed[Metric.RESUMED_FROM_EPOCH] == killed_at and Metric.RESUMED_FROM_EPOCH not in whole
    assert resumed["mlflow_run_id"] == killed.info.run_id  # the same MLflow run, reopened
    assert _without_timing(resumed) == _without_timing(whole)
    assert resumed[Metric.EPOCHS] == epochs
    w1, w2 = (torch.load(tracked_dir / d / "weights.pt", weights_only=True)["module"]
              for d in ("whole-model", "resumed-model"))
    assert w1.keys() == w2.keys() and all(torch.equal(w1[k], w2[k]) for k in w1)

    run = client.get_run(killed.info.run_id)
    assert run.info.status == "FINISHED" and "stopped" not in run.data.tags
    assert run.data.metrics[Metric.TEST_ACCURACY] == whole[Metric.TEST_ACCURACY]
    steps = {m.step for m in client.get_metric_history(run.info.run_id, "epoch/val_loss")}
    assert steps == set(range(1, epochs + 1))  # epochs before the kill were logged by the killed process
    assert not folder.exists() or not any(folder.iterdir())  # a finished run leaves no checkpoint


@pytest.mark.parametrize("extra", [
    ["model=gru", "train.schedule=cosine", "train.restart_epochs=2", "model.dropout=0.3"],
    ["model=lsnn", "learner=eprop", "learner.feedback=adaptive", "model.hidden_size=12"],
])
def test_interrupted_run_resumes_exactly(run_dir, tiny_npz, extra):
    """In-process: a run stopped by Ctrl-C after epoch 2's checkpoint, resumed, matches an uninterrupted one
    (gradient with a cosine schedule and dropout; e-prop with its adaptive feedback matrix)."""
    base = [f"data=npz:{tiny_npz}", "model.hidden_size=16", "train.epochs=4", "train.batch_size=16",
            "train.lr=0.01", "train.patience=null", "tracking=false", "train.keep_checkpoints=2", *extra]
    cfg = load_config(None, base)
    whole = train(cfg, **{"tracking.results_dir": "whole"})

    def interrupt(epoch, metrics):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, on_epoch=interrupt)
    ckpt = checkpoints(cfg, whole.label)
    assert [p.name for p in ckpt.files()] == ["epoch-0001.pt", "epoch-0002.pt"]  # the latest 2 kept

    resumed = run_experiment(cfg, resume=True)
    assert resumed.metrics[Metric.RESUMED_FROM_EPOCH] == 2
    assert _without_timing(resumed.row()) == _without_timing(whole.row())
    assert [_without_timing(h) for h in resumed.history] == [_without_timing(h) for h in whole.history]
    a, b = whole.model.module.state_dict(), resumed.model.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not ckpt.folder.exists()


def test_without_resume_an_old_checkpoint_is_dropped_and_named_runs_resume(run_dir, tiny_npz):
    cfg = load_config(None, [f"data=npz:{tiny_npz}", "model=gru", "model.hidden_size=8", "train.epochs=3",
                             "train.patience=null", "tracking=false"])

    def interrupt(epoch, metrics):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, on_epoch=interrupt)
    assert "resumed_from_epoch" not in run_experiment(cfg).metrics  # a plain re-run starts afresh

    named = cfg.model_copy(update={"name": "mine"})
    with pytest.raises(KeyboardInterrupt):
        run_experiment(named, on_epoch=interrupt)
    assert run_experiment(named).metrics[Metric.RESUMED_FROM_EPOCH] == 1  # the same name= continues
    off = cfg.model_copy(update={"train": cfg.train.model_copy(update={"checkpoint_every": 0})})
    with pytest.raises(KeyboardInterrupt):
        run_experiment(off, on_epoch=interrupt)
    assert not (run_dir / "echoes-runs" / "checkpoints").exists() or not any(
        (run_dir / "echoes-runs" / "checkpoints").iterdir())


def test_damaged_checkpoint_is_a_one_line_error(run_dir, tiny_npz, capsys):
    cfg = load_config(None, [f"data=npz:{tiny_npz}", "model=gru", "model.hidden_size=8", "train.epochs=2",
                             "tracking=false"])
    folder = checkpoints(cfg, "gru").folder
    folder.mkdir(parents=True)
    (folder / "epoch-0001.pt").write_bytes(b"not a checkpoint")
    argv = ["train", f"data=npz:{tiny_npz}", "model=gru", "model.hidden_size=8", "train.epochs=2", "tracking=false"]
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "epoch-0001.pt" in err and "delete it" in err and "Traceback" not in err
    assert (folder / "epoch-0001.pt").exists()  # nothing is deleted behind the user's back


def test_dead_runs_are_closed_and_live_ones_left_alone(tracked_dir):
    from mlflow.tracking import MlflowClient

    from echoes.tracking import PID_TAG, PROCESS_START_TAG, mark_dead_runs, process_tags

    client = MlflowClient(f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}")
    exp = client.create_experiment("e")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    me = process_tags()
    runs = {
        "alive": me,
        "gone": {**me, PID_TAG: gone.stdout.strip()},
        "reused_pid": {**me, PROCESS_START_TAG: "1"},  # our pid, but started at another time
        "other_host": {**me, "echoes.host": "elsewhere", PID_TAG: gone.stdout.strip()},
        "untagged": {},
    }
    ids = {name: client.create_run(exp, tags=tags).info.run_id for name, tags in runs.items()}
    closed = mark_dead_runs(client, [exp])
    assert sorted(closed) == sorted([ids["gone"], ids["reused_pid"]])
    status = {name: client.get_run(i).info.status for name, i in ids.items()}
    assert status == {"alive": "RUNNING", "gone": "KILLED", "reused_pid": "KILLED", "other_host": "RUNNING",
                      "untagged": "RUNNING"}
