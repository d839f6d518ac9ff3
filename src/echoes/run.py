"""One experiment run: the names of what it measures, its result, and the function that runs it.

Everything above (api, suite, sweep, report, cli) reads a run through :class:`RunResult` and
the name constants below — never through string keys of its own — and this module imports
nothing above it.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from .config import ExperimentConfig
from .data import Dataset, load_dataset
from .errors import EchoesError
from .learners import Checkpoints, EpochCallback, FitResult, Learner, create_learner
from .metrics import PeakMemory, Predictions, convergence_epoch, head_metrics, predict
from .model import Model, build_model
from .models import MODELS, SequenceModel, default_learner
from .tracking import RunStopped, tracker
from .utils import git_commit, resolve_device, seed_everything


class Metric(StrEnum):
    """Numbers every run reports (MLflow metric names; CSV/JSON columns)."""

    TEST_ACCURACY = "test_accuracy"
    TEST_TOP5 = "test_top5"
    TEST_LOSS = "test_loss"
    TEST_ERROR_RATE = "test_error_rate"  # framewise tasks: 1 − frame accuracy
    VAL_ACCURACY = "val_accuracy"
    VAL_LOSS = "val_loss"
    TRAIN_ACCURACY = "train_accuracy"
    OVERFIT_GAP = "overfit_gap"  # train − val accuracy
    TRAIN_SECONDS = "train_seconds"  # building the model's fixed weights included, as for any library's fit
    BUILD_SECONDS = "build_seconds"  # of which: building the model (a reservoir's spectral radius...)
    TRAIN_SECONDS_PER_EPOCH = "train_seconds_per_epoch"
    EPOCHS = "epochs"
    BEST_EPOCH = "best_epoch"
    CONVERGENCE_EPOCH = "convergence_epoch"
    INFERENCE_SECONDS_PER_BATCH = "inference_seconds_per_batch"
    INFERENCE_SECONDS_PER_SAMPLE = "inference_seconds_per_sample"
    PEAK_MEMORY_MB = "peak_memory_mb"
    TRAINABLE_PARAMS = "trainable_params"
    TOTAL_PARAMS = "total_params"
    RESUMED_FROM_EPOCH = "resumed_from_epoch"  # only in runs that continued from a checkpoint


class Tag(StrEnum):
    """What identifies a run (MLflow tags; the first columns of every table)."""

    MODEL = "model"
    LABEL = "label"  # the row name in comparisons: the model, "+learner" when not its default
    LEARNER = "learner"
    FAMILY = "family"
    DATA = "data"
    SEED = "seed"
    GIT_COMMIT = "git_commit"
    RUN_ID = "mlflow_run_id"
    FRAMEWISE = "framewise"
    HEADS = "heads"  # several label heads: their names, comma-separated ("verb,noun"); "" for one


# Per-epoch curves are logged as "epoch/<name>" so the run's final metrics keep the plain names.
EPOCH_PREFIX = "epoch/"
CONFIG_ARTIFACT = "config.yaml"  # every tracked run's resolved config
CONFUSION_ARTIFACT = "confusion_matrix.json"  # {"classes": [...], "matrix": [[...]]} on the test split


@dataclass(frozen=True)
class RunResult:
    """What one run gives back: who it was, what it measured, how it trained, the fitted model.

    ``result[name]`` reads an identity field or a metric (``result[Metric.TEST_ACCURACY]``);
    :meth:`row` is the flat record that tables, CSV and JSON hold."""

    model_name: str
    label: str
    learner: str
    family: str
    data: str
    seed: int
    metrics: Mapping[str, Any]  # Metric names plus the learner's extras (ridge_alpha, ...)
    history: tuple[Mapping[str, float], ...] = ()
    class_names: tuple[str, ...] = ()
    confusion_matrix: tuple[tuple[int, ...], ...] = ()
    framewise: bool = False
    heads: tuple[str, ...] = ()  # several label heads: their names (their metrics: test_<head>_accuracy...)
    run_id: str | None = None
    config: ExperimentConfig | None = field(default=None, compare=False)
    model: Model | None = field(default=None, compare=False, repr=False)

    def row(self) -> dict[str, Any]:
        """Identity and metrics as one flat dict (non-finite numbers become None)."""
        out: dict[str, Any] = {
            Tag.DATA: self.data, Tag.LABEL: self.label, Tag.MODEL: self.model_name, Tag.LEARNER: self.learner,
            Tag.FAMILY: self.family, Tag.SEED: self.seed, Tag.FRAMEWISE: self.framewise,
            Tag.HEADS: ",".join(self.heads),
        }
        for k, v in self.metrics.items():
            out[k] = None if isinstance(v, float) and not math.isfinite(v) else v
        out[Tag.RUN_ID] = self.run_id
        return {str(k): v for k, v in out.items()}

    def __getitem__(self, key: str) -> Any:
        return self.row()[str(key)]

    def get(self, key: str, default: Any = None) -> Any:
        return self.row().get(str(key), default)


def load_data(cfg: ExperimentConfig | Any) -> Dataset:
    """The dataset a config's ``data`` section names, split and standardised."""
    d = cfg.data if isinstance(cfg, ExperimentConfig) else cfg
    return load_dataset(d.source, val_fraction=d.val_fraction, standardize_features=d.standardize,
                        seed=d.seed, **d.options())


