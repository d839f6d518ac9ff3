"""``echoes launch``: run a train, a compare suite or a sweep elsewhere — processes on this machine,
Slurm jobs (submitit) or a self-destroying cloud VM (SkyPilot). No scheduler of our own.

Every launch becomes a list of tasks, each one ``echoes`` command line:

- ``train KEY=VALUE...``: one task, ``echoes train ... --resume``;
- ``compare SUITE``: one task per dataset × model × seed (its config written to the launch folder),
  a Slurm job array; on the cloud the suite runs as one ``echoes compare`` on the VM;
- ``sweep NAME --workers N``: N workers of ``echoes sweep NAME`` on the study's shared storage.

Runs report to one MLflow store: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else this
machine's ``echoes-runs/mlflow.db`` (a shared file system for Slurm; the cloud needs a server,
see ``echoes server``). The launch folder ``<results_dir>/launch/<name>-<stamp>/`` holds
``launch.json``, the task configs, one log per task and its exit code.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import TrackingConfig, config_error, read_yaml
from .errors import EchoesError
from .utils import atomic_write, find_config, packaged_configs

Echo = Callable[[str], None]
BACKENDS = ("local", "slurm", "cloud")
REPO = Path(__file__).resolve().parents[2]  # the checkout echoes runs from (has pyproject.toml), if any


class LaunchConfig(BaseModel):
    """Where and with what: flags, or a profile in ``configs/launch/NAME.yaml`` (flags win)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)  # gpus: 2 as well as "2"
    backend: Literal["local", "slurm", "cloud"] = "local"  # the --on flag (`on:` is a boolean in YAML)
    workers: int = Field(1, ge=1)  # local: processes at once; sweep: workers on the study
    tracking_uri: str | None = None
    # slurm (submitit)
    partition: str | None = None
    cpus: int = Field(1, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    time: int = Field(60, ge=1)  # minutes per job; a job that reaches it is requeued and resumes
    account: str | None = None
    sbatch: dict[str, Any] = Field(default_factory=dict)  # any other sbatch option, e.g. {qos: high}
    array_parallelism: int = Field(256, ge=1)
    gpus: str | None = None  # Slurm: a count per node ("2"); cloud: type and count ("A100:1")
    # cloud (SkyPilot)
    cloud: str | None = None  # aws, gcp, azure, ... (default: the cheapest enabled)
    region: str | None = None
    spot: bool = False
    idle_minutes: int = Field(10, ge=0)  # autostop: the VM is torn down after this much idleness
    max_hours: float = Field(8.0, gt=0)  # hard limit: the command is stopped after this long
    code: Literal["repo", "wheel"] = "repo"
    mounts: dict[str, str] = Field(default_factory=dict)  # VM path → bucket URI or local path
    cluster: str | None = None  # SkyPilot cluster name (default: echoes-<launch name>)


def load_profile(name: str | None, flags: dict[str, Any]) -> LaunchConfig:
    raw: dict[str, Any] = {}
    if name:
        path = find_config("launch", name)
        if not path.is_file():
            raise EchoesError(f"launch profile '{name}' not found — give a YAML path or one of: "
                              + (", ".join(packaged_configs("launch")) or "(none shipped)"))
        raw = read_yaml(path)
    raw.update({k: v for k, v in flags.items() if v is not None})
    try:
        return LaunchConfig(**raw)
    except ValidationError as e:
        raise config_error(e) from None


@dataclass
class Task:
    """One ``echoes`` command; the unit submitit pickles and Slurm runs (an array element)."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    log: str
    exit_file: str

    def command(self) -> list[str]:
        return [sys.executable, "-m", "echoes", *self.argv]

    def __call__(self) -> int:
        Path(self.exit_file).unlink(missing_ok=True)  # a requeued task starts over (and resumes)
        with open(self.log, "ab") as log:  # appended: a requeued task's attempts follow each other
            code = subprocess.run(self.command(), cwd=self.cwd, env={**os.environ, **self.env}, stdout=log,
                                  stderr=subprocess.STDOUT, preexec_fn=_ignore_usr2).returncode
        atomic_write(self.exit_file, str(code))
        if code:
            raise RuntimeError(f"`echoes {shlex.join(self.argv)}` exited with {code} — see {self.log}")
        return code

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Called by submitit when Slurm preempts the job or its time runs out: requeue the same
        command, which resumes from the run's last checkpoint."""
        import submitit

        return submitit.helpers.DelayedSubmission(self)


def _ignore_usr2() -> None:
    # Slurm's warning before a time-out or preemption goes to every process of the job: only submitit
    # (the parent) acts on it — it requeues the job; the command runs on until it is stopped, then resumes
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


@dataclass
class Launch:
    """What ``launch.json`` records: enough for ``status`` and ``cancel`` from any shell."""

    kind: str
    name: str
    folder: str
    on: str
    tasks: list[dict[str, Any]] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    cluster: str | None = None
    pid: int | None = None

    def save(self) -> None:
        atomic_write(Path(self.folder) / "launch.json", json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: str | None) -> Launch:
        path = Path(folder or _latest()) / "launch.json"
        if not path.is_file():
            raise EchoesError(f"no launch in '{path.parent}' — give a folder under echoes-runs/launch/")
        return cls(**json.loads(path.read_text()))


def _launch_root() -> Path:
    return Path(TrackingConfig().results_dir) / "launch"


def _latest() -> Path:
    found = sorted(_launch_root().glob("*/launch.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise EchoesError("no launches yet — start one with `echoes launch train|compare|sweep ...`")
    return found[-1].parent


def tracking_uri(cfg: LaunchConfig) -> str:
    from .tracking import store_uri

    uri = cfg.tracking_uri or store_uri(TrackingConfig())  # sqlite: an absolute path, the same from any node
    if cfg.backend == "cloud" and not uri.startswith(("http://", "https://")):
        raise EchoesError(f"cloud runs report to a tracking server, not '{uri}' — start `echoes server --host "
                          "0.0.0.0` on a machine the VM can reach and pass --tracking-uri http://HOST:5000")
    return uri


def plan(kind: str, target: str | None, overrides: list[str], cfg: LaunchConfig) -> tuple[str, list[list[str]], Path]:
    """The launch's name, each task's ``echoes`` arguments, and its new folder (configs written there)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if kind == "train":
        from .config import load_config
        from .run import check_experiment

        exp = load_config(target, overrides)
        check_experiment(exp)
        name = exp.name or f"{exp.model.name}-{exp.data.source.split(':')[-1].split('/')[-1]}"
        folder = _new_folder(f"train-{name}-{stamp}")
        config = ["--config", target] if target else []
        # --resume: a requeued or relaunched task continues from its checkpoint in the same MLflow run
        return name, [["train", *config, *overrides, "--resume"]], folder
    if kind == "compare":
        from .suite import load_suite

        suite = load_suite(target, overrides)
        if not suite.runs:
            raise EchoesError("the suite has no runs — list models, datasets and seeds")
        folder = _new_folder(f"compare-{suite.name}-{stamp}")
        if cfg.backend == "cloud":  # one VM runs the whole suite (and its table and report)
            return suite.name, [["compare", *([target] if target else []), *overrides]], folder
        tasks = []
        for i, run in enumerate(suite.runs):
            raw = run.model_dump(mode="json")
            raw["tracking"]["experiment"] = suite.experiment
            path = folder / "configs" / f"{i:03d}.yaml"
            atomic_write(path, yaml.safe_dump(raw, sort_keys=False))
            tasks.append(["train", "--config", str(path.resolve()), "--resume"])
        return suite.name, tasks, folder
    if kind == "sweep":
        from .sweep import load_sweep

        sweep = load_sweep(target, overrides)
        folder = _new_folder(f"sweep-{sweep.name}-{stamp}")
        workers = 1 if cfg.backend == "cloud" else cfg.workers  # cloud: one worker per VM node
        return sweep.name, [["sweep", target, *overrides] for _ in range(workers)], folder
    raise EchoesError(f"unknown launch '{kind}' — use train, compare or sweep")


def _new_folder(name: str) -> Path:
    folder = (_launch_root() / re.sub(r"[^A-Za-z0-9_.-]+", "-", name)).resolve()
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    (folder / "configs").mkdir(exist_ok=True)
    return folder


def make_tasks(argvs: list[list[str]], folder: Path, uri: str) -> list[Task]:
    logs = folder / "logs"
    return [Task(argv, str(Path.cwd()), {"MLFLOW_TRACKING_URI": uri}, str(logs / f"{i:03d}.log"),
                 str(logs / f"{i:03d}.exit")) for i, argv in enumerate(argvs)]


def launch(kind: str, target: str | None, overrides: list[str], cfg: LaunchConfig, *, dry_run: bool = False,
           wait: bool = False, echo: Echo = print) -> Launch:
    """Plan the tasks and start them on ``cfg.backend``; return the recorded launch."""
    uri = tracking_uri(cfg)
    name, argvs, folder = plan(kind, target, overrides, cfg)
    tasks = make_tasks(argvs, folder, uri)
    record = Launch(kind, name, str(folder), cfg.backend, [asdict(t) for t in tasks])
    if cfg.backend == "local":
        record.pid = os.getpid()
        record.save()
        run_local(tasks, cfg.workers, echo)
    elif cfg.backend == "slurm":
        record.job_ids = submit_slurm(tasks, cfg, folder, name)
        record.save()
        echo(f"submitted {len(tasks)} task(s) to Slurm: job {', '.join(_arrays(record.job_ids))}  "
             f"(echoes launch status {folder})")
        if wait:
            wait_slurm(record, echo)
    else:
        record.cluster = cfg.cluster or re.sub(r"[^a-z0-9-]+", "-", f"echoes-{name}".lower())[:60]
        nodes = cfg.workers if kind == "sweep" else 1
        path = atomic_write(folder / "sky.yaml", sky_task(argvs[0], uri, cfg, record.cluster, folder, nodes))
        if dry_run:
            echo(path.read_text())
        else:
            record.save()
            launch_cloud(path, record.cluster, cfg, folder, echo)
    if not dry_run:
        record.save()
    return record


# --- local --------------------------------------------------------------------------------------

def run_local(tasks: list[Task], workers: int, echo: Echo) -> None:
    def one(t: Task) -> int:
        try:
            t()
        except RuntimeError as e:
            echo(f"failed: {e}")
            return 1
        echo(f"done: echoes {shlex.join(t.argv)}")
        return 0

    with ThreadPoolExecutor(max_workers=workers) as pool:
        failed = sum(pool.map(one, tasks))
    if failed:
        raise EchoesError(f"{failed} of {len(tasks)} task(s) failed — their logs say why")


# --- slurm --------------------------------------------------------------------------------------

def _executor(cfg: LaunchConfig, folder: Path, name: str) -> Any:
    try:
        import submitit
    except ImportError:
        raise EchoesError("--on slurm needs submitit — pip install 'echoes[slurm]'") from None
    ex = submitit.AutoExecutor(folder=str(folder / "logs" / "slurm"), cluster="slurm")
    params: dict[str, Any] = {"name": f"echoes-{name}", "timeout_min": cfg.time, "cpus_per_task": cfg.cpus,
                              "slurm_array_parallelism": cfg.array_parallelism,
                              "slurm_additional_parameters": dict(cfg.sbatch)}
    if cfg.gpus:
        count = cfg.gpus.rsplit(":", 1)[-1]
        if not count.isdigit():
            raise EchoesError(f"--gpus {cfg.gpus}: Slurm takes a count per node, e.g. --gpus 2")
        params["gpus_per_node"] = int(count)
    if cfg.partition:
        params["slurm_partition"] = cfg.partition
    if cfg.mem_gb:
        params["mem_gb"] = cfg.mem_gb
    if cfg.account:
        params["slurm_account"] = cfg.account
    ex.update_parameters(**params)
    return ex


def submit_slurm(tasks: list[Task], cfg: LaunchConfig, folder: Path, name: str) -> list[str]:
    """One job array (one element per task); submitit requeues a preempted or timed-out element."""
    ex = _executor(cfg, folder, name)
    try:
        with ex.batch():
            jobs = [ex.submit(t) for t in tasks]
    except Exception as e:  # sbatch refused: bad partition, account, resources
        raise EchoesError(f"Slurm refused the jobs: {str(e).strip().splitlines()[-1]} — check the partition, "
                          "account and resources (--partition, --account, --gpus, --mem-gb, --time)") from None
    return [str(j.job_id) for j in jobs]


def _arrays(job_ids: list[str]) -> list[str]:
    return sorted({j.split("_")[0] for j in job_ids})


def _squeue(job_ids: list[str]) -> dict[str, str]:
    """State of each job still known to Slurm (array elements as JOB_INDEX)."""
    out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(_arrays(job_ids)), "-o", "%i %T"], capture_output=True,
                         text=True)
    return dict(line.split()[:2] for line in out.stdout.splitlines() if line.strip())


def task_states(record: Launch) -> list[str]:
    """One state per task: its exit code when finished, else what Slurm / the launcher says."""
    queue = _squeue(record.job_ids) if record.on == "slurm" and record.job_ids else {}
    states = []
    for i, t in enumerate(record.tasks):
        done = Path(t["exit_file"])
        if record.on == "slurm" and record.job_ids[i] in queue:  # queued, running, or requeued
            states.append(queue[record.job_ids[i]].lower())
        elif done.is_file():
            code = done.read_text().strip()
            states.append("done" if code == "0" else f"failed (exit {code})")
        elif record.on == "slurm":
            states.append("ended without an exit code")
        else:
            states.append("running" if record.pid and _alive(record.pid) else "ended without an exit code")
    return states


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_slurm(record: Launch, echo: Echo, poll: float = 2.0) -> None:
    while True:
        states = task_states(record)
        if not any(s in ("pending", "running", "requeued", "configuring", "completing") for s in states):
            break
        time.sleep(poll)
    failed = [i for i, s in enumerate(states) if s != "done"]
    if failed:
        raise EchoesError(f"{len(failed)} of {len(states)} task(s) did not finish: "
                          + ", ".join(f"{record.tasks[i]['log']} ({states[i]})" for i in failed[:3]))
    echo(f"all {len(states)} task(s) done")


# --- cloud --------------------------------------------------------------------------------------

VM_VENV = "~/echoes-venv"


def sky_task(argv: list[str], uri: str, cfg: LaunchConfig, name: str, folder: Path, nodes: int = 1) -> str:
    """The SkyPilot task YAML: sync the code, mount the data, set up as the README does, run the
    command reporting to the tracking server, and tear the VM down when idle (or after max_hours)."""
    resources: dict[str, Any] = {"autostop": {"idle_minutes": cfg.idle_minutes, "down": True, "wait_for": "jobs"}}
    if cfg.gpus and cfg.gpus.isdigit():
        raise EchoesError(f"--gpus {cfg.gpus}: the cloud needs a GPU type too, e.g. --gpus A100:{cfg.gpus}")
    for key, value in (("accelerators", cfg.gpus), ("cloud", cfg.cloud), ("region", cfg.region)):
        if value:
            resources[key] = value
    if cfg.spot:
        resources["use_spot"] = True
        del resources["autostop"]  # a managed job (sky jobs launch) tears its VM down itself
    mounts = dict(cfg.mounts)
    if cfg.code == "repo":
        if not (REPO / "pyproject.toml").is_file():
            raise EchoesError(f"echoes is not running from a checkout ({REPO}) — use --code wheel")
        setup = "make setup"  # the README's setup: .venv with the pinned versions
        echoes = ".venv/bin/echoes"
    else:
        mounts["~/echoes-dist"] = str(folder / "dist")
        setup = f"python3 -m venv {VM_VENV} && {VM_VENV}/bin/pip install -q ~/echoes-dist/*.whl"
        echoes = f"{VM_VENV}/bin/echoes"
    seconds = int(cfg.max_hours * 3600)
    task: dict[str, Any] = {"name": name, "resources": resources}
    if nodes > 1:
        task["num_nodes"] = nodes
    if cfg.code == "repo":
        task["workdir"] = str(REPO)
    if mounts:
        task["file_mounts"] = mounts
    task |= {"envs": {"MLFLOW_TRACKING_URI": uri}, "setup": setup,
             # the hard limit: the command is stopped after max_hours, then the idle VM goes down
             "run": f"timeout --signal=INT {seconds}s {echoes} {shlex.join(argv)}"}
    return yaml.safe_dump(task, sort_keys=False)


def launch_cloud(path: Path, cluster: str, cfg: LaunchConfig, folder: Path, echo: Echo) -> None:
    if shutil.which("sky") is None:
        raise EchoesError("--on cloud needs SkyPilot — pip install 'echoes[cloud]', then `sky check`")
    if cfg.code == "wheel":
        build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(folder / "dist"),
                                str(REPO)], capture_output=True, text=True)
        if build.returncode:
            raise EchoesError(f"building the echoes wheel failed: {build.stderr.strip()[-200:]}")
    # spot VMs run as a managed job: SkyPilot relaunches it after a preemption and it resumes
    cmd = (["sky", "jobs", "launch", "-y", "-n", cluster, str(path)] if cfg.spot
           else ["sky", "launch", "-y", "-c", cluster, str(path)])
    echo("$ " + shlex.join(cmd))
    if subprocess.run(cmd).returncode:
        raise EchoesError(f"`{shlex.join(cmd[:3])}` failed — check `sky check` (cloud credentials) and {path}")


# --- status / cancel ----------------------------------------------------------------------------

def status(folder: str | None, echo: Echo = print) -> list[str]:
    record = Launch.load(folder)
    echo(f"{record.kind} {record.name} on {record.on}: {record.folder}")
    if record.on == "cloud":
        subprocess.run(["sky", "status", record.cluster or ""])
        return []
    states = task_states(record)
    for t, s in zip(record.tasks, states, strict=True):
        echo(f"  {s:<18} echoes {shlex.join(t['argv'])}")
    return states


def cancel(folder: str | None, echo: Echo = print) -> None:
    record = Launch.load(folder)
    if record.on == "slurm":
        subprocess.run(["scancel", *_arrays(record.job_ids)], check=False)
    elif record.on == "cloud":
        subprocess.run(["sky", "down", "-y", record.cluster or ""], check=False)
    elif record.pid and _alive(record.pid):
        os.killpg(os.getpgid(record.pid), signal.SIGTERM)
    echo(f"cancelled {record.kind} {record.name} ({record.on})")
