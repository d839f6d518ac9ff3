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
from .data.heads import Heads
from .data.npz import is_inputs_file, read_inputs
from .data.sequences import PAD_LABEL, Sequences, pad_sequences
from .errors import EchoesError
from .metrics import predict as run_predictions
from .model import Model, softmax
from .run import test_metrics
from .utils import atomic_write, check_output, resolve_device

SPLITS = ("test", "train", "val")


def source_split(model: Model, source: str, split: str = "test", options: dict[str, Any] | None = None
                 ) -> tuple[Sequences, bool, dict[str, Any]]:
    """One split of a source, raw, its labels mapped to the model's class indices; whether it has
    labels; what the source says about the split's items: ``ids`` (their names, e.g. EPIC's narration
    ids) and, for the test split, the ``test_subsets`` and ``tail_classes`` its metrics use.
    An npz file of inputs only (``X`` + ``lengths``, optional ``y``) is read as it is."""
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
            return Sequences(x, lengths, unlabelled), False, {}
        return Sequences(x, lengths, model.encode(y, lengths)), True, {}
    trained_kind = parse_source(model.config.data.source)[0]
    merged = {**(model.config.data.options() if kind == trained_kind else {}), **(options or {})}
    raw = SOURCES.build(kind, name=name, seed=model.config.data.seed, **merged)
    seqs = getattr(raw, split)
    if seqs is None:
        raise EchoesError(f"{source} has no '{split}' split of its own — use --split test or train")
    info = {k: v for k, v in raw.info.items() if split == "test" and k in ("test_subsets", "tail_classes")}
    if raw.info.get(f"{split}_ids") is not None:
        info["ids"] = [str(i) for i in raw.info[f"{split}_ids"]]
    theirs = raw.heads or Heads.single(raw.class_names)
    ours = model.heads
    if theirs.names != ours.names:
        raise EchoesError(f"{source} has label heads {', '.join(theirs.names)}; this model predicts "
                          f"{', '.join(ours.names)} — evaluate on data with the model's heads")
    labels = theirs.decode(seqs.y) if ours.multi else seqs.y[..., None]
    mapped = np.stack([_map_classes(labels[..., h], theirs.classes[h], ours.classes[h], source)
                       for h in range(len(ours.names))], -1)
    if ours.multi:
        return Sequences(seqs.x, seqs.lengths, ours.encode(mapped)), True, info
    return Sequences(seqs.x, seqs.lengths, mapped[..., 0]), True, info


def _map_classes(y: np.ndarray, theirs: tuple[str, ...], ours: tuple[str, ...], source: str) -> np.ndarray:
    """A source's class indices → the model's, matched by name (PAD_LABEL stays)."""
    lookup = {c: i for i, c in enumerate(ours)}
    present = set(np.unique(y[y != PAD_LABEL]).tolist())
    missing = [theirs[i] for i in sorted(present) if theirs[i] not in lookup]
    if missing:
        raise EchoesError(f"{source}: label(s) {', '.join(missing[:10])} are not classes of this model "
                          f"({', '.join(ours[:10])}) — evaluate on data with the training classes")
    mapping = np.array([lookup.get(c, PAD_LABEL) for c in theirs] + [PAD_LABEL], np.int64)
    return mapping[y]  # y = -1 (PAD_LABEL) indexes the last entry


def prediction_rows(model: Model, seqs: Sequences, top_k: int = 1, labelled: bool = True,
                    ids: list[str] | None = None) -> list[dict[str, Any]]:
    """One row per sequence (per frame for framewise models): predicted class, probability, top-k.
    With several label heads: the action (``verb/noun``) and each head's prediction and probability."""
    if model.heads.multi:
        return _head_rows(model, seqs, labelled, ids)
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


def _head_rows(model: Model, seqs: Sequences, labelled: bool, ids: list[str] | None) -> list[dict[str, Any]]:
    heads = model.heads
    scores = heads.split(model.logits(model.prepare(seqs)))
    truth = heads.decode(seqs.y)
    rows: list[dict[str, Any]] = []
    for i in range(len(seqs)):
        row: dict[str, Any] = {"index": i} if ids is None else {"index": i, "id": ids[i]}
        chosen, actual = [], []
        for h, (name, classes) in enumerate(zip(heads.names, heads.classes, strict=True)):
            p = softmax(scores[h][i])
            best = int(p.argmax())
            chosen.append(classes[best])
            actual.append(classes[truth[i, h]])
            row[f"{name}_predicted"], row[f"{name}_probability"] = classes[best], float(p[best])
        if labelled:
            row["label"] = "/".join(actual)
        row["predicted"] = "/".join(chosen)
        rows.append(row)
    return rows


CHALLENGE = {"version": "0.2", "challenge": "action_recognition", "sls_pt": 0, "sls_tl": 0, "sls_td": 0}


def write_challenge(model: Model, seqs: Sequences, ids: list[str] | None, out: str | Path) -> Path:
    """EPIC-KITCHENS-100's result files for a model with label heads: ``.npz`` — the evaluation script's
    dict format (``verb_output`` [N, 97], ``noun_output`` [N, 300], ``narration_id`` [N]), raw scores;
    ``.json`` — the challenge's submission (``results: {narration_id: {"verb": {"0": score, ...}, ...}}``).
    Supervision levels (``sls_*``) are written as 0: set them before submitting."""
    path = check_output(out, (".npz", ".json"))
    path.parent.mkdir(parents=True, exist_ok=True)
    heads = model.heads
    scores = heads.split(model.logits(model.prepare(seqs)))
    names = np.array(ids if ids is not None else [str(i) for i in range(len(seqs))])
    if path.suffix == ".json":
        results = {str(n): {h: {str(c): float(v) for c, v in enumerate(z[i])} for h, z in
                            zip(heads.names, scores, strict=True)} for i, n in enumerate(names)}
        return atomic_write(path, json.dumps({**CHALLENGE, "results": results}))
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, narration_id=names, **{f"{h}_output": z.astype(np.float32)
                                         for h, z in zip(heads.names, scores, strict=True)})
    return tmp.replace(path)


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


def evaluate(model: Model, seqs: Sequences, *, batch_size: int = 256, device: str = "cpu",
             info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The test metrics training reports (accuracy, top-5, loss, inference time) and the confusion matrix
    (one label head) — with several heads, each head's and the action's (``info``: the source's subsets)."""
    if not (seqs.y != PAD_LABEL).any():
        raise EchoesError("the data has no labels to evaluate against — use echoes predict instead")
    dev = resolve_device(device)
    model.module.to(dev)
    pred = run_predictions(model.module, model.prepare(seqs), batch_size, dev, model.heads)
    metrics = test_metrics(pred, len(model.class_names), model.framewise, info)
    if not model.heads.multi:
        metrics["confusion_matrix"] = pred.confusion(len(model.class_names)).tolist()
    return metrics