def run_label(cfg: ExperimentConfig, learner: str, default_learner: str) -> str:
    if cfg.name:
        return cfg.name
    return cfg.model.name if learner == default_learner else f"{cfg.model.name}+{learner}"


def check_experiment(cfg: ExperimentConfig) -> None:
    """Fail fast, before any run starts: names that do not exist, options of the wrong name, type or range."""
    from .data import SOURCES, parse_source
    from .learners import LEARNERS

    MODELS.check(cfg.model.name, cfg.model.options())
    kind, _ = parse_source(cfg.data.source)
    SOURCES.check(kind, cfg.data.options())
    learner = cfg.learner.name or default_learner(cfg.model.name)
    options = LEARNERS.check(learner, cfg.learner.options())
    parallel = cfg.train.nproc > 1 or distributed.launched()
    if parallel and not getattr(LEARNERS.get(learner), "data_parallel", True):
        raise EchoesError(f"learner={learner} does not support train.nproc > 1 (data-parallel) — run it in one process")
    # iterative learners stop early on the validation split; ridge needs it only to select λ on it
    if cfg.data.val_fraction == 0 and (getattr(LEARNERS.get(learner), "iterative", True)
                                       or getattr(options, "select", None) == "val"):
        raise EchoesError(f"data.val_fraction=0 leaves no validation split, which learner '{learner}' needs "
                          f"— set data.val_fraction > 0 (e.g. 0.2), or use learner=ridge with leave-one-out")


def resolved_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as JSON, the model's and the learner's options completed by their defaults: what keys a
    run (checkpoints, compare folders), so one made under other defaults (an older echoes) is not resumed."""
    from .learners import LEARNERS

    raw = cfg.model_dump(mode="json")
    learner = cfg.learner.name or default_learner(cfg.model.name)
    raw["model"] = {"name": cfg.model.name,
                    **MODELS.check(cfg.model.name, cfg.model.options()).model_dump(mode="json")}
    raw["learner"] = {"name": learner, **LEARNERS.check(learner, cfg.learner.options()).model_dump(mode="json")}
    return raw


def run_key(cfg: ExperimentConfig, label: str, experiment: str | None = None) -> str:
    """The name of a run's checkpoint folder: the same command gives the same key.

    ``<label>-seed<seed>-<hash>``, the hash over the whole config except ``tracking.*`` and the
    checkpoint settings, plus the MLflow experiment the run goes to."""
    raw = resolved_config(cfg)
    del raw["tracking"], raw["train"]["checkpoint_every"], raw["train"]["keep_checkpoints"]
    raw["experiment"] = experiment or cfg.tracking.experiment
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', label).strip('-')}-seed{cfg.seed}-{digest}"


def checkpoints(cfg: ExperimentConfig, label: str, experiment: str | None = None) -> Checkpoints:
    """A run's checkpoints: ``<results_dir>/checkpoints/<run key>/`` (tracking on or off)."""
    folder = Path(cfg.tracking.results_dir) / "checkpoints" / run_key(cfg, label, experiment)
    return Checkpoints(folder, every=cfg.train.checkpoint_every, keep=cfg.train.keep_checkpoints)


def test_metrics(test: Predictions, num_classes: int, framewise: bool, info: Mapping[str, Any] | None = None
                 ) -> dict[str, Any]:
    """What a model's predictions on a labelled test set measure: accuracy, top-5, loss, inference time.

    With several label heads, accuracy and top-5 are the action's (EPIC-KITCHENS-100's scoring), and each
    head and the action also get theirs, on the tail classes and on ``info["test_subsets"]`` too."""
    m: dict[str, Any] = {
        Metric.TEST_ACCURACY: test.accuracy,
        Metric.TEST_TOP5: test.top_k(5) if num_classes > 5 else None,
        Metric.TEST_LOSS: test.loss(),
        Metric.INFERENCE_SECONDS_PER_BATCH: float(np.mean(test.batch_seconds)) if test.batch_seconds else None,
        Metric.INFERENCE_SECONDS_PER_SAMPLE: float(np.sum(test.batch_seconds)) / max(test.num_sequences, 1),
    }
    if framewise:
        m[Metric.TEST_ERROR_RATE] = 1 - test.accuracy  # frame error rate
    if test.multi:
        info = info or {}
        m[Metric.TEST_TOP5] = test.top_k(5)
        m.update(head_metrics(test, "test", info.get("test_subsets"), info.get("tail_classes")))
    return {str(k): v for k, v in m.items()}


