"""Running trials: a worker claims a waiting trial of the budget, trains its configuration,
reports each epoch to the pruner and tells Optuna the outcome, until no trial is left."""

from __future__ import annotations

import contextlib
import json
import math
import time
from typing import Any

from ..errors import EchoesError, did_you_mean
from ..run import Metric, RunResult, Tag, load_data, run_experiment
from ..tracking import RunStopped
from .config import PARENT_RUN, Sweep, SweepTag
from .liveness import ERROR, LOST, Echo, beating, counts, fail_stale, retry, slot, worker_storage
from .optuna_parts import suggest
from .outputs import params_text

POLL_SECONDS = 1.0  # how often an idle worker looks for stale trials while others run
KEPT = (Metric.TEST_ACCURACY, Metric.VAL_ACCURACY, Metric.TRAIN_SECONDS)  # copied onto the Optuna trial


class TrialPruned(RunStopped):
    """The pruner stopped this trial: its MLflow run ends KILLED, its Optuna trial PRUNED."""


def claim(sweep: Sweep, storage: Any) -> Any | None:
    """Atomically take the next WAITING trial of the budget (RUNNING for this worker only)."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    study_id = storage.get_study_id_from_name(sweep.name)
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,)):
        if slot(t) >= sweep.budget:  # the budget was lowered on resume
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        try:
            if storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                return t
        except UpdateFinishedTrialError:
            continue
    return None


def objective_value(result: RunResult, objective: str) -> float:
    value = result.get(objective)
    if not isinstance(value, int | float) or isinstance(value, bool):
        numeric = sorted(k for k, v in result.metrics.items() if isinstance(v, int | float) and not isinstance(v, bool))
        raise EchoesError(f"objective '{objective}' is not a metric of this run — {did_you_mean(objective, numeric)}")
    return float(value)


def _train(sweep: Sweep, study: Any, trial: Any, params: dict[str, Any], datasets: dict[str, Any]) -> RunResult:
    """One run of the trial's configuration; each epoch's objective goes to the pruner."""
    cfg = sweep.config_for(params)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        value = metrics.get(sweep.cfg.objective)
        if value is None or not math.isfinite(value):
            return
        trial.report(value, epoch)
        if trial.should_prune():
            raise TrialPruned(f"pruned at epoch {epoch}")

    key = json.dumps(cfg.data.model_dump(), sort_keys=True, default=str)
    if key not in datasets:
        datasets[key] = load_data(cfg)
    return run_experiment(cfg, datasets[key], on_epoch=on_epoch, experiment=sweep.experiment,
                          parent_run_id=study.user_attrs.get(PARENT_RUN),
                          tags={SweepTag.NAME: sweep.name, SweepTag.TRIAL: trial.number})


def _outcome(sweep: Sweep, study: Any, trial: Any, params: dict[str, Any],
             datasets: dict[str, Any]) -> tuple[Any, float | None, str]:
    """Train the trial: (state, objective value, note). A user error or an interrupt stops the
    sweep (the trial runs again on resume); any other error fails this trial only."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    try:
        result = _train(sweep, study, trial, params, datasets)
        value = objective_value(result, sweep.cfg.objective)
    except TrialPruned as e:
        return TrialState.PRUNED, None, str(e)
    except UpdateFinishedTrialError:  # given up as lost while it ran (reporting an epoch)
        raise
    except (EchoesError, KeyboardInterrupt) as e:
        interrupted = isinstance(e, KeyboardInterrupt)
        with contextlib.suppress(UpdateFinishedTrialError):  # already given up as lost: stop all the same
            trial.set_user_attr(LOST, "interrupted" if interrupted else f"error: {e}"[:500])
            study.tell(trial, state=TrialState.FAIL)
            if interrupted:  # only this worker was stopped: others may go on
                retry(sweep, study, study.get_trials(deepcopy=False)[trial.number])
        raise
    except Exception as e:  # e.g. out of memory for this configuration: record it, go on
        note = f"{type(e).__name__}: {e}"
        trial.set_user_attr(ERROR, note[:500])
        return TrialState.FAIL, None, note
    if not math.isfinite(value):
        note = f"{sweep.cfg.objective} is {value}"
        trial.set_user_attr(ERROR, note)
        return TrialState.FAIL, None, note
    for k in KEPT:
        if result.get(k) is not None:
            trial.set_user_attr(k, result[k])
    if result.run_id:
        trial.set_user_attr(Tag.RUN_ID, result.run_id)
    return TrialState.COMPLETE, value, ""


def run_trial(sweep: Sweep, storage: Any, frozen: Any, datasets: dict[str, Any], echo: Echo) -> str:
    """Run one claimed trial while it beats; tell Optuna the outcome; print a progress line."""
    import optuna

    study = sweep.load_study(storage, seed=sweep.base_config.seed * 100_003 + frozen.number)
    study_id = storage.get_study_id_from_name(sweep.name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
    # A database storage is wrapped in Optuna's cache, which has not seen the trial claimed through the
    # raw storage: reading the trials refreshes it (else setting a parameter fails with a KeyError).
    study.get_trials(deepcopy=False)
    try:
        with beating(storage, trial_id):
            trial = optuna.trial.Trial(study, trial_id)
            params = {k: suggest(trial, k, d) for k, d in sweep.distributions.items()}
            state, value, note = _outcome(sweep, study, trial, params, datasets)
        study.tell(trial, value, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:  # given up as lost meanwhile: its retry counts
        echo(f"trial {frozen.number}: finished after being given up as lost; its retry counts")
        return "lost"
    c = counts(study.get_trials(deepcopy=False), sweep.budget)
    shown = f"{sweep.cfg.objective} {value:.4f}" if value is not None else note
    echo(f"[{c['finished']}/{sweep.budget}] trial {frozen.number} {state.name.lower():<8} "
         f"{shown}  {params_text(params)}")
    return state.name.lower()


def work(sweep: Sweep, echo: Echo = print) -> None:
    """A worker: claim and run trials until none is waiting and none is running anywhere."""
    from optuna.trial import TrialState

    storage = worker_storage(sweep, echo)
    study_id = storage.get_study_id_from_name(sweep.name)
    datasets: dict[str, Any] = {}
    while True:
        fail_stale(sweep.load_study(storage))
        frozen = claim(sweep, storage)
        if frozen is not None:
            run_trial(sweep, storage, frozen, datasets, echo)
            continue
        if not storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            return
        time.sleep(POLL_SECONDS)  # a stopped worker's trial comes back once its heartbeat is stale
