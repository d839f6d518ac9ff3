"""Learners fit a model's weights: ``gradient`` (BPTT), ``ridge``, ``eprop``...

A learner is a class in one file of this package (listed in :data:`LEARNER_MODULES`;
other packages: the ``echoes.learners`` entry-point group), registered with
``@register_learner("name")``; its constructor takes the ``learner.*`` options,
checked against their annotations, and ``fit`` does the work. The shared ``train.*`` settings come as a TrainConfig.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..config import TrainConfig
from ..data import Dataset
from ..models import SequenceModel
from ..registry import Registry
from .checkpoint import Checkpoints

LEARNER_MODULES = ("gradient", "ridge", "eprop")
LEARNERS = Registry("learner", "learner", [f"{__name__}.{m}" for m in LEARNER_MODULES], group="echoes.learners")

EpochCallback = Callable[[int, dict[str, float]], None]


def register_learner(name: str) -> Callable[[Any], Any]:
    return LEARNERS.register(name)


@dataclass
class FitResult:
    """What a learner reports: per-epoch history and anything worth logging."""

    history: list[dict[str, float]] = field(default_factory=list)  # one dict per epoch
    best_epoch: int | None = None  # 1-based epoch whose weights were kept
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. {"ridge_alpha": 1e-3}
    resumed_from: int | None = None  # the checkpoint's epoch when the fit continued an earlier one
    seconds_before_resume: float = 0.0  # training time spent before that checkpoint was written


class Learner(Protocol):
    def fit(
        self,
        model: SequenceModel,
        data: Dataset,
        train: TrainConfig,
        *,
        device: torch.device,
        seed: int,
        on_epoch: EpochCallback | None = None,
        checkpoint: Checkpoints | None = None,  # iterative learners save to it and resume from it
    ) -> FitResult: ...


def create_learner(name: str, **options: Any) -> Learner:
    return LEARNERS.build(name, **options)


__all__ = ["LEARNERS", "Checkpoints", "EpochCallback", "FitResult", "Learner", "create_learner", "register_learner"]
