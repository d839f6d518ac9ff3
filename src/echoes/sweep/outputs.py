"""A sweep's outputs: trials.csv and best.yaml beside the study, metrics on the parent run,
the summary and its table — and a sweep whose every trial failed says why."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

import yaml

from ..errors import EchoesError
from ..run import Metric, Tag
from ..utils import atomic_write
from .config import PARENT_RUN, Sweep, SweepTag
from .liveness import ERROR, attempt, counts, lost_reason, retry_of, slot
from .optuna_parts import make_storage

CSV_ATTRS = (Metric.TEST_ACCURACY, Metric.TRAIN_SECONDS, Tag.RUN_ID)  # trial user attrs, as columns


def fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def params_text(params: dict[str, Any]) -> str:
    return "  ".join(f"{k}={fmt(v)}" for k, v in params.items())


def finish(sweep: Sweep) -> dict[str, Any]:
    """Write trials.csv and best.yaml beside the study, log them to the parent run, summarise."""
    from optuna.trial import TrialState

    study = sweep.load_study(make_storage(sweep.storage_url))
    trials = study.get_trials(deepcopy=False)
    c = counts(trials, sweep.budget)
    folder = sweep.folder
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "trials.csv", trials_csv(sweep, trials))
    best = study.best_trial if any(t.state == TrialState.COMPLETE for t in trials) else None
    summary: dict[str, Any] = {"sweep": sweep.name, "objective": sweep.cfg.objective,
                               "direction": sweep.cfg.direction, "counts": c,
                               "storage": sweep.storage_url, "experiment": sweep.experiment,
                               "trials_csv": str(folder / "trials.csv"), "best": None}
    if best is not None:
        summary["best"] = _write_best(sweep, best)
    _log_to_parent(sweep, study.user_attrs.get(PARENT_RUN), c, best)
    summary["table"] = trials_table(sweep, trials)
    return summary


def _write_best(sweep: Sweep, best: Any) -> dict[str, Any]:
    """best.yaml: the best trial's full experiment config, ready for `echoes train --config`."""
    path = sweep.folder / "best.yaml"
    header = (f"# Best trial ({best.number}) of sweep '{sweep.name}': {sweep.cfg.objective} = "
              f"{best.value:.6g}.\n# Run it again: echoes train --config {path}\n")
    atomic_write(path, header + yaml.safe_dump(sweep.config_for(best.params).model_dump(), sort_keys=False))
    return {"trial": best.number, "value": best.value, "params": best.params, "config": str(path),
            **{str(k): best.user_attrs.get(k) for k in (Metric.TEST_ACCURACY, Tag.RUN_ID)}}


def _log_to_parent(sweep: Sweep, parent: str | None, c: dict[str, int], best: Any) -> None:
    tracked = sweep.mlflow() if parent else None
    if tracked is None:
        return
    client, _ = tracked
    from mlflow.entities import Metric as MlflowMetric

    now = int(time.time() * 1000)
    metrics = {f"trials_{k}": v for k, v in c.items() if k in ("complete", "pruned", "failed", "lost")}
    if best is not None:
        metrics[f"best_{sweep.cfg.objective}"] = best.value
        client.set_tag(parent, SweepTag.BEST_TRIAL, str(best.number))
        client.log_artifact(parent, str(sweep.folder / "best.yaml"))
    client.log_batch(parent, metrics=[MlflowMetric(k, float(v), now, 0) for k, v in metrics.items()])
    client.log_artifact(parent, str(sweep.folder / "trials.csv"))
    if not c["running"] and not c["waiting"]:
        client.set_terminated(parent, "FINISHED" if c["complete"] + c["pruned"] else "FAILED")


def check_not_all_failed(sweep: Sweep, summary: dict[str, Any]) -> None:
    """A finished sweep none of whose trials completed (or was pruned) is an error: say the first reason."""
    from optuna.trial import TrialState

    c = summary["counts"]
    if c["complete"] + c["pruned"] or c["running"] + c["waiting"] or not c["failed"] + c["lost"]:
        return
    trials = sweep.load_study(make_storage(sweep.storage_url)).get_trials(deepcopy=False)
    first = next(t for t in trials if t.state == TrialState.FAIL)
    why = str(first.user_attrs.get(ERROR) or lost_reason(first)).splitlines()[0]
    raise EchoesError(f"sweep '{sweep.name}': all {c['failed'] + c['lost']} trials failed, the first (trial "
                      f"{first.number}) with {why} — fix that, then run the sweep under a new name "
                      f"(name=...); every trial is in {summary['trials_csv']}")


def trials_csv(sweep: Sweep, trials: list[Any]) -> str:
    buf = io.StringIO()
    keys = list(sweep.distributions)
    writer = csv.writer(buf)
    writer.writerow(["trial", "state", sweep.cfg.objective, *keys, *CSV_ATTRS,
                     "slot", "attempt", "retry_of", "lost", "error"])
    for t in trials:
        writer.writerow([t.number, t.state.name.lower(), "" if t.value is None else t.value,
                         *(t.params.get(k, "") for k in keys), *(t.user_attrs.get(k, "") for k in CSV_ATTRS),
                         slot(t), attempt(t), _blank(retry_of(t)), _blank(lost_reason(t)),
                         t.user_attrs.get(ERROR, "")])
    return buf.getvalue()


def _blank(v: Any) -> Any:
    return "" if v is None else v


def trials_table(sweep: Sweep, trials: list[Any], top: int = 10) -> str:
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE]
    done.sort(key=lambda t: t.value, reverse=sweep.cfg.direction == "maximize")
    keys = list(sweep.distributions)
    headers = ["trial", sweep.cfg.objective, "test acc", *keys]
    rows = [[str(t.number), f"{t.value:.4f}",
             f"{t.user_attrs[Metric.TEST_ACCURACY]:.4f}" if Metric.TEST_ACCURACY in t.user_attrs else "—",
             *(fmt(t.params.get(k, "—")) for k in keys)] for t in done[:top]]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
