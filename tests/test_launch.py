"""`echoes launch`: a suite as a job array on a real one-node Slurm (Debian's slurm-wlm and munge,
started here), the same on local processes, and SkyPilot task YAML checked by SkyPilot's own loader."""

import getpass
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

SUITE = {"name": "tiny-launch", "base": {"data": {"n_train": 40, "n_test": 20}},
         "datasets": ["synthetic:motion"], "models": [{"name": "esn", "units": 20}, {"name": "esn", "units": 30,
                                                                                       "label": "esn30"}],
         "seeds": [0, 1]}


def echoes(*args, cwd, env=None, timeout=900):
    return subprocess.run([sys.executable, "-m", "echoes", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm cluster (munged, slurmctld, slurmd) in a temporary folder; yields its SLURM_CONF."""
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "state", "spool", "log"):
        (d / sub).mkdir()
    (d / "munge").chmod(0o700)
    key = d / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = d / "munge" / "sock"
    subprocess.run(["munged", "--force", f"--socket={sock}", f"--key-file={key}", f"--log-file={d / 'log/munged.log'}",
                    f"--pid-file={d / 'munge/munged.pid'}", f"--seed-file={d / 'munge/seed'}"], check=True)
    user, host = getpass.getuser(), socket.gethostname()
    ctld_port, slurmd_port = free_ports(2)
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=echoes
SlurmctldHost={host}(127.0.0.1)
SlurmUser={user}
SlurmdUser={user}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={sock}
CredType=cred/munge
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'log/slurmctld.log'}
SlurmdLogFile={d / 'log/slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
NodeName={host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
    env = {"SLURM_CONF": str(conf)}
    os.environ.update(env)  # sbatch, squeue, scancel here and in the echoes processes the tests start
    subprocess.run(["slurmctld", "-f", str(conf)], check=True)
    subprocess.run(["slurmd", "-f", str(conf)], check=True)
    deadline = time.monotonic() + 60
    while "idle" not in subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout:
        assert time.monotonic() < deadline, (d / "log" / "slurmctld.log").read_text()[-2000:]
        time.sleep(0.5)
    yield d
    for pidfile in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
        p = d / pidfile
        if p.is_file():
            try:
                os.kill(int(p.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
    os.environ.pop("SLURM_CONF", None)


def finished_runs(uri, experiment):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id], "attributes.status = 'FINISHED'")


@pytest.fixture
def suite_dir(tracked_dir):
    (tracked_dir / "suite.yaml").write_text(yaml.safe_dump(SUITE))
    return tracked_dir


def test_a_suite_on_slurm_is_a_job_array_that_lands_every_run_in_mlflow(slurm, suite_dir):
    out = echoes("launch", "compare", "suite.yaml", "--on", "slurm", "--cpus", "1", "--time", "20", "--wait",
                 cwd=suite_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted 4 task(s) to Slurm" in out.stdout and "all 4 task(s) done" in out.stdout
    runs = finished_runs(f"sqlite:///{suite_dir / 'echoes-runs' / 'mlflow.db'}", "echoes-tiny-launch")
    assert sorted((r.data.tags["label"], r.data.params["seed"]) for r in runs) == [
        ("esn", "0"), ("esn", "1"), ("esn30", "0"), ("esn30", "1")]
    folder = next((suite_dir / "echoes-runs" / "launch").iterdir())
    logs = sorted((folder / "logs").glob("*.log"))
    assert len(logs) == 4 and all("test accuracy" in p.read_text() for p in logs)  # logs under the launch folder
    array = {p.name.split("_")[0] for p in (folder / "logs" / "slurm").glob("*_log.out")}
    assert len(array) == 1  # one job array, four elements
    status = echoes("launch", "status", str(folder), cwd=suite_dir)
    assert status.returncode == 0 and status.stdout.count("done") == 4
    print(out.stdout, status.stdout, sep="")  # shown with pytest -s


def test_a_preempted_slurm_job_is_requeued_and_resumes_from_its_checkpoint(slurm, tracked_dir):
    train = ["model=gru", "model.hidden_size=8", "data=synthetic:motion", "data.n_train=40", "data.n_test=20",
             "train.epochs=150", "train.patience=null", "tracking.experiment=preempt"]
    out = echoes("launch", "train", *train, "--on", "slurm", cwd=tracked_dir)
    assert out.returncode == 0, out.stderr
    checkpoints = tracked_dir / "echoes-runs" / "checkpoints"
    deadline = time.monotonic() + 600
    while not list(checkpoints.glob("*/epoch-*.pt")):  # a few epochs in
        assert time.monotonic() < deadline, echoes("launch", "status", cwd=tracked_dir).stdout
        time.sleep(0.5)
    job = out.stdout.split("job ")[1].split()[0]
    # what Slurm sends before a preemption or the time limit: submitit checkpoints and requeues the job
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    deadline = time.monotonic() + 600
    while "done" not in (status := echoes("launch", "status", cwd=tracked_dir).stdout):
        assert time.monotonic() < deadline and "failed" not in status and "ended" not in status, status
        time.sleep(2)
    runs = finished_runs(f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}", "preempt")
    assert len(runs) == 1  # the same MLflow run, continued
    assert runs[0].data.metrics["resumed_from_epoch"] >= 1 and runs[0].data.metrics["epochs"] == 150
    log = next((tracked_dir / "echoes-runs" / "launch").glob("train-*/logs/000.log")).read_text()
    assert log.count("data  synthetic:motion") == 2 and "resumed from the checkpoint of epoch" in log


def test_slurm_cancel_and_refusals(slurm, suite_dir):
    # held until tomorrow: still pending when cancelled
    out = echoes("launch", "train", *"model=esn data=synthetic:motion data.n_train=40".split(), "--on", "slurm",
                 "--sbatch", "begin=now+1day", cwd=suite_dir)
    assert out.returncode == 0, out.stderr
    assert "pending" in echoes("launch", "status", cwd=suite_dir).stdout
    assert echoes("launch", "cancel", cwd=suite_dir).returncode == 0
    deadline = time.monotonic() + 30
    while "pending" in (status := echoes("launch", "status", cwd=suite_dir).stdout):
        assert time.monotonic() < deadline
        time.sleep(1)
    assert "ended without an exit code" in status
    bad = echoes("launch", "compare", "suite.yaml", "--on", "slurm", "--partition", "nosuch", cwd=suite_dir)
    assert bad.returncode == 2 and "Slurm refused the jobs" in bad.stderr and "--partition" in bad.stderr
    gpus = echoes("launch", "compare", "suite.yaml", "--on", "slurm", "--gpus", "A100", cwd=suite_dir)
    assert gpus.returncode == 2 and "Slurm takes a count per node" in gpus.stderr


def test_a_suite_on_local_processes(suite_dir):
    out = echoes("launch", "compare", "suite.yaml", "--workers", "2", cwd=suite_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("done: echoes train --config") == 4
    runs = finished_runs(f"sqlite:///{suite_dir / 'echoes-runs' / 'mlflow.db'}", "echoes-tiny-launch")
    assert len(runs) == 4
    assert echoes("launch", "status", cwd=suite_dir).stdout.count("done") == 4


def test_a_sweep_launched_as_two_local_workers_shares_one_study(tracked_dir):
    sweep = {"name": "launch-grid", "base": {"model": "esn", "data": {"source": "synthetic:motion", "n_train": 40,
                                                                      "n_test": 20}},
             "sampler": "grid", "space": {"model.units": [10, 15, 20, 25]}}
    (tracked_dir / "grid.yaml").write_text(yaml.safe_dump(sweep))
    out = echoes("launch", "sweep", "grid.yaml", "--workers", "2", cwd=tracked_dir)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("done: echoes sweep grid.yaml") == 2
    runs = finished_runs(f"sqlite:///{tracked_dir / 'echoes-runs' / 'mlflow.db'}", "sweep-launch-grid")
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(int(r.data.params["model.units"]) for r in children) == [10, 15, 20, 25]


# --- SkyPilot ------------------------------------------------------------------------------------

def sky_load(text, tmp_path):
    import sky

    path = tmp_path / "task.yaml"
    path.write_text(text)
    return sky.Task.from_yaml(str(path))


def test_cloud_task_yaml_is_valid_for_every_option_combination(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from echoes.launch import LaunchConfig, sky_task

    argv = ["train", "model=lstm", "data=uea:BasicMotions", "--resume"]
    uri = "http://hq.example.org:5000"
    mounts = {"/data/ucf101": "s3://bucket/ucf101", "/data/x": str(tmp_path)}  # a bucket, a local folder
    options = itertools.product([None, "A100:1", "T4:2"], [None, "aws", "gcp", "azure"], [False, True],
                                ["repo", "wheel"], [{}, mounts], [1, 3], [0, 30])
    n = 0
    for gpus, cloud, spot, code, mount, nodes, idle in options:
        cfg = LaunchConfig(backend="cloud", gpus=gpus, cloud=cloud, spot=spot, code=code, mounts=mount,
                           idle_minutes=idle, max_hours=1.5)
        text = sky_task(argv, uri, cfg, "echoes-x", tmp_path, nodes)
        task = sky_load(text, tmp_path)
        (res,) = task.resources
        assert task.envs["MLFLOW_TRACKING_URI"] == uri and task.num_nodes == nodes
        assert "timeout --signal=INT 5400s" in task.run and task.run.endswith("train model=lstm data=uea:BasicMotions "
                                                                              "--resume")
        assert res.use_spot == spot
        assert (res.accelerators or None) == (None if gpus is None else {gpus.split(":")[0]: int(gpus.split(":")[1])})
        assert (str(res.cloud).lower() if res.cloud else None) == cloud
        raw = yaml.safe_load(text)
        if not spot:  # self-destroying: down after idle_minutes once the job is over
            assert raw["resources"]["autostop"] == {"idle_minutes": idle, "down": True, "wait_for": "jobs"}
        assert set(mount) <= set(task.file_mounts or {})
        assert (task.workdir is not None) == (code == "repo")
        n += 1
    assert n == 3 * 4 * 2 * 2 * 2 * 2 * 2


def test_cloud_dry_run_prints_the_task(tracked_dir):
    out = echoes("launch", "train", "model=esn", "data=synthetic:motion", "--on", "cloud", "--gpus", "A100:1",
                 "--cloud", "aws", "--spot", "--max-hours", "2", "--tracking-uri", "http://hq:5000", "--dry-run",
                 cwd=tracked_dir)
    assert out.returncode == 0, out.stderr
    task = yaml.safe_load(out.stdout)
    assert task["resources"] == {"use_spot": True, "accelerators": "A100:1", "cloud": "aws"}
    assert task["envs"] == {"MLFLOW_TRACKING_URI": "http://hq:5000"} and task["setup"] == "make setup"
    assert task["run"].startswith("timeout --signal=INT 7200s .venv/bin/echoes train model=esn")
    local = echoes("launch", "train", "model=esn", "--on", "cloud", "--dry-run", cwd=tracked_dir,
                   env={"MLFLOW_TRACKING_URI": ""})
    assert local.returncode == 2 and "cloud runs report to a tracking server" in local.stderr
    count = echoes("launch", "train", "model=esn", "--on", "cloud", "--gpus", "2", "--tracking-uri", "http://hq:5000",
                   "--dry-run", cwd=tracked_dir)
    assert count.returncode == 2 and "--gpus A100:2" in count.stderr


def test_launch_profiles_ship_and_flags_win():
    from echoes.launch import load_profile

    cfg = load_profile("slurm-gpu", {"time": 5, "partition": None})
    assert (cfg.backend, cfg.partition, cfg.gpus, cfg.time) == ("slurm", "gpu", "1", 5)
    assert load_profile("cloud-a100", {}).spot is True
    assert shutil.which("sbatch") and shutil.which("munged")  # make system-deps installs Slurm and munge
