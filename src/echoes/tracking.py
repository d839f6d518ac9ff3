"""MLflow tracking: a local SQLite store by default, any tracking server when shared.

The store is created (and migrated) once, before any concurrent writer, with
:func:`ensure_store`. ``tracking=false`` gives a :class:`NullTracker` that
accepts the same calls and writes nothing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from . import __version__
from .config import TrackingConfig
from .errors import EchoesError
from .utils import file_lock, require

_ready: set[str] = set()
_own: set[str] = set()  # default stores under results_dir: echoes makes their folder, never one of a given URI
MODEL_ARTIFACT = "model"  # where every tracked run logs its MLflow model: runs:/ID/model
ARTIFACT = "echoes"  # the saved echoes model inside that MLflow model folder


def store_uri(cfg: TrackingConfig) -> str:
    """cfg.uri, else $MLFLOW_TRACKING_URI, else sqlite:///<results_dir>/mlflow.db."""
    if cfg.uri:
        return cfg.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    root = Path(cfg.results_dir).resolve()
    uri = f"sqlite:///{root / 'mlflow.db'}"
    _own.add(uri)
    return uri


def _quiet_mlflow() -> None:
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no calls home (and no timeouts offline)
    for name in ("alembic", "mlflow", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)  # its errors are raised, and said once


def _clash(e: Exception) -> bool:
    """Another process creating or migrating the same store (tables half made, database locked)."""
    text = str(e).lower()
    return any(s in text for s in ("already exists", "duplicate", "database is locked", "alembic", "no such table"))


def ensure_store(uri: str) -> None:
    """Create or upgrade the tracking store once. A SQLite store is created under a file lock beside
    it (its schema migrations clash when run concurrently), then opened, retrying a clash with a
    process that does not take the lock."""
    if uri in _ready:
        return
    _quiet_mlflow()
    from mlflow.tracking import MlflowClient

    _quiet_mlflow()  # mlflow resets its logger levels on import
    given = "MLFLOW_TRACKING_URI" if os.environ.get("MLFLOW_TRACKING_URI") == uri else "tracking.uri"
    with contextlib.ExitStack() as lock:
        if uri.startswith("sqlite:///"):
            db = Path(uri.removeprefix("sqlite:///"))
            try:
                if uri in _own:
                    db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise EchoesError(f"cannot create the MLflow store's folder {db.parent}: {e.strerror} — set "
                                  "tracking.results_dir to a writable folder") from None
            if not db.parent.is_dir():
                raise EchoesError(f"cannot open MLflow store '{uri}': {db.parent} is not an existing folder "
                                  f"— create it, or fix {given}")
            with contextlib.suppress(OSError):  # a read-only folder: no store can be created there to race over
                lock.enter_context(file_lock(db.with_name(f".{db.name}.lock")))
        for attempt in range(4):
            try:
                MlflowClient(uri).search_experiments(max_results=1)
                break
            except Exception as e:  # unreachable server, bad URI, unwritable file, a migration clash
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                if _clash(e) and attempt < 3:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                fix = ("another process was creating or upgrading it at the same time — run again" if _clash(e)
                       else f"check {given}")
                raise EchoesError(f"cannot open MLflow store '{uri}': {first} — {fix}") from None
    _ready.add(uri)


class RunStopped(Exception):
    """Raised inside a tracked run to end it early on purpose (e.g. a pruned sweep trial):
    the MLflow run ends KILLED with a ``stopped`` tag giving the reason, not FAILED."""


def experiment_id(client: Any, uri: str, name: str) -> str:
    """The id of experiment `name`, created if needed (artifacts beside a SQLite store)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = None
    if uri.startswith("sqlite:///"):
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except Exception:  # created meanwhile by another worker
        return client.get_experiment_by_name(name).experiment_id


# Who runs a run: a RUNNING run whose process is gone was killed (SIGKILL, OOM, power) and is closed
# as KILLED by the next run that starts in its experiment on the same host.
HOST_TAG, PID_TAG, PROCESS_START_TAG = "echoes.host", "echoes.pid", "echoes.process_start"
STOPPED_TAG = "stopped"


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc); None if it is gone or a zombie,
    "" where /proc does not exist."""
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]  # state; starttime (field 22 of proc(5))