def _head_fit_metrics(tr: Predictions, val: Predictions | None) -> dict[str, Any]:
    """Several label heads: each head's (and the action's) train and validation accuracy and their gap."""
    m: dict[str, Any] = {}
    train = head_metrics(tr, "train")
    held = head_metrics(val, "val") if val else {}
    for task in (*tr.heads.names, "action"):
        a, b = train[f"train_{task}_accuracy"], held.get(f"val_{task}_accuracy")
        m.update({f"train_{task}_accuracy": a, f"val_{task}_accuracy": b,
                  f"{Metric.OVERFIT_GAP}_{task}": None if b is None else a - b})
    return m


def _metrics(fit: FitResult, test: Predictions, val: Predictions | None, tr: Predictions, ds: Dataset,
             train_seconds: float, memory_mb: float, model: SequenceModel) -> dict[str, Any]:
    trainable, total = model.parameter_counts()
    epochs = max(len(fit.history), 1)
    val_curve = [h[Metric.VAL_ACCURACY] for h in fit.history if Metric.VAL_ACCURACY in h]
    m: dict[str, Any] = {
        **test_metrics(test, ds.num_classes, ds.framewise, ds.info),
        Metric.VAL_ACCURACY: val.accuracy if val else None,  # None: data.val_fraction=0
        Metric.VAL_LOSS: val.loss() if val else None,
        Metric.TRAIN_ACCURACY: tr.accuracy,
        Metric.OVERFIT_GAP: tr.accuracy - val.accuracy if val else None,
        Metric.TRAIN_SECONDS: train_seconds,
        Metric.TRAIN_SECONDS_PER_EPOCH: train_seconds / epochs,
        Metric.EPOCHS: len(fit.history),
        Metric.BEST_EPOCH: fit.best_epoch,
        Metric.PEAK_MEMORY_MB: memory_mb,
        Metric.TRAINABLE_PARAMS: trainable,
        Metric.TOTAL_PARAMS: total,
        Metric.CONVERGENCE_EPOCH: convergence_epoch(val_curve),
    }
    if test.multi:
        m.update(_head_fit_metrics(tr, val))
    if fit.resumed_from is not None:
        m[Metric.RESUMED_FROM_EPOCH] = fit.resumed_from
    m.update({k: v for k, v in fit.extra.items() if isinstance(v, int | float | str | bool)})
    m.update({k: v for k, v in ds.info.items() if k.startswith("skipped")})
    return {str(k): v for k, v in m.items()}


