"""A fitted model on any data source: what ``echoes predict`` and ``echoes evaluate`` do.

The source is read raw (the model applies its own training standardisation); its labels, when it
has them, are mapped to the model's classes by name. For a source of the kind the model was trained
on, the model's own data options (backbone, frames, size...) are used unless overridden.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .data import SOURCES, parse_source
from .data.npz import is_inputs_file, read_inputs
from .data.sequences import PAD_LABEL, Sequences, pad_sequences
from .errors import EchoesError
from .metrics import predict as run_predictions
from .model import Model, softmax
from .run import test_metrics
from .utils import atomic_write, check_output, resolve_device

SPLITS = ("test", "train", "val")


def source_split(model: Model, source: str, split: str = "test", options: dict[str, Any] | None = None
                 ) -> tuple[Sequences, bool]:
    """One split of a source, raw, its labels mapped to the model's class indices; and whether it has
    labels. An npz file of inputs only (``X`` + ``lengths``, optional ``y``) is read as it is."""
    if split not in SPLITS:
        raise EchoesError(f"split '{split}' — choose one of: {', '.join(SPLITS)}")
    if ":" not in source and source.endswith(".npz"):  # a plain path to an npz file
        source = f"npz:{source}"
    kind, name = parse_source(source)
    if kind == "npz" and is_inputs_file(name):
        arrays, y = read_inputs(name, **(options or {}))
        x, lengths = pad_sequences(arrays)
        if y is None:
            unlabelled = np.full((len(lengths), x.shape[1]) if model.framewise else len(lengths), PAD_LABEL)
            return Sequences(x, lengths, unlabelled), False
        return Sequences(x, lengths, model.encode(y, lengths)), True
    trained_kind = parse_source(model.config.data.source)[0]
    merged = {**(model.config.data.options() if kind == trained_kind else {}), **(options or {})}
    raw = SOURCES.build(kind, name=name, seed=model.config.data.seed, **merged)
    seqs = getattr(raw, split)
    if seqs is None:
        raise EchoesError(f"{source} has no '{split}' split of its own — use --split test or train")
    lookup = {c: i for i, c in enumerate(model.class_names)}
    unknown = [c for c in raw.class_names if c not in lookup]
    present = set(np.unique(seqs.valid_labels()).tolist())
    missing = [raw.class_names[i] for i in sorted(present) if raw.class_names[i] in unknown]
    if missing:
        raise EchoesError(f"{source}: label(s) {', '.join(missing[:10])} are not classes of this model "
                          f"({', '.join(model.class_names[:10])}) — evaluate on data with the training classes")
    mapping = np.array([lookup.get(c, PAD_LABEL) for c in raw.class_names] + [PAD_LABEL], np.int64)
    return Sequences(seqs.x, seqs.lengths, mapping[seqs.y]), True  # y = -1 (PAD_LABEL) indexes the last entry


def prediction_rows(model: Model, seqs: Sequences, top_k: int = 1, labelled: bool = True) -> list[dict[str, Any]]:
    """One row per sequence (per frame for framewise models): predicted class, probability, top-k."""
    names = model.class_names
    k = max(1, min(top_k, len(names)))
    logits = model.logits(model.prepare(seqs))
    rows: list[dict[str, Any]] = []
    for i, z in enumerate(logits):
        frames = softmax(z) if model.framewise else softmax(z)[None]
        for t, p in enumerate(frames):
            order = np.argsort(-p)[:k]
            row: dict[str, Any] = {"index": i}
            if model.framewise:
                row["frame"] = t
            truth = seqs.y[i, t] if model.framewise else seqs.y[i]
            if labelled:
                row["label"] = names[truth] if truth != PAD_LABEL else None
            row["predicted"] = names[order[0]]
            row["probability"] = float(p[order[0]])
            if k > 1:
                row["top_k"] = [[names[j], float(p[j])] for j in order]
            rows.append(row)
    return rows


def write_predictions(rows: list[dict[str, Any]], out: str | Path) -> Path:
    """``.json`` (a list of rows) or ``.csv`` (top-k flattened to top2, top2_probability, ...)."""
    path = check_output(out, (".csv", ".json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        return atomic_write(path, json.dumps(rows, indent=1))
    flat = []
    for r in rows:
        f = {k: v for k, v in r.items() if k != "top_k"}
        for rank, (name, prob) in enumerate(r.get("top_k", [])[1:], start=2):
            f[f"top{rank}"], f[f"top{rank}_probability"] = name, prob
        flat.append(f)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for f in flat for k in f)))
    writer.writeheader()
    writer.writerows(flat)
    return atomic_write(path, buf.getvalue())


def evaluate(model: Model, seqs: Sequences, *, batch_size: int = 256, device: str = "cpu") -> dict[str, Any]:
    """The test metrics training reports (accuracy, top-5, loss, inference time) and the confusion matrix."""
    if not (seqs.y != PAD_LABEL).any():
        raise EchoesError("the data has no labels to evaluate against — use echoes predict instead")
    dev = resolve_device(device)
    model.module.to(dev)
    pred = run_predictions(model.module, model.prepare(seqs), batch_size, dev)
    metrics = test_metrics(pred, len(model.class_names), model.framewise)
    metrics["confusion_matrix"] = pred.confusion(len(model.class_names)).tolist()
    return metrics
