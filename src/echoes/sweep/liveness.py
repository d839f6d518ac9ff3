"""Worker liveness: what happens to a trial whose worker stopped, and what each trial came to.

Liveness is Optuna's heartbeat: a running trial beats from a thread (Optuna's heartbeat thread);
a trial silent for four beats is failed by whichever worker looks next (``fail_stale_trials``) and,
through the storage's stale-trial callback, enqueued again with Optuna's
``RetryHeartbeatStaleTrialCallback`` — same slot of the budget, same parameters once sampled —
up to ``retries`` times. A trial stopped on purpose (Ctrl-C, an error the user must fix) takes
the same retry path itself. A failed trial is *lost* when its worker stopped (it is run again)
and *failed* when its configuration broke (it is not).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .config import PARENT_RUN, Sweep, SweepTag
from .optuna_parts import HEARTBEAT, make_storage

Echo = Callable[[str], None]
SLOT = "slot"  # trial user attr: the slot of the budget the trial fills
LOST = "lost"  # trial user attr: why a trial stopped before it could finish (it runs again)
ERROR = "error"  # trial user attr: why a trial's run failed (its configuration broke)
STALE = "its worker stopped (no heartbeat)"


def slot(t: Any) -> int:
    return int(t.user_attrs.get(SLOT, -1))


def retry_history(t: Any) -> list[int]:
    """The trials this one retries, oldest first (Optuna's retry callback keeps the list)."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    return RetryHeartbeatStaleTrialCallback.retry_history(t)


def attempt(t: Any) -> int:
    return len(retry_history(t)) + 1


def retry_of(t: Any) -> int | None:
    history = retry_history(t)
    return history[-1] if history else None


def lost_reason(t: Any) -> str | None:
    """Why a failed trial counts as lost rather than failed; None when it is not lost."""
    from optuna.trial import TrialState

    if t.state != TrialState.FAIL or ERROR in t.user_attrs:
        return None
    return str(t.user_attrs.get(LOST, STALE))


def retry(sweep: Sweep, study: Any, t: Any) -> bool:
    """Enqueue a lost trial again — its slot, and its parameters once they were sampled
    (a grid's fixed ones always) — unless its retries are used up."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    if attempt(t) > sweep.cfg.retries:
        return False
    template = copy.deepcopy(t)
    template.user_attrs = {SLOT: slot(t)}  # not the outcome of the lost attempt
    template.system_attrs = {k: v for k, v in t.system_attrs.items() if k != HEARTBEAT}  # nor its last beat
    RetryHeartbeatStaleTrialCallback()(study, template)
    return True


def counts(trials: list[Any], budget: int) -> dict[str, int]:
    """Trials by state ('failed' excludes 'lost'), and 'finished': slots of the budget whose
    latest trial is done."""
    from optuna.trial import TrialState

    c = {s: sum(t.state == getattr(TrialState, s.upper()) for t in trials)
         for s in ("complete", "pruned", "running", "waiting")}
    c["lost"] = sum(lost_reason(t) is not None for t in trials)
    c["failed"] = sum(t.state == TrialState.FAIL for t in trials) - c["lost"]
    latest: dict[int, Any] = {}
    for t in trials:
        if 0 <= slot(t) < budget and (slot(t) not in latest or t.number > latest[slot(t)].number):
            latest[slot(t)] = t
    c["finished"] = sum(t.state.is_finished() for t in latest.values())
    return c


class OnStale:
    """The storage's stale-trial callback: Optuna has failed `t`; run it again, end its MLflow run."""

    def __init__(self, sweep: Sweep, echo: Echo) -> None:
        self.sweep, self.echo = sweep, echo

    def __call__(self, study: Any, t: Any) -> None:
        retried = retry(self.sweep, study, t)
        fail_child_run(self.sweep, study, t.number, STALE)
        self.echo(f"trial {t.number} lost ({STALE}): marked failed, "
                  + ("retried as a new trial" if retried else f"not retried after {self.sweep.cfg.retries} retries"))


def worker_storage(sweep: Sweep, echo: Echo) -> Any:
    """The study's storage for a worker: its trials beat, and it fails and retries stale ones."""
    return make_storage(sweep.storage_url, sweep.cfg.heartbeat, OnStale(sweep, echo))


def fail_stale(study: Any) -> None:
    """Fail every running trial whose worker stopped beating (Optuna's own check)."""
    import optuna

    optuna.storages.fail_stale_trials(study)


def beating(storage: Any, trial_id: int) -> Any:
    """A context in which Optuna's heartbeat thread beats for the trial."""
    from optuna.storages._heartbeat import get_heartbeat_thread

    return get_heartbeat_thread(trial_id, storage)


def fail_child_run(sweep: Sweep, study: Any, number: int, why: str) -> None:
    """End the MLflow run of a lost trial FAILED (its process cannot: it is gone)."""
    parent = study.user_attrs.get(PARENT_RUN)
    tracked = sweep.mlflow() if parent else None
    if tracked is None:
        return
    client, _ = tracked
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    experiment = client.get_run(parent).info.experiment_id
    runs = client.search_runs([experiment], filter_string=(
        f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent}' and tags.`{SweepTag.TRIAL}` = '{number}' "
        "and attributes.status = 'RUNNING'"))
    for run in runs:
        client.set_tag(run.info.run_id, SweepTag.STOPPED, f"worker lost: {why}")
        client.set_terminated(run.info.run_id, "FAILED")
