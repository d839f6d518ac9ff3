"""Hyperparameter sweeps on Optuna: one study, many trials, each trial an MLflow child run.

```yaml
name: lstm-tpe                     # the study; its journal is <results_dir>/sweeps/<name>/
base: {model: lstm, data: uea:BasicMotions, train: {epochs: 30}}   # an experiment, or a YAML path
sampler: tpe                       # grid | random | tpe, or {name: tpe, n_startup_trials: 5}
trials: 20                         # grid: every point, so leave it out
objective: val_accuracy            # any metric `echoes train` reports
direction: maximize
pruning: true                      # median pruning on the per-epoch objective, or MedianPruner options
space:
  train.lr: {float: [1.0e-4, 1.0e-1], log: true}
  model.hidden_size: {int: [16, 256], log: true}
  model.num_layers: [1, 2]         # a list: categorical (with sampler grid, the grid's values)
# points: [{train.lr: 5.0e-5, model.dropout: 0.5}, ...]   # grid only: listed configurations
storage: null                      # default: a JournalFileBackend file; or a database URL
```

How trials are never lost or duplicated: when the study is created (or resumed) every trial
of the budget is enqueued up front as a WAITING "slot" — with its parameters for a grid, empty
for random/TPE, whose sampler fills them when the slot starts. Workers claim slots atomically
through the storage (WAITING → RUNNING succeeds for one worker only), so N workers on one
machine or many share a study without running anything twice. A running trial records its
worker (host, pid) and a heartbeat; a trial whose worker died (same host: the process is gone;
elsewhere: no heartbeat for 4 intervals) is marked failed by any other worker and retried as a
new trial with the same parameters, up to ``retries`` times. Re-running the command resumes:
it enqueues what is missing and runs what is left.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import itertools
import json
import math
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .config import (
    ExperimentConfig,
    build_config,
    config_error,
    deep_merge,
    parse_overrides,
    read_yaml,
    set_dotted,
)
from .errors import EchoesError, did_you_mean
from .tracking import RunStopped
from .utils import atomic_write, find_config, packaged_configs

Echo = Callable[[str], None]
HOST = socket.gethostname()
POLL_SECONDS = 1.0  # how often an idle worker looks for retried trials while others run
LOST_AFTER_BEATS = 4  # missed heartbeats before a trial on another host counts as lost


class SweepConfig(BaseModel):
    """A sweep file: the base experiment, the search space and how to search it."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    experiment: str | None = None  # MLflow experiment; default: sweep-<name>
    base: dict[str, Any] | str = Field(default_factory=dict)
    space: dict[str, Any] = Field(default_factory=dict)
    points: list[dict[str, Any]] | None = None
    sampler: str | dict[str, Any] = "tpe"
    trials: int | None = Field(None, ge=1)
    objective: str = "val_accuracy"
    direction: Literal["maximize", "minimize"] = "maximize"
    pruning: bool | dict[str, Any] = True
    storage: str | None = None
    heartbeat: float = Field(30.0, gt=0)  # seconds between a running trial's heartbeats
    retries: int = Field(2, ge=0)  # times a trial whose worker was lost is run again


SWEEP_KEYS = set(SweepConfig.model_fields)
SAMPLERS = ("grid", "random", "tpe")


