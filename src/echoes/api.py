"""The Python API: ``train`` one experiment, ``compare`` a suite. The CLI calls these."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import DataConfig, ExperimentConfig
from .data import Dataset, load_dataset
from .errors import EchoesError
from .learners import EpochCallback, create_learner
from .metrics import PeakMemory, convergence_epoch, predict
from .models import MODELS, create_model
from .registry import accepted_kwargs
from .tracking import git_commit, tracker
from .utils import resolve_device, seed_everything


def load_data(cfg: DataConfig) -> Dataset:
    """The dataset a data config names, split and standardised."""
    return load_dataset(
        cfg.source,
        val_fraction=cfg.val_fraction,
        standardize_features=cfg.standardize,
        seed=cfg.seed,
        **cfg.options(),
    )


def build_model(cfg: ExperimentConfig, ds: Dataset):
    options = cfg.model.options()
    accepted = accepted_kwargs(MODELS.get(cfg.model.name))
    if "seed" not in options and (accepted is None or "seed" in accepted):
        options["seed"] = cfg.seed  # reservoirs and other seeded builders follow the run seed
    return create_model(
        cfg.model.name,
        input_size=ds.num_features,
        num_classes=ds.num_classes,
        framewise=ds.framewise,
        **options,
    )


def run_label(cfg: ExperimentConfig, learner: str, default_learner: str) -> str:
    if cfg.name:
        return cfg.name
    return cfg.model.name if learner == default_learner else f"{cfg.model.name}+{learner}"


def train(
    cfg: ExperimentConfig,
    *,
    dataset: Dataset | None = None,
    on_epoch: EpochCallback | None = None,
    parent_run_id: str | None = None,
    experiment: str | None = None,
    tags: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train and evaluate one model on one dataset; log it; return its metrics.

    ``on_epoch`` may raise :class:`~echoes.tracking.RunStopped` to end the run early on
    purpose (a pruned sweep trial); ``tags`` are added to the run's own."""
    device = resolve_device(cfg.train.device)
    ds = dataset if dataset is not None else load_data(cfg.data)
    seed_everything(cfg.seed)
    model = build_model(cfg, ds)
    learner_name = cfg.learner.name or model.default_learner
    learner = create_learner(learner_name, **cfg.learner.options())
    label = run_label(cfg, learner_name, model.default_learner)
    trainable, total = model.parameter_counts()
    tags = {
        "model": cfg.model.name,
        "family": model.family,
        "learner": learner_name,
        "dataset": cfg.data.source,
        "seed": cfg.seed,
        "label": label,
        "git_commit": git_commit(),
        **(tags or {}),
    }
    with tracker(cfg.tracking, f"{label} · {cfg.data.source} · seed {cfg.seed}", tags,
                 parent_run_id, experiment) as run:
        run.log_params({**cfg.flat(), "learner.resolved": learner_name, "data.num_train": len(ds.train),
                        "data.num_classes": ds.num_classes, "data.num_features": ds.num_features})

        def epoch_done(epoch: int, metrics: dict[str, float]) -> None:
            # curves live under epoch/…; the run's final metrics keep the plain names
            run.log_metrics({f"epoch/{k}": v for k, v in metrics.items()}, step=epoch)
            if on_epoch is not None:
                on_epoch(epoch, metrics)

        seed_everything(cfg.seed)
        with PeakMemory(device) as memory:
            t0 = time.perf_counter()
            fit = learner.fit(model, ds, cfg.train, device=device, seed=cfg.seed, on_epoch=epoch_done)
            train_seconds = time.perf_counter() - t0

        batch = cfg.train.eval_batch_size
        test = predict(model, ds.test, batch, device)
        val = predict(model, ds.val, batch, device)
        tr = predict(model, ds.train, batch, device)
        epochs = max(len(fit.history), 1)
        val_curve = [h["val_accuracy"] for h in fit.history if "val_accuracy" in h]
        result: dict[str, Any] = {
            "model": cfg.model.name,
            "label": label,
            "learner": learner_name,
            "family": model.family,
            "data": cfg.data.source,
            "seed": cfg.seed,
            "test_accuracy": test.accuracy,
            "test_top5": test.top_k(5) if ds.num_classes > 5 else None,
            "test_loss": test.loss(),
            "val_accuracy": val.accuracy,
            "val_loss": val.loss(),
            "train_accuracy": tr.accuracy,
            "overfit_gap": tr.accuracy - val.accuracy,
            "train_seconds": train_seconds,
            "train_seconds_per_epoch": train_seconds / epochs,
            "epochs": len(fit.history),
            "best_epoch": fit.best_epoch,
            "inference_seconds_per_batch": float(np.mean(test.batch_seconds)),
            "inference_seconds_per_sample": float(np.sum(test.batch_seconds)) / max(test.num_sequences, 1),
            "peak_memory_mb": memory.megabytes,
            "trainable_params": trainable,
            "total_params": total,
            "convergence_epoch": convergence_epoch(val_curve),
            "framewise": ds.framewise,
            **({"test_error_rate": 1 - test.accuracy} if ds.framewise else {}),  # frame error rate
            **{k: v for k, v in fit.extra.items() if isinstance(v, int | float | str | bool)},
            **{k: v for k, v in ds.info.items() if k.startswith("skipped")},
        }
        run.log_metrics({k: v for k, v in result.items()
                         if isinstance(v, int | float) and not isinstance(v, bool) and k != "seed"})
        cm = test.confusion(ds.num_classes)
        run.log_dict(cfg.model_dump(), "config.yaml")
        run.log_dict({"classes": ds.class_names, "matrix": cm.tolist()}, "confusion_matrix.json")
        if cfg.tracking.log_weights and cfg.tracking.enabled:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.pt"
                torch.save(model.state_dict(), path)
                run.log_file(path)
        result["mlflow_run_id"] = run.run_id
        result["confusion_matrix"] = cm.tolist()
        result["class_names"] = ds.class_names
        result["history"] = fit.history
    return result


def check_experiment(cfg: ExperimentConfig) -> None:
    """Fail fast on names that do not exist, before any run starts."""
    MODELS.get(cfg.model.name)
    from .data import parse_source
    from .learners import LEARNERS

    parse_source(cfg.data.source)
    if cfg.learner.name is not None:
        LEARNERS.get(cfg.learner.name)


def compare(suite_path: str | None = None, overrides: list[str] | None = None, *,
            out_dir: str | None = None, echo: Any = print) -> dict[str, Any]:
    """Run every model × dataset × seed of a suite; write CSV/JSON; return the summary."""
    from .suite import load_suite, run_suite

    suite = load_suite(suite_path, overrides or [])
    if not suite.runs:
        raise EchoesError("the suite has no runs — list models, datasets and seeds")
    for cfg in suite.runs:
        check_experiment(cfg)
    return run_suite(suite, out_dir=out_dir, echo=echo)
