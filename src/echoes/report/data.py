"""The report's data: runs read back from MLflow and turned into plain rows and points.

The comparison uses the latest finished run of each dataset × model × seed; sweep trials appear
only in their sweep's section. Nothing past this module talks to MLflow.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EchoesError, did_you_mean
from ..run import CONFUSION_ARTIFACT, EPOCH_PREFIX, Metric, Tag
from ..sweep.config import SPACE_ARTIFACT, SweepTag

CURVE = "curve"  # a result row's validation accuracy per epoch
CURVE_METRIC = f"{EPOCH_PREFIX}{Metric.VAL_ACCURACY}"
PARENT = "mlflow.parentRunId"  # MLflow's own tag on a child run
TRIAL_STATES = {"FINISHED": "complete", "KILLED": "pruned", "FAILED": "failed"}  # MLflow run status → trial


@dataclass
class Run:
    """One MLflow run, as much of it as the report needs."""

    run_id: str
    experiment: str
    status: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    curve: list[float] = field(default_factory=list)

    @property
    def label(self) -> str:
        return self.tags.get(Tag.LABEL, self.tags.get(Tag.MODEL, "?"))

    @property
    def data(self) -> str:
        return self.tags.get(Tag.DATA, "?")

    @property
    def seed(self) -> str:
        return self.tags.get(Tag.SEED, "0")

    def result(self) -> dict[str, Any]:
        """The plain row the figures take (and ``suite.summarize``): identity, metrics, curve."""
        return {Tag.DATA: self.data, Tag.LABEL: self.label, Tag.LEARNER: self.tags.get(Tag.LEARNER, "?"),
                Tag.SEED: self.seed, Tag.HEADS: self.tags.get(Tag.HEADS, ""), **self.metrics, CURVE: self.curve}


@dataclass
class SweepData:
    """One sweep as plain data: its settings, search space and one point per trial
    (``trial``, ``state``, ``value``, ``params``, ``label``)."""

    name: str
    objective: str
    maximize: bool
    experiment: str
    space: dict[str, Any]  # parameter → optuna distribution
    points: list[dict[str, Any]]


@dataclass
class Confusion:
    title: str
    matrix: list[list[int]]
    classes: list[str]


@dataclass
class ReportData:
    uri: str
    runs: list[Run]  # the comparison
    sweeps: list[SweepData]
    confusion: Confusion | None

    @property
    def experiments(self) -> list[str]:
        return sorted({r.experiment for r in self.runs} | {s.experiment for s in self.sweeps})


def read_report(uri: str, experiments: list[str] | None = None, run_ids: list[str] | None = None,
                confusion_run: str | None = None) -> ReportData:
    """Everything the report shows, read from the MLflow store at `uri`."""
    client = _client(uri)
    runs, parents, trials = _load(client, experiments, run_ids)
    if not runs and not parents:
        where = ", ".join(experiments) if experiments else "any experiment"
        raise EchoesError(f"no finished runs in {where} of {uri} — run `echoes compare` or `echoes sweep` first")
    for r in runs:
        r.curve = [m.value for m in sorted(client.get_metric_history(r.run_id, CURVE_METRIC), key=lambda m: m.step)]
    sweeps = [_sweep(client, p, trials.get(p.run_id, [])) for p in parents]
    finished_trials = [t for p in parents for t in trials.get(p.run_id, []) if t.status == "FINISHED"]
    return ReportData(uri, runs, sweeps, _confusion(client, runs + finished_trials, confusion_run))


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    from ..tracking import ensure_store

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise EchoesError(f"no MLflow store at {uri} — run `echoes train` or `echoes compare` first, "
                          "or pass --uri")
    ensure_store(uri)
    return MlflowClient(uri)


def _experiments(client: Any, names: list[str] | None) -> dict[str, str]:
    """experiment id → name, for the names asked for, or every experiment with runs."""
    from mlflow.entities import ViewType

    known = {e.name: e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)}
    if names:
        for name in names:
            if name not in known:
                raise EchoesError(f"unknown experiment '{name}' — {did_you_mean(name, known)}")
        return {known[n]: n for n in names}
    return {i: n for n, i in known.items() if n != "Default"}


def _search(client: Any, names: dict[str, str]) -> list[Run]:
    runs, token = [], None
    while True:
        page = client.search_runs(list(names), max_results=1000, page_token=token)
        runs += [Run(r.info.run_id, names[r.info.experiment_id], r.info.status, r.info.start_time or 0,
                     dict(r.data.tags), dict(r.data.params), dict(r.data.metrics)) for r in page]
        token = page.token
        if not token:
            return runs


def _load(client: Any, experiments: list[str] | None,
          run_ids: list[str] | None) -> tuple[list[Run], list[Run], dict[str, list[Run]]]:
    """(the comparison's runs, the sweeps' parent runs, parent run id → its trials' runs)."""
    names = _experiments(client, experiments)
    runs = _search(client, names) if names else []
    if run_ids is not None:
        wanted = set(run_ids)
        runs = [r for r in runs if r.run_id in wanted or r.tags.get(PARENT) in wanted]
    parents = sorted((r for r in runs if SweepTag.SWEEP in r.tags), key=lambda r: r.start_time)
    trials: dict[str, list[Run]] = {}
    for r in runs:
        if SweepTag.NAME in r.tags and PARENT in r.tags:
            trials.setdefault(r.tags[PARENT], []).append(r)
    latest: dict[tuple[str, str, str], Run] = {}
    for r in runs:
        if r.status != "FINISHED" or Tag.LABEL not in r.tags or SweepTag.NAME in r.tags or SweepTag.SWEEP in r.tags:
            continue
        key = (r.data, r.label, r.seed)
        if key not in latest or r.start_time > latest[key].start_time:
            latest[key] = r
    return sorted(latest.values(), key=lambda r: (r.data, r.label, r.seed)), parents, trials


def _artifact_json(client: Any, run_id: str, name: str) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, name, tmp)
        except Exception:
            return None
        return json.loads(Path(path).read_text())


