"""Optuna pieces: sampler, pruner, storage (with heartbeats), the study, and suggesting a value.

Optuna is imported inside each function: it is an optional dependency of the sweep command only.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import EchoesError
from ..registry import check_kwargs

StaleCallback = Callable[[Any, Any], None]  # (study, failed FrozenTrial), as Optuna calls it
HEARTBEAT = "echoes:heartbeat"  # journal storage: a running trial's last heartbeat (a system attr)
GRACE_BEATS = 4  # beats a trial may miss before it is stale: a busy machine can delay a few


def make_sampler(spec: str | dict[str, Any], seed: int) -> Any:
    """A sampler from a sweep's ``sampler:`` (a name, or a name with options), seeded."""
    import optuna

    name = spec if isinstance(spec, str) else spec.get("name", "")
    options = {} if isinstance(spec, str) else {k: v for k, v in spec.items() if k != "name"}
    if name == "grid":  # every grid trial's parameters are fixed when enqueued
        return optuna.samplers.RandomSampler(seed=seed)
    cls = {"random": optuna.samplers.RandomSampler, "tpe": optuna.samplers.TPESampler}[name]
    if name == "tpe":
        options = {"constant_liar": True, **options}  # running trials count as pending, not unknown
    check_kwargs(cls, {**options, "seed": seed}, f"sampler '{name}'")
    return cls(seed=seed, **options)


def make_pruner(pruning: bool | dict[str, Any]) -> Any:
    """Median pruning on the per-epoch objective (``true`` or MedianPruner options), or none."""
    import optuna

    if pruning is False:
        return optuna.pruners.NopPruner()
    options = {} if pruning is True else dict(pruning)
    check_kwargs(optuna.pruners.MedianPruner, options, "pruning")
    return optuna.pruners.MedianPruner(**options)


def make_storage(url: str, heartbeat: int | None = None, on_stale: StaleCallback | None = None) -> Any:
    """A database URL (postgresql://, sqlite:///...) → RDBStorage; anything else is a journal file.

    With ``heartbeat`` (seconds), running trials beat and one silent for GRACE_BEATS beats is
    stale: Optuna's ``fail_stale_trials`` fails it and calls ``on_stale``."""
    import optuna
    from optuna.exceptions import ExperimentalWarning

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=ExperimentalWarning)  # heartbeats and retries are "experimental"
    if "://" in url:
        for attempt in (1, 2):  # workers starting together on an empty database race to create its tables
            try:
                return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat,
                                                  grace_period=heartbeat and GRACE_BEATS * heartbeat,
                                                  heartbeat_stale_trial_callback=on_stale)
            except Exception as e:
                if attempt == 2:
                    raise EchoesError(f"cannot open sweep storage '{url}': {str(e).splitlines()[0]} — "
                                      "check the database URL") from None
                time.sleep(1.0)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(url).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    # An absolute path matters: Optuna's lock is a symlink to it, and a relative target dangles,
    # which stops it from ever breaking the stale lock of a worker killed while writing.
    backend = JournalFileBackend(str(path))
    if heartbeat is None:
        return JournalStorage(backend)
    return _heartbeat_journal()(backend, heartbeat, on_stale)


@functools.cache
def _heartbeat_journal() -> type:
    """JournalStorage with Optuna's heartbeat interface, which Optuna 5.0 gives RDBStorage only
    (optuna/optuna#6615): the beat is a trial system attribute, so the journal file format stays."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat
    from optuna.trial import TrialState

    class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
        def __init__(self, backend: Any, interval: int, on_stale: StaleCallback | None) -> None:
            super().__init__(backend)
            self._interval, self._on_stale = interval, on_stale

        def record_heartbeat(self, trial_id: int) -> None:
            try:
                self.set_trial_system_attr(trial_id, HEARTBEAT, time.time())
            except UpdateFinishedTrialError:  # given up as stale meanwhile: its retry counts
                pass

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now = time.time()
            running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            return [self.get_trial_id_from_study_id_trial_number(study_id, t.number) for t in running
                    if now - _last_beat(t, now) > GRACE_BEATS * self._interval]

        def get_heartbeat_interval(self) -> int:
            return self._interval

        def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
            return self._on_stale

    return HeartbeatJournalStorage


def _last_beat(t: Any, now: float) -> float:
    """A trial claimed but killed before its first beat counts from its start."""
    beat = t.system_attrs.get(HEARTBEAT)
    if beat is not None:
        return float(beat)
    return t.datetime_start.timestamp() if t.datetime_start else now


def suggest(trial: Any, key: str, d: Any) -> Any:
    import optuna.distributions as od

    if isinstance(d, od.CategoricalDistribution):
        return trial.suggest_categorical(key, d.choices)
    if isinstance(d, od.IntDistribution):
        return trial.suggest_int(key, d.low, d.high, step=d.step, log=d.log)
    return trial.suggest_float(key, d.low, d.high, step=d.step, log=d.log)
