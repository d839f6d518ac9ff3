"""Data sources, named ``KIND:NAME`` (``uea:BasicMotions``, ``npz:path.npz``...).

A source is one file in this package, listed in :data:`SOURCE_MODULES`, with a
function decorated by ``@register_source("kind")`` (other packages: the
``echoes.data`` entry-point group); it returns :class:`SourceData` and everything
shared — validation split, standardisation, checks — happens here once. Its
keyword parameters are its ``data.*`` options, checked against their annotations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import EchoesError
from ..registry import Registry
from .heads import Heads
from .sequences import Dataset, Sequences, check_finite, standardize, stratified_split

SOURCE_MODULES = ("synthetic", "npz", "uea", "ucf101", "timit", "epic100")
SOURCES = Registry("data source", "data", [f"{__name__}.{m}" for m in SOURCE_MODULES], group="echoes.data",
                   context=("name", "seed"))


def register_source(kind: str, examples: Callable[[], list[str]] | None = None):
    """Register ``fn(name, *, seed, **options) -> SourceData`` as ``kind:NAME``.

    ``examples`` lists names that work offline (shown by ``echoes datasets``).
    """

    def decorator(fn: Callable[..., SourceData]) -> Callable[..., SourceData]:
        fn.examples = examples  # type: ignore[attr-defined]
        return SOURCES.register(kind)(fn)

    return decorator


@dataclass
class SourceData:
    """What a source returns: test and train, and validation when it has one.

    With several label heads (``heads``), labels are their codes (:meth:`Heads.encode`) and
    ``class_names`` may be left empty. ``info`` may carry ``test_ids`` (names of the test items,
    for result files), ``test_subsets`` ({name: bool mask over the test items}) and
    ``tail_classes`` ({head: class indices}) for the per-subset metrics."""

    train: Sequences
    test: Sequences
    class_names: list[str]
    val: Sequences | None = None
    heads: Heads | None = None
    train_groups: np.ndarray | None = None  # keeps groups together in the val split
    info: dict[str, Any] = field(default_factory=dict)
    standardize: bool = True  # False: keep raw values (e.g. uint8 pixels a model normalises itself)


def parse_source(spec: str) -> tuple[str, str]:
    if not isinstance(spec, str) or ":" not in spec:
        raise EchoesError(
            f"data source '{spec}' must look like KIND:NAME, e.g. uea:BasicMotions or "
            f"synthetic:motion (kinds: {', '.join(SOURCES.names())})"
        )
    kind, name = spec.split(":", 1)
    SOURCES.get(kind)  # unknown kind → suggestion
    return kind, name


def check_labels(spec: str, raw: SourceData) -> None:
    """Training must see two classes or more, and every class it is tested on (per-sequence labels;
    framewise tasks name a fixed vocabulary, e.g. TIMIT's phones, of which a corpus may lack some)."""
    if raw.heads is not None and raw.heads.multi:  # each head needs two classes; held-out pairs may be new
        per_head = raw.heads.decode(raw.train.valid_labels())
        for h, name in enumerate(raw.heads.names):
            if len(np.unique(per_head[:, h])) < 2:
                raise EchoesError(f"{spec}: the training set has a single {name} class — a classifier needs "
                                  "examples of two classes or more")
        return
    seen = np.unique(raw.train.valid_labels())
    if len(seen) < 2:
        which = f" ('{raw.class_names[seen[0]]}')" if len(seen) else ""
        raise EchoesError(f"{spec}: the training set has a single class{which} — a classifier needs "
                          "examples of two classes or more")
    if raw.train.framewise:
        return
    for split_name, split in (("test", raw.test), ("validation", raw.val)):
        unseen = np.setdiff1d(split.y, seen) if split is not None else []
        if len(unseen):
            names = ", ".join(f"'{raw.class_names[i]}'" for i in unseen[:5]) + (" ..." if len(unseen) > 5 else "")
            raise EchoesError(f"{spec}: {split_name} label(s) {names} never appear in training — add training "
                              f"examples of them or drop them from the {split_name} set")


def load_dataset(
    spec: str,
    *,
    val_fraction: float = 0.2,
    standardize_features: bool = True,
    seed: int = 0,
    **options: Any,
) -> Dataset:
    """Load a source and prepare train/val/test splits for any model."""
    kind, name = parse_source(spec)
    raw: SourceData = SOURCES.build(kind, name=name, seed=seed, **options)
    for split_name, split in (("train", raw.train), ("test", raw.test), ("val", raw.val)):
        if split is None:
            continue
        if len(split) == 0:
            raise EchoesError(f"{spec}: the {split_name} split is empty — check the source files")
        check_finite(split.x, f"{spec}: {split_name} data")
    check_labels(spec, raw)
    train, val = raw.train, raw.val
    if val is None:
        if not 0 <= val_fraction < 1:
            raise EchoesError(f"data.val_fraction must be in [0, 1), got {val_fraction}")
        tr_idx, va_idx = (stratified_split(train.y, val_fraction, seed, raw.train_groups) if val_fraction > 0
                          else (np.arange(len(train)), np.arange(0)))  # 0: no validation split
        train, val = train.subset(tr_idx), train.subset(va_idx)
    heads = raw.heads if raw.heads is not None and raw.heads.multi else None
    class_names = heads.output_names if heads else list(raw.class_names)
    ds = Dataset(spec, train, val, raw.test, class_names, dict(raw.info), heads)
    return standardize(ds) if standardize_features and raw.standardize else ds


__all__ = [
    "SOURCES",
    "Dataset",
    "Heads",
    "Sequences",
    "SourceData",
    "load_dataset",
    "parse_source",
    "register_source",
]