def _sweep(client: Any, parent: Run, trials: list[Run]) -> SweepData:
    from optuna.distributions import json_to_distribution

    space = {k: json_to_distribution(json.dumps(v))
             for k, v in (_artifact_json(client, parent.run_id, SPACE_ARTIFACT) or {}).items()}
    objective = parent.tags.get(SweepTag.OBJECTIVE, Metric.VAL_ACCURACY)
    trials = sorted(trials, key=lambda r: int(r.tags.get(SweepTag.TRIAL, 0)))
    return SweepData(name=parent.tags[SweepTag.SWEEP], objective=objective,
                     maximize=parent.tags.get(SweepTag.DIRECTION, "maximize") == "maximize",
                     experiment=parent.experiment, space=space, points=[_point(r, objective, space) for r in trials])


def _point(r: Run, objective: str, space: dict[str, Any]) -> dict[str, Any]:
    """A trial: state, objective (last epoch's value for a pruned one), parameter values."""
    state = TRIAL_STATES.get(r.status, r.status.lower())
    if state == "pruned" and not r.tags.get(SweepTag.STOPPED, "").startswith("pruned"):
        state = "stopped"
    value = r.metrics.get(objective) if state == "complete" else r.metrics.get(f"{EPOCH_PREFIX}{objective}")
    return {"trial": int(r.tags.get(SweepTag.TRIAL, -1)), "state": state, "value": value,
            "params": {k: _param_value(r.params.get(k), d) for k, d in space.items()}, "label": r.label}


def _param_value(raw: str | None, dist: Any) -> Any:
    """An MLflow param (text) back as the distribution's value."""
    import optuna.distributions as od

    if raw is None:
        return None
    if isinstance(dist, od.CategoricalDistribution):
        return next((c for c in dist.choices if str(c) == raw), None)
    value = float(raw)
    return int(value) if isinstance(dist, od.IntDistribution) else value


def _confusion(client: Any, candidates: list[Run], chosen: str | None) -> Confusion | None:
    """The confusion matrix of the run asked for, else of the best test accuracy."""
    if chosen:
        match = [r for r in candidates if r.run_id.startswith(chosen)]
        if not match:
            raise EchoesError(f"run '{chosen}' is not among the report's finished runs — pass one of its run ids")
        run = match[0]
    elif candidates:
        run = max(candidates, key=lambda r: r.metrics.get(Metric.TEST_ACCURACY, -1))
    else:
        return None
    cm = _artifact_json(client, run.run_id, CONFUSION_ARTIFACT)
    if not cm:
        return None
    return Confusion(f"{run.label} · {run.data} · seed {run.seed} (run {run.run_id[:8]})", cm["matrix"], cm["classes"])
