"""Sweep files: the sweep's settings, its base experiment and its search space, checked before any trial runs."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..config import (
    ExperimentConfig,
    build_config,
    config_error,
    deep_merge,
    parse_overrides,
    read_config_file,
    read_yaml,
    set_dotted,
)
from ..errors import EchoesError, did_you_mean
from ..models import MODELS
from ..registry import check_kwargs
from ..run import check_experiment
from ..utils import require
from .optuna_parts import make_pruner, make_sampler


class SweepTag(StrEnum):
    """MLflow tags a sweep writes (the report reads them)."""

    SWEEP = "echoes.sweep"  # the parent run: the sweep's name
    SAMPLER = "sweep.sampler"
    OBJECTIVE = "sweep.objective"
    DIRECTION = "sweep.direction"
    STORAGE = "sweep.storage"
    BEST_TRIAL = "sweep.best_trial"
    NAME = "sweep"  # each trial's run: the sweep it belongs to
    TRIAL = "sweep.trial"  # ... and its Optuna trial number
    STOPPED = "stopped"  # why a run ended early (tracking.RunStopped writes it too)


PARENT_RUN = "mlflow_parent_run_id"  # study user attr: the sweep's MLflow run
SPACE_ARTIFACT = "space.json"  # the parent run's search space, as Optuna distributions in JSON


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
    heartbeat: int = Field(10, ge=1)  # seconds between a running trial's heartbeats; lost after four missed
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

    def load_study(self, storage: Any, seed: int = 0) -> Any:
        """The Optuna study, with a fresh sampler seeded by `seed` (a trial's number: reproducible,
        and parallel workers do not propose the same point)."""
        import optuna

        return optuna.load_study(study_name=self.name, storage=storage,
                                 sampler=make_sampler(self.cfg.sampler, seed), pruner=make_pruner(self.cfg.pruning))

    def mlflow(self) -> tuple[Any, str] | None:
        """(MlflowClient, tracking URI) of the store the trials go to; None when tracking is off."""
        tracking = self.base_config.tracking
        if not tracking.enabled:
            return None
        from mlflow.tracking import MlflowClient

        from ..tracking import ensure_store, store_uri

        uri = store_uri(tracking)
        ensure_store(uri)
        return MlflowClient(uri), uri

    def to_dict(self) -> dict[str, Any]:
        """Plain data for a worker process."""
        return {"cfg": self.cfg.model_dump(), "base": self.base}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sweep:
        return make_sweep(SweepConfig.model_validate(d["cfg"]), d["base"])


def load_sweep(path: str, overrides: list[str] | None = None) -> Sweep:
    """Read a sweep file; ``KEY=VALUE`` overrides set sweep keys (trials=50) or base keys."""
    require("optuna", "sweep")
    p, raw = read_config_file("sweeps", path, SWEEP_KEYS)
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
    cfg = sweep.config_for(sweep.points[0] if sweep.points else
                           {k: _first_value(d) for k, d in sweep.distributions.items()})
    check_experiment(cfg)
    check_kwargs(MODELS.get(cfg.model.name), cfg.model.options(), f"model '{cfg.model.name}'")
    make_sampler(sweep.cfg.sampler, 0)
    make_pruner(sweep.cfg.pruning)
