"""Preparing a study: create or resume it, check it is the same sweep, enqueue the budget's
trials, and open the sweep's MLflow parent run."""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from ..errors import EchoesError
from ..utils import file_lock
from .config import PARENT_RUN, SPACE_ARTIFACT, Sweep, SweepTag
from .liveness import SLOT, Echo, counts, lost_reason, retry, slot
from .optuna_parts import make_storage

SPEC = "echoes.spec"  # study user attr: what makes two runs of a sweep the same study
PREPARE_TIMEOUT_S = 60.0  # how long a worker waits for the one that created the study to enqueue its budget


def spec_fingerprint(sweep: Sweep) -> str:
    """What makes two runs of a sweep the same study (not sampler, budget or tracking)."""
    from optuna.distributions import distribution_to_json

    base = {k: v for k, v in sweep.base.items() if k != "tracking"}
    return json.dumps({"base": base, "objective": sweep.cfg.objective, "points": sweep.points,
                       "space": {k: distribution_to_json(d) for k, d in sweep.distributions.items()}},
                      sort_keys=True, default=str)


@contextlib.contextmanager
def _prepare_lock(sweep: Sweep) -> Iterator[None]:
    """Serialise study preparation between commands on one journal file (not needed for RDB:
    creating a study there is atomic)."""
    if "://" in sweep.storage_url:
        yield
        return
    path = Path(sweep.storage_url + ".prepare.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        yield


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
        study = sweep.load_study(storage)
        if study.direction.name.lower() != sweep.cfg.direction:
            raise EchoesError(f"sweep '{sweep.name}' exists in {sweep.storage_url} with direction "
                              f"{study.direction.name.lower()} — keep it, or give this sweep another name")
        fingerprint = spec_fingerprint(sweep)
        if not resumed:  # the budget first, then the fingerprint: a study with one is ready to resume
            added = refill(sweep, study)
            study.set_user_attr(SPEC, fingerprint)
        else:
            if wait_until_prepared(study, fingerprint) != fingerprint:
                raise EchoesError(f"sweep '{sweep.name}' already exists in {sweep.storage_url} with another "
                                  f"base, space or objective — give this one another name (name=...) or delete "
                                  f"that study to start over")
            added = refill(sweep, study)
        _parent_run(sweep, study)
    if resumed:
        c = counts(study.get_trials(deepcopy=False), sweep.budget)
        echo(f"resuming sweep '{sweep.name}': {c['finished']}/{sweep.budget} trials finished"
             + (f", {added} enqueued" if added else ""))
    return study


def wait_until_prepared(study: Any, fingerprint: str, timeout: float = PREPARE_TIMEOUT_S) -> str:
    """The study's fingerprint, once the command that created it has enqueued the budget. Workers that
    start together on a database (no file lock there) would otherwise each see an empty study and
    enqueue every slot. A study without one after ``timeout`` (its creator died first) becomes ours."""
    deadline = time.monotonic() + timeout
    while (known := study.user_attrs.get(SPEC)) is None:  # read from the storage on every call
        if time.monotonic() > deadline:
            study.set_user_attr(SPEC, fingerprint)
            return fingerprint
        time.sleep(0.2)
    return known


def refill(sweep: Sweep, study: Any) -> int:
    """Enqueue each slot of the budget that has no trial, or whose last trial was lost
    (stopped on an error, or its worker died before it could be retried). Returns how many."""
    by_slot: dict[int, list[Any]] = {}
    for t in study.get_trials(deepcopy=False):
        by_slot.setdefault(slot(t), []).append(t)
    added = 0
    for i in range(sweep.budget):
        trials = by_slot.get(i)
        if not trials:
            params = sweep.points[i] if sweep.points is not None else {}
            study.enqueue_trial(params, user_attrs={SLOT: i})
            added += 1
            continue
        last = max(trials, key=lambda t: t.number)
        if lost_reason(last) is not None:
            added += retry(sweep, study, last)
    return added


def _parent_run(sweep: Sweep, study: Any) -> str | None:
    """The sweep's MLflow run, parent of every trial's run; reopened when the sweep resumes."""
    tracked = sweep.mlflow()
    if tracked is None:
        return None
    client, uri = tracked
    run_id = study.user_attrs.get(PARENT_RUN)
    if run_id:
        try:
            if client.get_run(run_id).info.lifecycle_stage == "active":
                client.update_run(run_id, status="RUNNING")
                return run_id
        except Exception:  # deleted, or another store: start a new parent run
            pass
    from optuna.distributions import distribution_to_json

    from ..tracking import experiment_id

    tags = {SweepTag.SWEEP: sweep.name, SweepTag.SAMPLER: sweep.sampler_name, SweepTag.OBJECTIVE: sweep.cfg.objective,
            SweepTag.DIRECTION: sweep.cfg.direction, SweepTag.STORAGE: sweep.storage_url}
    run = client.create_run(experiment_id(client, uri, sweep.experiment), run_name=f"sweep {sweep.name}",
                            tags={str(k): v for k, v in tags.items()})
    run_id = run.info.run_id
    _log_text(client, run_id, SPACE_ARTIFACT, json.dumps(
        {k: json.loads(distribution_to_json(d)) for k, d in sweep.distributions.items()}, indent=2))
    _log_text(client, run_id, "sweep.yaml", yaml.safe_dump(
        {**sweep.cfg.model_dump(exclude_none=True), "base": sweep.base}, sort_keys=False))
    study.set_user_attr(PARENT_RUN, run_id)
    return run_id


def _log_text(client: Any, run_id: str, name: str, text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        client.log_artifact(run_id, str(path))
