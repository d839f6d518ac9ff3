"""Data-parallel training: 2 real CPU ranks (gloo) under torchrun on tiny data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import echoes
from echoes import distributed
from echoes.cli import main

SRC = str(Path(echoes.__file__).parents[1])  # the ranks run the same code as this test


def _run(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def test_one_process_is_a_world_of_one():
    assert not distributed.launched() and distributed.is_main() and distributed.world_size() == 1
    t = torch.ones(3, dtype=torch.float64)
    assert distributed.all_reduce_sum(t) is t and t.tolist() == [1.0, 1.0, 1.0]
    assert distributed.shard(np.arange(5), pad=True).tolist() == [0, 1, 2, 3, 4]


def test_ridge_on_two_ranks_equals_one_process(run_dir, tiny_npz):
    # 10 reservoir units: fewer features than training rows, λ chosen by leave-one-out on both sides;
    # no calibration: dividing by a small temperature would scale float32 rounding up past 1e-6
    args = ["model=esn", "model.units=10", f"data=npz:{tiny_npz}", "tracking=false", "learner.calibrate=false"]
    assert main(["train", *args, "--save", "one", "--json", "one.json"]) == 0
    p = _run(["-m", "echoes", "train", *args, "train.nproc=2", "--save", "two", "--json", "two.json"], run_dir)
    assert p.stdout.count("model saved to") == 1  # rank 0 alone reports and saves
    one, two = echoes.load_model(run_dir / "one"), echoes.load_model(run_dir / "two")
    w1, w2 = one.module.readout.weight.detach(), two.module.readout.weight.detach()
    assert torch.count_nonzero(w1) > 0
    # float32 features summed in another order, then a solve at a small λ (~1e-4) that amplifies the
    # rounding: equal to 1e-4 relative (a rank counting rows twice would move them by far more)
    torch.testing.assert_close(w2, w1, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(two.module.readout.bias.detach(), one.module.readout.bias.detach(), atol=1e-5, rtol=1e-4)
    # λ follows the scale of the summed statistics: a rank counting rows twice would double it; the `auto`
    # reservoir settings are chosen alike
    out = [json.loads((run_dir / f"{n}.json").read_text()) for n in ("one", "two")]
    assert out[1]["ridge_alpha"] == pytest.approx(out[0]["ridge_alpha"], rel=1e-9)
    for key in ("esn_leak_rate", "esn_spectral_radius", "esn_input_scaling"):
        assert out[1][key] == out[0][key]


def test_gradient_on_two_ranks_converges_and_logs_one_run(tracked_dir, tiny_npz):
    from mlflow.tracking import MlflowClient

    _run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "echoes", "train",
          "model=gru", "model.hidden_size=16", f"data=npz:{tiny_npz}", "train.epochs=12", "train.lr=0.01",
          "train.batch_size=16", "--json", "out.json"], tracked_dir)
    out = json.loads((tracked_dir / "out.json").read_text())
    assert out["test_accuracy"] >= 0.9
    client = MlflowClient(f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("echoes").experiment_id])
    assert run.info.run_id == out["mlflow_run_id"]
    assert run.data.params["train.nproc"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "epoch/val_accuracy")) == out["epochs"]
    assert not list((tracked_dir / "echoes-runs" / "checkpoints").glob("*/*.pt"))  # rank 0 cleared its own


def test_eprop_refuses_data_parallel_in_one_line(run_dir, tiny_npz, capsys):
    assert main(["train", "model=lsnn", "learner=eprop", f"data=npz:{tiny_npz}", "train.nproc=2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "echoes: error: learner=eprop does not support train.nproc > 1 (data-parallel) — run it in one process")
