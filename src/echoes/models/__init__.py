"""Model registry: ``@register_model`` on a builder, ``create_model(name, ...)``.

One family per file in this package, each listed in :data:`FAMILIES` and imported
on first lookup; models of other packages come through the ``echoes.models``
entry-point group. Builders take ``input_size``, ``num_classes`` and ``framewise``
plus their hyperparameters — declared once per family as an :class:`Options`
class, variants registered as a few changed defaults — and return a
:class:`SequenceModel`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

from ..registry import Options, Registry
from .base import SequenceModel, last_step

FAMILIES = ("recurrent", "reservoir", "lmu", "spiking", "attention", "pooling", "video", "multitask")
MODELS = Registry("model", "model", [f"{__name__}.{f}" for f in FAMILIES], group="echoes.models",
                  context=("input_size", "num_classes", "framewise", "heads"))


def register_model(name: str | None = None, *, options: type[Options] | None = None, doc: str | None = None,
                   **variant: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a builder under ``name`` (default: the builder's own name).

    ``options``: the family's typed hyperparameters; ``variant``: changed defaults of those
    (``units=300``) or fixed builder arguments (``cell="lstm"``); ``doc``: the one-line
    description when the builder's docstring is the family's.
    """
    return MODELS.register(name, options=options, doc=doc, **variant)


def create_model(
    name: str, *, input_size: int, num_classes: int, framewise: bool = False,
    heads: tuple[int, ...] | None = None, **kwargs: Any
) -> SequenceModel:
    """Build a registered model; unknown names and keywords get a suggestion.

    ``heads``: the classes of each label head when there are several (they add up to
    ``num_classes``; the outputs are theirs side by side). Most models need not know: their one
    linear readout serves every head. A builder with a ``heads`` argument gets them (models with a
    branch per head, such as ``cross_attention``)."""
    heads = tuple(int(h) for h in heads) if heads else (num_classes,)
    if sum(heads) != num_classes:
        raise ValueError(f"head sizes {heads} do not add up to num_classes={num_classes}")
    if "heads" in inspect.signature(MODELS.get(name)).parameters:
        kwargs["heads"] = heads
    model = MODELS.build(name, input_size=input_size, num_classes=num_classes, framewise=framewise, **kwargs)
    model.name = name
    model.head_sizes = heads
    return model


def model_class(name: str) -> type[SequenceModel] | None:
    """The class a registered builder makes (its return annotation), read without building; None if unsaid."""
    builder = MODELS.get(name)
    try:
        cls = builder if isinstance(builder, type) else typing.get_type_hints(builder).get("return")
    except Exception:  # an annotation that cannot be resolved
        return None
    return cls if isinstance(cls, type) and issubclass(cls, SequenceModel) else None


def default_learner(name: str) -> str:
    """The learner a registered model trains with unless told otherwise."""
    cls = model_class(name)
    return cls.default_learner if cls is not None else SequenceModel.default_learner


def list_models() -> list[tuple[str, str]]:
    """(name, one-line description) for every registered model."""
    return [(n, MODELS.summary(n)) for n in MODELS.names()]


__all__ = ["MODELS", "Options", "SequenceModel", "create_model", "default_learner", "last_step", "list_models",
           "model_class", "register_model"]