@dataclass
class Sweep:
    """A validated sweep: the config, the resolved base experiment and the distributions."""

    cfg: SweepConfig
    base: dict[str, Any]  # the experiment every trial starts from (overrides applied)
    distributions: dict[str, Any]  # dotted config key → optuna distribution
    points: list[dict[str, Any]] | None  # grid: one parameter dict per trial

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def sampler_name(self) -> str:
        return self.cfg.sampler if isinstance(self.cfg.sampler, str) else self.cfg.sampler.get("name", "")

    @property
    def experiment(self) -> str:
        return self.cfg.experiment or f"sweep-{self.name}"

    @property
    def base_config(self) -> ExperimentConfig:
        return build_config(self.base)

    @property
    def folder(self) -> Path:
        return Path(self.base_config.tracking.results_dir) / "sweeps" / self.name

    @property
    def storage_url(self) -> str:
        return self.cfg.storage or str(self.folder / "study.journal")

    @property
    def budget(self) -> int:
        return len(self.points) if self.points is not None else int(self.cfg.trials or 20)

    def config_for(self, params: dict[str, Any]) -> ExperimentConfig:
        raw = copy.deepcopy(self.base)
        for key, value in params.items():
            set_dotted(raw, key, value)
        return build_config(raw)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a worker process."""
        return {"cfg": self.cfg.model_dump(), "base": self.base}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sweep:
        return make_sweep(SweepConfig.model_validate(d["cfg"]), d["base"])


# --- reading a sweep file ----------------------------------------------------------------


def load_sweep(path: str, overrides: list[str] | None = None) -> Sweep:
    """Read a sweep file; ``KEY=VALUE`` overrides set sweep keys (trials=50) or base keys."""
    p = find_config("sweeps", path)
    if not p.is_file():
        raise EchoesError(f"sweep '{path}' not found — give a YAML path or one of: "
                          + ", ".join(packaged_configs("sweeps")))
    raw = read_yaml(p)
    unknown_keys = set(raw) - SWEEP_KEYS
    if unknown_keys:
        key = sorted(unknown_keys)[0]
        raise EchoesError(f"sweep {p}: unknown key '{key}' — {did_you_mean(key, SWEEP_KEYS)}")
    parsed = parse_overrides(overrides or [])
    raw.update({k: v for k, v in parsed.items() if k in SWEEP_KEYS and k != "base"})
    extra = parsed.get("base") if isinstance(parsed.get("base"), dict) else {}
    base_overrides = deep_merge(extra, {k: v for k, v in parsed.items() if k not in SWEEP_KEYS})
    raw.setdefault("name", p.stem)
    try:
        cfg = SweepConfig.model_validate(raw)
    except ValidationError as e:
        err = config_error(e)
        raise EchoesError(f"sweep {p}: {str(err).replace('config key', 'key')}") from None
    base = cfg.base
    if isinstance(base, str):  # a path, relative to the sweep file or the working folder
        base_path = Path(base) if Path(base).exists() else p.parent / base
        base = read_yaml(base_path)
    return make_sweep(cfg, deep_merge(base, base_overrides))


def make_sweep(cfg: SweepConfig, base: dict[str, Any]) -> Sweep:
    sampler = cfg.sampler if isinstance(cfg.sampler, str) else cfg.sampler.get("name")
    if sampler not in SAMPLERS:
        raise EchoesError(f"sweep {cfg.name}: unknown sampler '{sampler}' — {did_you_mean(str(sampler), SAMPLERS)}")
    points = None
    if cfg.points is not None:
        if sampler != "grid" or cfg.space:
            raise EchoesError(f"sweep {cfg.name}: 'points' lists the configurations of a grid — "
                              "use sampler: grid and leave 'space' out")
        points = _check_points(cfg)
        distributions = {k: _categorical(cfg.name, k, list(dict.fromkeys(pt[k] for pt in points)))
                         for k in points[0]}
    else:
        distributions = {k: parse_distribution(cfg.name, k, spec) for k, spec in cfg.space.items()}
        if sampler == "grid":
            points = _grid(cfg.name, distributions)
    if not distributions:
        raise EchoesError(f"sweep {cfg.name}: the search space is empty — add keys under 'space'")
    if points is not None and cfg.trials not in (None, len(points)):
        raise EchoesError(f"sweep {cfg.name}: a grid runs all its {len(points)} points — leave 'trials' out")
    sweep = Sweep(cfg, base, distributions, points)
    _check_sweep(sweep)
    return sweep


def _check_points(cfg: SweepConfig) -> list[dict[str, Any]]:
    points = cfg.points or []
    if not points:
        raise EchoesError(f"sweep {cfg.name}: 'points' is empty — list at least one configuration")
    keys = set(points[0])
    for i, pt in enumerate(points):
        if set(pt) != keys:
            raise EchoesError(f"sweep {cfg.name}: point {i + 1} sets {sorted(pt)}, the first sets "
                              f"{sorted(keys)} — give every point the same keys")
    return [dict(pt) for pt in points]


def _categorical(name: str, key: str, choices: list[Any]) -> Any:
    import optuna

    if not choices or not all(c is None or isinstance(c, bool | int | float | str) for c in choices):
        raise EchoesError(f"sweep {name}: '{key}' values must be numbers, strings or booleans, got {choices!r}")
    return optuna.distributions.CategoricalDistribution(choices)


def parse_distribution(name: str, key: str, spec: Any) -> Any:
    """``[a, b, c]`` → categorical; ``{int: [lo, hi]}`` / ``{float: [lo, hi]}`` with ``log``/``step``."""
    import optuna.distributions as od

    if isinstance(spec, list):
        return _categorical(name, key, spec)
    hint = "a list of values or a mapping like {float: [1.0e-4, 1.0e-1], log: true}"
    if not isinstance(spec, dict):
        raise EchoesError(f"sweep {name}: space key '{key}' must be {hint}, got {spec!r}")
    kinds = [k for k in ("int", "float", "categorical") if k in spec]
    extra = set(spec) - {"int", "float", "categorical", "log", "step"}
    if len(kinds) != 1 or extra:
        raise EchoesError(f"sweep {name}: space key '{key}' must be {hint}, got {spec!r}")
    kind = kinds[0]
    if kind == "categorical":
        return _categorical(name, key, list(spec["categorical"]))
    bounds = spec[kind]
    if not (isinstance(bounds, list) and len(bounds) == 2
            and all(isinstance(b, int | float) and not isinstance(b, bool) for b in bounds)):
        raise EchoesError(f"sweep {name}: '{key}': {kind} needs [low, high], got {bounds!r}")
    log, step = bool(spec.get("log", False)), spec.get("step")
    try:
        if kind == "int":
            if not all(float(b).is_integer() for b in bounds):
                raise ValueError(f"int bounds must be whole numbers, got {bounds}")
            return od.IntDistribution(int(bounds[0]), int(bounds[1]), log=log, step=int(step or 1))
        return od.FloatDistribution(float(bounds[0]), float(bounds[1]), log=log,
                                    step=None if step is None else float(step))
    except ValueError as e:
        raise EchoesError(f"sweep {name}: '{key}': {e}") from None


def _grid(name: str, distributions: dict[str, Any]) -> list[dict[str, Any]]:
    import optuna.distributions as od

    for key, d in distributions.items():
        if not isinstance(d, od.CategoricalDistribution):
            raise EchoesError(f"sweep {name}: a grid needs lists of values, but '{key}' is a range — "
                              "list its values, or use sampler: random or tpe")
    keys = list(distributions)
    combos = itertools.product(*(distributions[k].choices for k in keys))
    return [dict(zip(keys, combo, strict=True)) for combo in combos]


def _first_value(d: Any) -> Any:
    return d.choices[0] if hasattr(d, "choices") else d.low


def _check_sweep(sweep: Sweep) -> None:
    """Fail before any trial runs: names, keys the model does not take, sampler options."""
    from .models import MODELS
    from .registry import check_kwargs
    from .run import check_experiment

    cfg = sweep.config_for(sweep.points[0] if sweep.points else
                           {k: _first_value(d) for k, d in sweep.distributions.items()})
    check_experiment(cfg)
    check_kwargs(MODELS.get(cfg.model.name), cfg.model.options(), f"model '{cfg.model.name}'")
    make_sampler(sweep, 0)
    make_pruner(sweep)


# --- Optuna pieces --------------------------------------------------------------------------


def make_sampler(sweep: Sweep, seed: int) -> Any:
    """A fresh sampler per trial, seeded by the trial number: reproducible, and parallel
    workers do not propose the same point."""
    import optuna

    from .registry import check_kwargs

    options = {} if isinstance(sweep.cfg.sampler, str) else {
        k: v for k, v in sweep.cfg.sampler.items() if k != "name"}
    if sweep.sampler_name == "grid":  # every grid trial's parameters are fixed when enqueued
        return optuna.samplers.RandomSampler(seed=seed)
    cls = {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler}[sweep.sampler_name]
    if sweep.sampler_name == "tpe":
        options = {"constant_liar": True, **options}  # running trials count as pending, not unknown
    check_kwargs(cls, {**options, "seed": seed}, f"sampler '{sweep.sampler_name}'")
    return cls(seed=seed, **options)


def make_pruner(sweep: Sweep) -> Any:
    import optuna

    from .registry import check_kwargs

    if sweep.cfg.pruning is False:
        return optuna.pruners.NopPruner()
    options = {} if sweep.cfg.pruning is True else dict(sweep.cfg.pruning)
    check_kwargs(optuna.pruners.MedianPruner, options, "pruning")
    return optuna.pruners.MedianPruner(**options)


def make_storage(url: str) -> Any:
    """A database URL (postgresql://, sqlite:///...) → RDBStorage; anything else is a journal file."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "://" in url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as e:
            raise EchoesError(f"cannot open sweep storage '{url}': {str(e).splitlines()[0]} — "
                              "check the database URL") from None
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(url).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    # An absolute path matters: Optuna's lock is a symlink to it, and a relative target dangles,
    # which stops it from ever breaking the stale lock of a worker killed while writing.
    return JournalStorage(JournalFileBackend(str(path)))


def load_study(sweep: Sweep, storage: Any, seed: int = 0) -> Any:
    import optuna

    return optuna.load_study(study_name=sweep.name, storage=storage,
                             sampler=make_sampler(sweep, seed), pruner=make_pruner(sweep))


def suggest(trial: Any, key: str, d: Any) -> Any:
    import optuna.distributions as od

    if isinstance(d, od.CategoricalDistribution):
        return trial.suggest_categorical(key, d.choices)
    if isinstance(d, od.IntDistribution):
        return trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log)


