"""Sweeps across machines share one study in a real PostgreSQL (Debian's `postgresql`, a throwaway
cluster started here): two `echoes sweep` processes meet the budget, no trial lost or run twice."""

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

POINTS = [10, 12, 14, 16, 18, 20]  # a grid: every point must run exactly once


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    assert found[-1], f"{name} not found — `make system-deps` installs Debian's postgresql"
    return found[-1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL cluster in a temporary folder on 127.0.0.1 (as the `postgres` user when we are root:
    PostgreSQL refuses to run as root); yields its URL."""
    folder = Path(tempfile.mkdtemp(prefix="echoes-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = folder / "data"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    subprocess.run([*as_user, pg_bin("initdb"), "-D", str(data), "-U", "echoes", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, pg_bin("pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w", "-o",
                    f"-h 127.0.0.1 -p {port} -k {folder} -c max_connections=100", "start"], check=True,
                   capture_output=True)
    yield f"postgresql://echoes@127.0.0.1:{port}/postgres"
    subprocess.run([*as_user, pg_bin("pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
    shutil.rmtree(folder, ignore_errors=True)


def test_two_sweep_processes_share_a_study_in_postgresql(postgres, tracked_dir):
    sweep = {"name": "pg-grid", "base": {"model": "esn", "data": {"source": "synthetic:motion", "n_train": 40,
                                                                  "n_test": 20}},
             "sampler": "grid", "space": {"model.units": POINTS}, "objective": "val_accuracy"}
    (tracked_dir / "pg.yaml").write_text(yaml.safe_dump(sweep))
    cmd = [sys.executable, "-m", "echoes", "sweep", "pg.yaml", f"storage={postgres}"]
    workers = [subprocess.Popen(cmd, cwd=tracked_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), "\n".join(outputs)

    import optuna
    from optuna.trial import TrialState

    study = optuna.load_study(study_name="pg-grid", storage=postgres)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert sorted(t.params["model.units"] for t in complete) == POINTS  # the budget, each point once
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweep-pg-grid")
    children = [r for r in client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")
                if "mlflow.parentRunId" in r.data.tags]
    assert sorted(int(r.data.params["model.units"]) for r in children) == POINTS  # tracked once each
    # both processes took part (the grid is claimed point by point, so neither ran it all)
    started = [sum(line.lstrip().startswith(("trial", "[")) for line in out.splitlines()) for out in outputs]
    assert all(n > 0 for n in started), outputs