def numeric(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The metrics MLflow can hold: numbers, not flags or text."""
    return {k: v for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _checkpoints(cfg: ExperimentConfig, label: str, experiment: str | None, resume: bool | None
                 ) -> Checkpoints | None:
    """The run's checkpoint folder, loaded when resuming (default: when the run has a name), else emptied."""
    if not cfg.train.checkpoint_every:
        return None
    ckpt = checkpoints(cfg, label, experiment)
    if resume if resume is not None else cfg.name is not None:
        ckpt.load()
    elif distributed.is_main():  # the other ranks start afresh anyway, and must not race rank 0
        ckpt.clear()
    return ckpt


def _fit(learner: Learner, module: SequenceModel, ds: Dataset, cfg: ExperimentConfig, device: torch.device,
         on_epoch: EpochCallback, ckpt: Checkpoints | None) -> tuple[FitResult, float, float]:
    """Fit under the memory meter: (the learner's result, seconds spent fitting incl. before a resume, peak MB)."""
    seed_everything(cfg.seed)
    with PeakMemory(device, iterative=getattr(learner, "iterative", True)) as memory:  # see _warm_up
        t0 = time.perf_counter()
        try:
            fit = learner.fit(module, ds, cfg.train, device=device, seed=cfg.seed, on_epoch=on_epoch,
                              checkpoint=ckpt)
        except RunStopped:  # e.g. a pruned trial: ended for good, nothing to resume
            if ckpt is not None and distributed.is_main():
                ckpt.clear()
            raise
        seconds = time.perf_counter() - t0 + fit.seconds_before_resume
    return fit, seconds, memory.megabytes


def run_experiment(
    cfg: ExperimentConfig,
    dataset: Dataset | None = None,
    *,
    on_epoch: EpochCallback | None = None,
    parent_run_id: str | None = None,
    experiment: str | None = None,
    tags: dict[str, Any] | None = None,
    resume: bool | None = None,
) -> RunResult:
    """Train and evaluate one model on one dataset, track it, and return the result and fitted model.

    ``on_epoch`` may raise :class:`~echoes.tracking.RunStopped` to end the run early on purpose
    (a pruned sweep trial); ``tags`` are added to the run's own.

    Iterative learners checkpoint every ``train.checkpoint_every`` epochs (:func:`checkpoints`).
    ``resume=True`` continues from the last checkpoint of the same run key, in the same MLflow run,
    and ends as an uninterrupted run would (same metrics, history and weights); ``None`` resumes
    when the config has a ``name``; otherwise an old checkpoint is deleted and training starts
    afresh. A finished (or deliberately stopped) run deletes its checkpoints.

    Under torchrun every rank calls this; only rank 0 tracks and writes checkpoints
    (:mod:`echoes.distributed`)."""
    device = distributed.setup(resolve_device(cfg.train.device))
    ds = dataset if dataset is not None else load_data(cfg)
    seed_everything(cfg.seed)
    t0 = time.perf_counter()
    module = build_model(cfg, ds.num_features, ds.num_classes, ds.framewise, ds.heads.sizes)
    build_seconds = time.perf_counter() - t0
    learner_name = cfg.learner.name or module.default_learner
    learner = create_learner(learner_name, **cfg.learner.options())
    label = run_label(cfg, learner_name, module.default_learner)
    ckpt = _checkpoints(cfg, label, experiment, resume)
    run_tags = {
        Tag.MODEL: cfg.model.name, Tag.FAMILY: module.family, Tag.LEARNER: learner_name,
        Tag.DATA: cfg.data.source, Tag.SEED: cfg.seed, Tag.LABEL: label, Tag.GIT_COMMIT: git_commit(),
        **({Tag.HEADS: ",".join(ds.heads.names)} if ds.heads.multi else {}), **(tags or {}),
    }
    tracking = cfg.tracking if distributed.is_main() else cfg.tracking.model_copy(
        update={"enabled": False, "tensorboard": False})  # rank 0 alone tracks
    with tracker(tracking, f"{label} · {cfg.data.source} · seed {cfg.seed}", run_tags,
                 parent_run_id, experiment, ckpt.meta.get("run_id") if ckpt else None) as run:
        if ckpt is not None:
            ckpt.meta["run_id"] = run.run_id
        run.log_params({**cfg.flat(), "train.nproc": distributed.world_size(),  # the ranks really started
                        "learner.resolved": learner_name, "data.num_train": len(ds.train),
                        "data.num_classes": ds.num_classes, "data.num_features": ds.num_features})

        def epoch_done(epoch: int, metrics: dict[str, float]) -> None:
            run.log_metrics({f"{EPOCH_PREFIX}{k}": v for k, v in metrics.items()}, step=epoch)
            if on_epoch is not None:
                on_epoch(epoch, metrics)

        fit, fit_seconds, memory_mb = _fit(learner, module, ds, cfg, device, epoch_done, ckpt)
        batch, heads = cfg.train.eval_batch_size, ds.heads
        test = predict(module, ds.test, batch, device, heads)
        val = predict(module, ds.val, batch, device, heads) if len(ds.val) else None
        tr = predict(module, ds.train, batch, device, heads)
        metrics = _metrics(fit, test, val, tr, ds, build_seconds + fit_seconds, memory_mb, module)
        metrics[Metric.BUILD_SECONDS] = build_seconds
        run.log_metrics(numeric(metrics))
        cm = test.confusion(ds.num_classes) if not heads.multi else np.zeros((0, 0), np.int64)  # one head only
        run.log_dict(cfg.model_dump(), CONFIG_ARTIFACT)
        if not heads.multi:
            run.log_dict({"classes": ds.class_names, "matrix": cm.tolist()}, CONFUSION_ARTIFACT)
        fitted = Model.from_training(module.cpu(), cfg, ds)
        if cfg.tracking.log_weights:
            run.log_model(fitted)
    if ckpt is not None and distributed.is_main():
        ckpt.clear()
    return RunResult(
        model_name=cfg.model.name, label=label, learner=learner_name, family=module.family,
        data=cfg.data.source, seed=cfg.seed, metrics=metrics,
        history=tuple(dict(h) for h in fit.history), class_names=tuple(ds.class_names),
        confusion_matrix=tuple(tuple(int(v) for v in row) for row in cm), framewise=ds.framewise,
        heads=heads.names if heads.multi else (),
        run_id=run.run_id, config=cfg, model=fitted,
    )
