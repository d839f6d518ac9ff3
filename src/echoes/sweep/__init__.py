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
machine or many share a study without running anything twice. A running trial beats (Optuna's
heartbeat, every ``heartbeat`` seconds); one whose worker died misses four beats, is marked failed
by any other worker and retried as a new trial with the same slot and parameters, up to
``retries`` times. Re-running the command resumes: it enqueues what is missing and runs what is
left. A sweep none of whose trials succeeds ends in an error naming the first trial's failure.

One job per module: ``config`` (sweep files), ``optuna_parts`` (sampler, pruner, storage),
``prepare`` (study and MLflow parent run), ``liveness`` (lost trials and their retries),
``trials`` (running trials), ``supervise`` (worker processes), ``outputs`` (files and summary).
"""

from __future__ import annotations

from typing import Any

from ..errors import EchoesError
from .config import Sweep, SweepConfig, SweepTag, load_sweep
from .liveness import Echo, attempt, lost_reason, retry_of
from .optuna_parts import make_storage
from .outputs import check_not_all_failed, finish
from .prepare import open_study
from .supervise import supervise
from .trials import work


def run_sweep(sweep: Sweep, *, workers: int = 1, echo: Echo = print) -> dict[str, Any]:
    """Create or resume the study, run its trials with `workers` processes, write the results.
    Raises EchoesError when every trial failed (after writing trials.csv)."""
    if workers < 1:
        raise EchoesError(f"--workers must be at least 1, got {workers}")
    space = ", ".join(sweep.distributions)
    echo(f"sweep '{sweep.name}': {sweep.sampler_name} over {space}; {sweep.budget} trials, "
         f"{sweep.cfg.direction} {sweep.cfg.objective}; {workers} worker(s); study in {sweep.storage_url}")
    open_study(sweep, echo)
    if workers == 1:
        work(sweep, echo)
    else:
        supervise(sweep, workers, echo)
    summary = finish(sweep)
    check_not_all_failed(sweep, summary)
    return summary


__all__ = ["Sweep", "SweepConfig", "SweepTag", "attempt", "finish", "load_sweep", "lost_reason", "make_storage",
           "open_study", "retry_of", "run_sweep", "work"]
