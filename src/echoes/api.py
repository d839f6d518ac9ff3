"""The Python API, as a notebook user would guess it; the CLI calls the same functions.

```python
from echoes import train, load_model
result = train(model="esn", data="uea:BasicMotions", **{"model.units": 500})
result.metrics["test_accuracy"], result.model.predict(list_of_arrays)
result.model.save("esn-basicmotions");  model = load_model("esn-basicmotions")
```
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import DataConfig, ExperimentConfig, load_config
from .data import Dataset
from .errors import EchoesError
from .learners import EpochCallback
from .model import Model, load_model
from .models import create_model
from .run import RunResult, check_experiment, run_experiment
from .run import load_data as _load_data


def experiment_config(config: ExperimentConfig | str | Path | None = None, **overrides: Any) -> ExperimentConfig:
    """A config object, a YAML path, or nothing — with dotted keyword overrides applied on top
    (``model="esn"``, ``**{"model.units": 1000}``, ``train={"epochs": 5}``)."""
    items = [f"{k}={_yaml(v)}" for k, v in overrides.items()]
    if isinstance(config, ExperimentConfig):
        return load_config(None, items, base=config.model_dump()) if items else config
    if config is not None and not isinstance(config, str | Path):
        raise EchoesError(f"config must be an ExperimentConfig or a YAML path, got {type(config).__name__}")
    return load_config(config, items)


def _yaml(value: Any) -> str:
    import json

    return value if isinstance(value, str) else json.dumps(value)  # JSON is YAML: lists, dicts, numbers


def train(
    config: ExperimentConfig | str | Path | None = None,
    *,
    dataset: Dataset | None = None,
    on_epoch: EpochCallback | None = None,
    resume: bool | None = None,
    **overrides: Any,
) -> RunResult:
    """Train and evaluate one model on one dataset, track it, and return the :class:`RunResult`
    (metrics, history, and ``.model``, the fitted :class:`Model`). ``resume``: continue from the
    run's last checkpoint (None: only when the config has a ``name``)."""
    cfg = experiment_config(config, **overrides)
    check_experiment(cfg)
    return run_experiment(cfg, dataset, on_epoch=on_epoch, resume=resume)


def load_data(config: ExperimentConfig | DataConfig | str | Path | None = None, **overrides: Any) -> Dataset:
    """The train / validation / test splits a config names (``load_data(data="uea:BasicMotions")``)."""
    if isinstance(config, DataConfig) and not overrides:
        return _load_data(config)
    return _load_data(experiment_config(config, **overrides))


def compare(suite: str | None = None, overrides: list[str] | None = None, *, out_dir: str | None = None,
            workers: int = 1, fresh: bool = False, echo: Any = print) -> dict[str, Any]:
    """Run every model × dataset × seed of a suite (a path or a packaged name) that its folder has not
    finished yet (``fresh``: start over in a new folder), in ``workers`` processes; record each run as it
    ends; return the summary. Failed runs do not stop the others: ``summary["failures"]`` lists them."""
    from .suite import load_suite, run_suite

    loaded = load_suite(suite, overrides or [])
    if not loaded.runs:
        raise EchoesError("the suite has no runs — list models, datasets and seeds")
    for cfg in loaded.runs:
        check_experiment(cfg)
    if workers < 1:
        raise EchoesError(f"workers must be 1 or more, got {workers}")
    return run_suite(loaded, out_dir=out_dir, workers=workers, fresh=fresh, echo=echo)


__all__ = ["Model", "RunResult", "compare", "create_model", "experiment_config", "load_data", "load_model",
           "train"]