def process_tags() -> dict[str, str]:
    """Tags naming this process, so that a later start can tell whether the run's process is alive
    (the start time guards against a reused PID)."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()),
            PROCESS_START_TAG: _process_start(os.getpid()) or ""}


def mark_dead_runs(client: Any, experiment_ids: list[str]) -> list[str]:
    """Close as KILLED (with a ``stopped`` tag) the RUNNING runs of these experiments whose process,
    on this host, is gone; return their ids. Runs of other hosts are left alone: nobody here can tell."""
    host, closed = socket.gethostname(), []
    for run in client.search_runs(experiment_ids, "attributes.status = 'RUNNING'", max_results=5000):
        tags = run.data.tags
        if tags.get(HOST_TAG) != host or not tags.get(PID_TAG, "").isdigit():
            continue
        started = _process_start(int(tags[PID_TAG]))
        if started is not None and started == tags.get(PROCESS_START_TAG, started):
            continue  # still running
        client.set_tag(run.info.run_id, STOPPED_TAG,
                       f"process {tags[PID_TAG]} on {host} ended without closing the run (killed)")
        client.set_terminated(run.info.run_id, "KILLED")
        closed.append(run.info.run_id)
    return closed


class NullTracker:
    """Tracking turned off: every call is accepted and nothing is written."""

    run_id: str | None = None

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_dict(self, data: Any, name: str) -> None:
        pass

    def log_file(self, path: str | Path) -> None:
        pass

    def log_model(self, model: Any) -> None:
        pass


class MlflowTracker(NullTracker):
    """One MLflow run; ends FINISHED, or FAILED when the block raises (KILLED when stopped on purpose).

    ``resume_run_id`` reopens that run (a resumed training) instead of starting a new one; if it no
    longer exists in this store, a new run starts. Opening a run first closes the experiment's runs
    whose process died (:func:`mark_dead_runs`)."""

    def __init__(self, cfg: TrackingConfig, run_name: str, tags: dict[str, Any] | None = None,
                 parent_run_id: str | None = None, experiment: str | None = None,
                 resume_run_id: str | None = None) -> None:
        self.uri = store_uri(cfg)
        self.cfg = cfg
        self.run_name = run_name
        self.tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        self.parent_run_id = parent_run_id
        self.experiment = experiment or cfg.experiment
        self.resume_run_id = resume_run_id

    def __enter__(self) -> MlflowTracker:
        ensure_store(self.uri)
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.uri)
        exp_id = experiment_id(self.client, self.uri, self.experiment)
        mark_dead_runs(self.client, [exp_id])
        tags = {**self.tags, **process_tags()}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        self.run_id = self._reopen(tags) if self.resume_run_id else None
        if self.run_id is None:
            self.run_id = self.client.create_run(exp_id, run_name=self.run_name, tags=tags).info.run_id
        return self

    def _reopen(self, tags: dict[str, str]) -> str | None:
        """Mark run ``resume_run_id`` as running again in this process; None if it is gone."""
        try:
            run = self.client.get_run(self.resume_run_id)
        except Exception:  # deleted from the store, or another store
            return None
        if run.info.lifecycle_stage != "active":
            return None
        for k, v in tags.items():  # this process's tags first: a concurrent start must not close it
            self.client.set_tag(run.info.run_id, k, v)
        if STOPPED_TAG in run.data.tags:
            self.client.delete_tag(run.info.run_id, STOPPED_TAG)
        self.client.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, *_: object) -> None:
        status = "FINISHED"
        if exc_type is not None and issubclass(exc_type, RunStopped | KeyboardInterrupt):
            status = "KILLED"
            self.client.set_tag(self.run_id, STOPPED_TAG, str(exc) or "interrupted")
        elif exc_type is not None:
            status = "FAILED"
        self.client.set_terminated(self.run_id, status)

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if v is not None and np.isfinite(float(v))
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_model(self, model: Any) -> None:
        """The fitted model as an MLflow pyfunc model at ``runs:/ID/model``."""
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_mlflow_model(model, Path(tmp) / MODEL_ARTIFACT)
            self.client.log_artifacts(self.run_id, str(folder), MODEL_ARTIFACT)

    def log_dict(self, data: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            if name.endswith((".yaml", ".yml")):
                path.write_text(yaml.safe_dump(data, sort_keys=False))
            else:
                path.write_text(json.dumps(data, indent=2, default=str))
            self.client.log_artifact(self.run_id, str(path))

    def log_file(self, path: str | Path) -> None:
        self.client.log_artifact(self.run_id, str(path))


class TensorBoardTracker(NullTracker):
    """Wraps another tracker and also writes TensorBoard event files: per-epoch scalars, and
    the run's params with its final metrics in the HParams view. One folder per run under
    ``<results_dir>/tensorboard/<experiment>/``."""

    def __init__(self, inner: NullTracker, logdir: Path, run_name: str) -> None:
        self.inner = inner
        self.logdir = logdir
        self.run_name = run_name
        self.hparams: dict[str, Any] = {}
        self.final: dict[str, float] = {}

    def __enter__(self) -> TensorBoardTracker:
        require("tensorboard", "tensorboard")  # torch.utils.tensorboard needs it
        from torch.utils.tensorboard import SummaryWriter

        self.inner.__enter__()
        self.run_id = self.inner.run_id
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.run_name).strip("-")
        suffix = self.run_id[:8] if self.run_id else time.strftime("%Y%m%d-%H%M%S")
        self.writer = SummaryWriter(str(self.logdir / f"{slug}-{suffix}"))
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        from torch.utils.tensorboard.summary import hparams

        try:
            if self.hparams:
                for summary in hparams(self.hparams, self.final):
                    self.writer.file_writer.add_summary(summary)
                for k, v in self.final.items():  # the HParams view reads metrics from scalars
                    self.writer.add_scalar(k, v, 0)
            self.writer.close()
        finally:
            self.inner.__exit__(exc_type, *exc)

    def log_params(self, params: dict[str, Any]) -> None:
        self.inner.log_params(params)
        self.hparams.update({k: v if isinstance(v, int | float | str | bool) else str(v)
                             for k, v in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.inner.log_metrics(metrics, step)
        finite = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(float(v))}
        if step is None:  # final metrics: shown with the hyperparameters
            self.final.update(finite)
            return
        for k, v in finite.items():
            self.writer.add_scalar(k, v, step)

    def log_dict(self, data: Any, name: str) -> None:
        self.inner.log_dict(data, name)

    def log_file(self, path: str | Path) -> None:
        self.inner.log_file(path)

    def log_model(self, model: Any) -> None:
        self.inner.log_model(model)


def tracker(cfg: TrackingConfig, run_name: str, tags: dict[str, Any] | None = None,
            parent_run_id: str | None = None, experiment: str | None = None,
            resume_run_id: str | None = None) -> NullTracker:
    """MLflow when enabled (reopening ``resume_run_id`` if given); TensorBoard too when
    ``tracking.tensorboard`` is on."""
    inner = (MlflowTracker(cfg, run_name, tags, parent_run_id, experiment, resume_run_id) if cfg.enabled
             else NullTracker())
    if cfg.tensorboard:
        logdir = Path(cfg.results_dir) / "tensorboard" / (experiment or cfg.experiment)
        return TensorBoardTracker(inner, logdir, run_name)
    return inner


def pyfunc_signature(input_size: int) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(inputs=Schema([
        TensorSpec(np.dtype(np.float32), (-1, -1, input_size), "x"),
        TensorSpec(np.dtype(np.int64), (-1,), "lengths"),
    ]))


def write_mlflow_model(model: Any, folder: Path) -> Path:
    """An MLflow model folder (MLmodel + the saved echoes model) for ``model``, ready to log."""
    import logging
    import warnings

    _quiet_mlflow()
    import mlflow.pyfunc

    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)  # "no input example" advice on every run
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # an input example would make MLflow run the model at every save; the signature suffices
        warnings.filterwarnings("ignore", message=".*input example", category=UserWarning)
        saved = model.save(Path(tmp) / ARTIFACT)
        mlflow.pyfunc.save_model(
            str(folder), python_model=str(Path(__file__).with_name("pyfunc_entry.py")),  # see serving.py
            artifacts={ARTIFACT: str(saved)},
            signature=pyfunc_signature(model.input_size),
            # listed, not inferred: inference imports the model in a subprocess (seconds per run)
            pip_requirements=[f"echoes=={__version__}", "torch", "numpy", "pandas"],
        )
    return folder
