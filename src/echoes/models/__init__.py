"""Model registry: ``@register_model`` on a builder, ``create_model(name, ...)``.

One family per file in this package (recurrent.py, reservoir.py, ...); every
file is imported on first lookup, so adding an architecture is one file and one
decorator. Builders take ``input_size``, ``num_classes`` and ``framewise`` plus
their own hyperparameters, and return a :class:`SequenceModel`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..registry import Registry
from .base import SequenceModel, last_step

MODELS = Registry("model", "echoes.models")


def register_model(name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a builder under ``name`` (default: the builder's own name)."""
    return MODELS.register(name)


def create_model(
    name: str, *, input_size: int, num_classes: int, framewise: bool = False, **kwargs: Any
) -> SequenceModel:
    """Build a registered model; unknown names and keywords get a suggestion."""
    model = MODELS.build(name, input_size=input_size, num_classes=num_classes, framewise=framewise, **kwargs)
    model.name = name
    return model


def list_models() -> list[tuple[str, str]]:
    """(name, one-line description) for every registered model."""
    return [(n, MODELS.summary(n)) for n in MODELS.names()]


__all__ = ["MODELS", "SequenceModel", "create_model", "last_step", "list_models", "register_model"]