def spec_fingerprint(sweep: Sweep) -> str:
    """What makes two runs of a sweep the same study (not sampler, budget or tracking)."""
    from optuna.distributions import distribution_to_json

    base = {k: v for k, v in sweep.base.items() if k != "tracking"}
    return json.dumps({"base": base, "objective": sweep.cfg.objective, "points": sweep.points,
                       "space": {k: distribution_to_json(d) for k, d in sweep.distributions.items()}},
                      sort_keys=True, default=str)


# --- preparing a study ------------------------------------------------------------------------


@contextlib.contextmanager
def _prepare_lock(sweep: Sweep) -> Iterator[None]:
    """Serialise study preparation between commands on one journal file (not needed for RDB:
    creating a study there is atomic)."""
    if "://" in sweep.storage_url:
        yield
        return
    import fcntl

    path = Path(sweep.storage_url + ".prepare.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_study(sweep: Sweep, echo: Echo = print) -> Any:
    """Create or resume the study: check it is the same sweep, enqueue missing trials,
    and make sure the sweep has its MLflow parent run."""
    import optuna

    storage = make_storage(sweep.storage_url)
    with _prepare_lock(sweep):
        try:
            optuna.create_study(study_name=sweep.name, storage=storage, direction=sweep.cfg.direction)
            resumed = False
        except optuna.exceptions.DuplicatedStudyError:
            resumed = True
        study = load_study(sweep, storage)
        if study.direction.name.lower() != sweep.cfg.direction:
            raise EchoesError(f"sweep '{sweep.name}' exists in {sweep.storage_url} with direction "
                              f"{study.direction.name.lower()} — keep it, or give this sweep another name")
        fingerprint = spec_fingerprint(sweep)
        known = study.user_attrs.get("echoes.spec")
        if known is None:
            study.set_user_attr("echoes.spec", fingerprint)
        elif known != fingerprint:
            raise EchoesError(f"sweep '{sweep.name}' already exists in {sweep.storage_url} with another base, "
                              f"space or objective — give this one another name (name=...) or delete "
                              f"that study to start over")
        added = refill(sweep, study)
        _parent_run(sweep, study)
    if resumed:
        counts = _counts(study.get_trials(deepcopy=False), sweep.budget)
        echo(f"resuming sweep '{sweep.name}': {counts['finished']}/{sweep.budget} trials finished"
             + (f", {added} enqueued" if added else ""))
    return study


def _slot(t: Any) -> int:
    return int(t.user_attrs.get("slot", -1))


def refill(sweep: Sweep, study: Any) -> int:
    """Enqueue each slot of the budget that has no trial, or whose last trial was lost
    (its worker died before it could be retried). Returns how many were enqueued."""
    from optuna.trial import TrialState

    by_slot: dict[int, list[Any]] = {}
    for t in study.get_trials(deepcopy=False):
        by_slot.setdefault(_slot(t), []).append(t)
    added = 0
    for slot in range(sweep.budget):
        trials = by_slot.get(slot)
        if not trials:
            params = sweep.points[slot] if sweep.points is not None else {}
            study.enqueue_trial(params, user_attrs={"slot": slot, "attempt": 1})
            added += 1
            continue
        last = max(trials, key=lambda t: t.number)
        if last.state == TrialState.FAIL and last.user_attrs.get("lost"):
            added += _retry(sweep, study, last)
    return added


def _retry(sweep: Sweep, study: Any, t: Any, params: dict[str, Any] | None = None) -> int:
    """Enqueue a lost trial again with the same parameters, unless its retries are used up."""
    attempt = int(t.user_attrs.get("attempt", 1))
    if attempt > sweep.cfg.retries:
        return 0
    if sweep.points is not None:
        params = sweep.points[_slot(t)]
    params = dict(t.params) if params is None else params
    study.enqueue_trial(params, user_attrs={"slot": _slot(t), "attempt": attempt + 1, "retry_of": t.number})
    return 1


def _mlflow(sweep: Sweep) -> tuple[Any, str] | None:
    tracking = sweep.base_config.tracking
    if not tracking.enabled:
        return None
    from mlflow.tracking import MlflowClient

    from .tracking import ensure_store, store_uri

    uri = store_uri(tracking)
    ensure_store(uri)
    return MlflowClient(uri), uri


def _parent_run(sweep: Sweep, study: Any) -> str | None:
    """The sweep's MLflow run, parent of every trial's run; reopened when the sweep resumes."""
    tracked = _mlflow(sweep)
    if tracked is None:
        return None
    client, uri = tracked
    run_id = study.user_attrs.get("mlflow_parent_run_id")
    if run_id:
        try:
            if client.get_run(run_id).info.lifecycle_stage == "active":
                client.update_run(run_id, status="RUNNING")
                return run_id
        except Exception:  # deleted, or another store: start a new parent run
            pass
    from .tracking import experiment_id

    tags = {"echoes.sweep": sweep.name, "sweep.sampler": sweep.sampler_name, "sweep.objective":
            sweep.cfg.objective, "sweep.direction": sweep.cfg.direction, "sweep.storage": sweep.storage_url}
    run = client.create_run(experiment_id(client, uri, sweep.experiment), run_name=f"sweep {sweep.name}",
                            tags=tags)
    run_id = run.info.run_id
    from optuna.distributions import distribution_to_json

    _log_text(client, run_id, "space.json", json.dumps(
        {k: json.loads(distribution_to_json(d)) for k, d in sweep.distributions.items()}, indent=2))
    _log_text(client, run_id, "sweep.yaml", yaml.safe_dump(
        {**sweep.cfg.model_dump(exclude_none=True), "base": sweep.base}, sort_keys=False))
    study.set_user_attr("mlflow_parent_run_id", run_id)
    return run_id


def _log_text(client: Any, run_id: str, name: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        client.log_artifact(run_id, str(path))


# --- workers ---------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from /proc; None where there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return ("X", "")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], fields[19]


def worker_identity() -> dict[str, Any]:
    stat = _proc_stat(os.getpid())
    return {"host": HOST, "pid": os.getpid(), "start": stat[1] if stat else None}


def _alive(worker: dict[str, Any]) -> bool:
    pid = int(worker["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, start = stat
    if state in ("Z", "X"):  # exited, not yet reaped by its parent
        return False
    return not worker.get("start") or start == worker["start"]  # else: the pid was reused


def lost_reason(t: Any, heartbeat: float, now: float | None = None) -> str | None:
    """Why a RUNNING trial's worker counts as gone, or None while it may still be working."""
    worker = t.system_attrs.get("echoes:worker")
    if worker and worker.get("host") == HOST:
        return None if _alive(worker) else f"worker {worker['pid']} on {HOST} stopped"
    now = time.time() if now is None else now
    beat = t.system_attrs.get("echoes:heartbeat")
    if beat is None:
        beat = t.datetime_start.timestamp() if t.datetime_start else now
    if now - beat > LOST_AFTER_BEATS * heartbeat:
        return f"no heartbeat for {now - beat:.0f}s"
    return None


class Heartbeat:
    """Records the trial's worker, then beats every `interval` seconds from a thread."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _beat(self) -> None:
        self.storage.set_trial_system_attr(self.trial_id, "echoes:heartbeat", time.time())

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self._beat()
            except Exception:  # the trial was finished meanwhile (e.g. reaped as lost)
                return

    def __enter__(self) -> Heartbeat:
        self.storage.set_trial_system_attr(self.trial_id, "echoes:worker", worker_identity())
        self._beat()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def reap(sweep: Sweep, storage: Any, echo: Echo = print) -> int:
    """Mark every RUNNING trial whose worker is gone as failed, and enqueue its retry. Safe to
    run from any number of workers: only one of them wins the RUNNING → FAIL change."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(sweep.name)
    reaped = 0
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        why = lost_reason(t, sweep.cfg.heartbeat)
        if why is None:
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            storage.set_trial_user_attr(trial_id, "lost", why)
            storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            continue  # finished meanwhile, or another worker reaped it first
        study = load_study(sweep, storage)
        retried = _retry(sweep, study, t)
        _fail_child_run(sweep, study, t.number, why)
        echo(f"trial {t.number} lost ({why}): marked failed, "
             + ("retried as a new trial" if retried else f"not retried after {sweep.cfg.retries} retries"))
        reaped += 1
    return reaped


def _fail_child_run(sweep: Sweep, study: Any, number: int, why: str) -> None:
    parent = study.user_attrs.get("mlflow_parent_run_id")
    tracked = _mlflow(sweep) if parent else None
    if tracked is None:
        return
    client, _ = tracked
    parent_run = client.get_run(parent)
    runs = client.search_runs([parent_run.info.experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{parent}' and tags.`sweep.trial` = '{number}' "
        "and attributes.status = 'RUNNING'"))
    for run in runs:
        client.set_tag(run.info.run_id, "stopped", f"worker lost: {why}")
        client.set_terminated(run.info.run_id, "FAILED")


def claim(sweep: Sweep, storage: Any) -> Any | None:
    """Atomically take the next WAITING trial of the budget (RUNNING for this worker only)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(sweep.name)
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        if _slot(t) >= sweep.budget:  # the budget was lowered on resume
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return t
        except UpdateFinishedTrialError:
            continue
    return None


class TrialPruned(RunStopped):
    """The pruner stopped this trial: its MLflow run ends KILLED, its Optuna trial PRUNED."""


def _counts(trials: list[Any], budget: int) -> dict[str, int]:
    from optuna.trial import TrialState

    """Trials by state ('failed' excludes 'lost': those whose worker died), and 'finished':
    slots of the budget whose latest trial is done."""
    c = {s: sum(t.state == getattr(TrialState, s.upper()) for t in trials)
         for s in ("complete", "pruned", "running", "waiting")}
    c["lost"] = sum(t.state == TrialState.FAIL and bool(t.user_attrs.get("lost")) for t in trials)
    c["failed"] = sum(t.state == TrialState.FAIL for t in trials) - c["lost"]
    latest: dict[int, Any] = {}
    for t in trials:
        if 0 <= _slot(t) < budget and (_slot(t) not in latest or t.number > latest[_slot(t)].number):
            latest[_slot(t)] = t
    c["finished"] = sum(t.state.is_finished() for t in latest.values())
    return c


def _params_text(params: dict[str, Any]) -> str:
    return "  ".join(f"{k}={_fmt(v)}" for k, v in params.items())


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _objective(result: dict[str, Any], objective: str) -> float:
    value = result.get(objective)
    if not isinstance(value, int | float) or isinstance(value, bool):
        numeric = sorted(k for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool))
        raise EchoesError(f"objective '{objective}' is not a metric of this run — {did_you_mean(objective, numeric)}")
    return float(value)


def run_trial(sweep: Sweep, storage: Any, frozen: Any, datasets: dict[str, Any], echo: Echo) -> str:
    """Run one claimed trial: train, report epochs to the pruner, tell Optuna the outcome."""
    import optuna
    from optuna.trial import TrialState

    from .run import Metric, Tag, load_data, run_experiment

    study = load_study(sweep, storage, seed=sweep.base_config.seed * 100_003 + frozen.number)
    study_id = storage.get_study_id_from_name(sweep.name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
    objective = sweep.cfg.objective
    with Heartbeat(storage, trial_id, sweep.cfg.heartbeat):
        trial = optuna.trial.Trial(study, trial_id)
        params = {k: suggest(trial, k, d) for k, d in sweep.distributions.items()}
        cfg = sweep.config_for(params)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            value = metrics.get(objective)
            if value is None or not math.isfinite(value):
                return
            trial.report(value, epoch)
            if trial.should_prune():
                raise TrialPruned(f"pruned at epoch {epoch}")

        state, value, note = TrialState.COMPLETE, None, ""
        try:
            key = json.dumps(cfg.data.model_dump(), sort_keys=True, default=str)
            if key not in datasets:
                datasets[key] = load_data(cfg)
            result = run_experiment(cfg, datasets[key], on_epoch=on_epoch, experiment=sweep.experiment,
                           parent_run_id=study.user_attrs.get("mlflow_parent_run_id"),
                           tags={"sweep": sweep.name, "sweep.trial": frozen.number})
            value = _objective(result, objective)
        except TrialPruned as e:
            state, note = TrialState.PRUNED, str(e)
        except (EchoesError, KeyboardInterrupt) as e:  # the sweep stops: this trial runs again on resume
            trial.set_user_attr("lost", "interrupted" if isinstance(e, KeyboardInterrupt) else f"error: {e}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            if isinstance(e, KeyboardInterrupt):  # only this worker was stopped: others may go on
                _retry(sweep, study, frozen, params)
            raise
        except Exception as e:  # e.g. out of memory for this configuration: record it, go on
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
            state, note = TrialState.FAIL, f"{type(e).__name__}: {e}"
        else:
            if not math.isfinite(value):
                state, note = TrialState.FAIL, f"{objective} is {value}"
            for k in (Metric.TEST_ACCURACY, Metric.VAL_ACCURACY, Metric.TRAIN_SECONDS, Tag.RUN_ID):
                if result.get(k) is not None:
                    trial.set_user_attr(k, result[k])
    try:
        study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:  # reaped as lost meanwhile: its retry counts
        echo(f"trial {frozen.number}: finished after being given up as lost; its retry counts")
        return "lost"
    counts = _counts(study.get_trials(deepcopy=False), sweep.budget)
    shown = f"{objective} {value:.4f}" if value is not None else note
    echo(f"[{counts['finished']}/{sweep.budget}] trial {frozen.number} {state.name.lower():<8} "
         f"{shown}  {_params_text(params)}")
    return state.name.lower()


def work(sweep: Sweep, echo: Echo = print) -> None:
    """A worker: claim and run trials until none is waiting and none is running anywhere."""
    from optuna.trial import TrialState

    storage = make_storage(sweep.storage_url)
    study_id = storage.get_study_id_from_name(sweep.name)
    datasets: dict[str, Any] = {}
    while True:
        reap(sweep, storage, echo)
        frozen = claim(sweep, storage)
        if frozen is not None:
            run_trial(sweep, storage, frozen, datasets, echo)
            continue
        running = storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        time.sleep(POLL_SECONDS)  # another worker may die and its trial come back


def _raise_interrupt(signum: int, frame: Any) -> None:  # noqa: ARG001
    raise KeyboardInterrupt


def _worker_main(data: dict[str, Any], workers: int) -> None:
    """Entry point of a worker process started by ``run_sweep(workers=N)``."""
    import torch

    signal.signal(signal.SIGTERM, _raise_interrupt)  # terminate → the trial is failed and retried
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))

    def echo(line: str) -> None:
        print(line, flush=True)

    try:
        work(Sweep.from_dict(data), echo)
    except EchoesError as e:
        print(f"echoes: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _work_left(sweep: Sweep) -> bool:
    from optuna.trial import TrialState

    storage = make_storage(sweep.storage_url)
    study_id = storage.get_study_id_from_name(sweep.name)
    return bool(storage.get_all_trials(study_id, deepcopy=False,
                                       states=(TrialState.WAITING, TrialState.RUNNING)))


def _supervise(sweep: Sweep, workers: int, echo: Echo) -> None:
    """Start N worker processes; replace any that is killed, stop all on a user error."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch or MLflow state

    def start() -> Any:
        p = ctx.Process(target=_worker_main, args=(sweep.to_dict(), workers), daemon=False)
        p.start()
        return p

    procs = [start() for _ in range(workers)]
    replacements = 0
    try:
        while procs:
            time.sleep(0.2)
            for p in list(procs):
                if p.exitcode is None:
                    continue
                procs.remove(p)
                if p.exitcode == 0:
                    continue
                if p.exitcode == 2:
                    raise EchoesError(f"a sweep worker stopped on the error above — fix it, then run the "
                                      f"same command to resume sweep '{sweep.name}'")
                echo(f"worker {p.pid} stopped (exit code {p.exitcode}); its trial will be retried")
                if replacements < 3 * workers and _work_left(sweep):
                    procs.append(start())
                    replacements += 1
    finally:
        for p in procs:
            if p.exitcode is None:
                p.terminate()  # each fails its running trial and enqueues its retry
        for p in procs:
            p.join(timeout=60)


# --- the whole sweep -------------------------------------------------------------------------


def run_sweep(sweep: Sweep, *, workers: int = 1, echo: Echo = print) -> dict[str, Any]:
    """Create or resume the study, run its trials with `workers` processes, write the results."""
    if workers < 1:
        raise EchoesError(f"--workers must be at least 1, got {workers}")
    space = ", ".join(sweep.distributions)
    echo(f"sweep '{sweep.name}': {sweep.sampler_name} over {space}; {sweep.budget} trials, "
         f"{sweep.cfg.direction} {sweep.cfg.objective}; {workers} worker(s); study in {sweep.storage_url}")
    open_study(sweep, echo)
    if workers == 1:
        work(sweep, echo)
    else:
        _supervise(sweep, workers, echo)
    return finish(sweep)


def finish(sweep: Sweep) -> dict[str, Any]:
    """Write trials.csv and best.yaml beside the study, log them to the parent run, summarise."""
    from optuna.trial import TrialState

    storage = make_storage(sweep.storage_url)
    study = load_study(sweep, storage)
    trials = study.get_trials(deepcopy=False)
    counts = _counts(trials, sweep.budget)
    folder = sweep.folder
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "trials.csv", _trials_csv(sweep, trials))
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    summary: dict[str, Any] = {"sweep": sweep.name, "objective": sweep.cfg.objective,
                               "direction": sweep.cfg.direction, "counts": counts,
                               "storage": sweep.storage_url, "experiment": sweep.experiment,
                               "trials_csv": str(folder / "trials.csv"), "best": None}
    if best is not None:
        cfg = sweep.config_for(best.params)
        header = (f"# Best trial ({best.number}) of sweep '{sweep.name}': {sweep.cfg.objective} = "
                  f"{best.value:.6g}.\n# Run it again: echoes train --config {folder / 'best.yaml'}\n")
        atomic_write(folder / "best.yaml", header + yaml.safe_dump(cfg.model_dump(), sort_keys=False))
        summary["best"] = {"trial": best.number, "value": best.value, "params": best.params,
                           "config": str(folder / "best.yaml"),
                           **{k: best.user_attrs.get(k) for k in ("test_accuracy", "mlflow_run_id")}}
    parent = study.user_attrs.get("mlflow_parent_run_id")
    tracked = _mlflow(sweep) if parent else None
    if tracked is not None:
        client, _ = tracked
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = {f"trials_{k}": v for k, v in counts.items() if k in ("complete", "pruned", "failed", "lost")}
        if best is not None:
            metrics[f"best_{sweep.cfg.objective}"] = best.value
            client.set_tag(parent, "sweep.best_trial", str(best.number))
            client.log_artifact(parent, str(folder / "best.yaml"))
        client.log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        client.log_artifact(parent, str(folder / "trials.csv"))
        if not counts["running"] and not counts["waiting"]:
            client.set_terminated(parent, "FINISHED")
    summary["table"] = _trials_table(sweep, trials)
    return summary


def _trials_csv(sweep: Sweep, trials: list[Any]) -> str:
    buf = io.StringIO()
    keys = list(sweep.distributions)
    extra = ["test_accuracy", "train_seconds", "mlflow_run_id", "slot", "attempt", "retry_of", "lost", "error"]
    writer = csv.writer(buf)
    writer.writerow(["trial", "state", sweep.cfg.objective, *keys, *extra])
    for t in trials:
        writer.writerow([t.number, t.state.name.lower(), "" if t.value is None else t.value,
                         *(t.params.get(k, "") for k in keys), *(t.user_attrs.get(k, "") for k in extra)])
    return buf.getvalue()


def _trials_table(sweep: Sweep, trials: list[Any], top: int = 10) -> str:
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE]
    done.sort(key=lambda t: t.value, reverse=sweep.cfg.direction == "maximize")
    keys = list(sweep.distributions)
    headers = ["trial", sweep.cfg.objective, "test acc", *keys]
    rows = [[str(t.number), f"{t.value:.4f}",
             f"{t.user_attrs['test_accuracy']:.4f}" if "test_accuracy" in t.user_attrs else "—",
             *(_fmt(t.params.get(k, "—")) for k in keys)] for t in done[:top]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


__all__ = ["Sweep", "SweepConfig", "finish", "load_sweep", "open_study", "reap", "run_sweep", "work"]
