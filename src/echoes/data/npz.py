"""Your own arrays: ``npz:path/to/file.npz``.

Keys ``X_train, y_train, X_test, y_test`` and optionally ``X_val, y_val``. Each
``X_*`` is a float array in one of two forms:

- padded, (N, T, F), with optional ``lengths_*`` (N,) when sequences are shorter than T;
- concatenated, (ΣT, F): every sequence's steps one after the other, with ``lengths_*``
  (N,) saying how many steps each has (they add up to ΣT).

Labels may be ints or strings. Several label heads (e.g. a verb and a noun): ``y_*`` of shape
(N, H) and ``head_names`` (H,) naming the heads. The file is read without unpickling: object arrays
(a list of (T_i, F) arrays saved as is) are refused unless ``data.allow_pickle=true``,
because unpickling a file can run any code in it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import EchoesError
from . import SourceData, register_source
from .heads import Heads
from .labels import encode_labels
from .sequences import Sequences, check_finite, pad_sequences

REQUIRED = ("X_train", "y_train", "X_test", "y_test")
INPUTS = "X"  # a file of inputs only (for `echoes predict`): X, optional lengths and y


def _key(name: str, split: str) -> str:
    """``X_train``, ``lengths_test``...; a file of inputs only has plain ``X`` and ``lengths``."""
    return f"{name}_{split}" if split else name


def _read(npz: np.lib.npyio.NpzFile, key: str, where: str) -> np.ndarray:
    try:
        return np.asarray(npz[key])
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise EchoesError(f"{where}: {key} cannot be read ({e}) — save it again with numpy.savez") from None
        split = key.split("_", 1)[1] if "_" in key else ""
        safe = (f"one (ΣT, F) float array plus {_key('lengths', split)} (see the README)"
                if key.startswith("X") else "a numeric or string array")
        raise EchoesError(f"{where}: {key} is an object array, which only unpickling can read — store it as "
                          f"{safe}, or set data.allow_pickle=true for a file you trust (unpickling can run code)"
                          ) from None
    except (OSError, zipfile.BadZipFile, EOFError):
        raise EchoesError(f"{where}: {key} is damaged — save the file again with numpy.savez") from None


def _object_arrays(X: np.ndarray, where: str) -> list[np.ndarray]:
    arrays = []
    for i, a in enumerate(X):
        a = np.asarray(a)
        if a.ndim == 1:
            a = a[:, None]
        if a.ndim != 2:
            raise EchoesError(f"{where}[{i}] must be a (T, F) array, got shape {a.shape}")
        try:
            arrays.append(a.astype(np.float32))
        except (TypeError, ValueError):
            raise EchoesError(f"{where}[{i}] is not numeric — store float arrays") from None
    if len({a.shape[1] for a in arrays}) > 1:
        raise EchoesError(f"{where}: sequences have different feature counts — every (T_i, F) needs the same F")
    return arrays


def _lengths(npz: np.lib.npyio.NpzFile, split: str, where: str, *, n: int | None = None,
             total: int | None = None) -> np.ndarray:
    """``lengths_<split>``: positive ints, N of them (padded) or adding up to ΣT (concatenated)."""
    key = _key("lengths", split)
    lengths = _read(npz, key, where)
    if lengths.ndim != 1 or (n is not None and len(lengths) != n):
        raise EchoesError(f"{where}: {key} has shape {lengths.shape}, expected ({n or 'N'},) — one length "
                          "per sequence")
    if not np.issubdtype(lengths.dtype, np.integer):
        raise EchoesError(f"{where}: {key} has dtype {lengths.dtype} — store integer step counts")
    if (lengths < 1).any():
        i = int(np.argmax(lengths < 1))
        raise EchoesError(f"{where}: {key}[{i}] is {lengths[i]} — every sequence needs at least one step; "
                          "drop the empty ones")
    if total is not None and lengths.sum() != total:
        raise EchoesError(f"{where}: {key} adds up to {lengths.sum()} steps but {_key('X', split)} has {total} rows "
                          "— the lengths of the concatenated sequences must add up to its rows")
    return lengths


def _arrays(where: str, npz: np.lib.npyio.NpzFile, split: str, allow_pickle: bool) -> list[np.ndarray]:
    key = _key("X", split)
    X = _read(npz, key, where)
    lengths_key = _key("lengths", split)
    if X.dtype == object and allow_pickle:
        arrays = _object_arrays(X, f"{where}: {key}")
    elif X.ndim not in (2, 3) or (X.ndim == 2 and lengths_key not in npz.files):
        raise EchoesError(f"{where}: {key} has shape {X.shape} — expected (N, T, F) padded, "
                          f"or (ΣT, F) concatenated with {lengths_key}")
    elif not np.issubdtype(X.dtype, np.number) or np.issubdtype(X.dtype, np.complexfloating):
        raise EchoesError(f"{where}: {key} has dtype {X.dtype} — store a float array")
    elif X.ndim == 2:  # concatenated: (ΣT, F) + lengths
        lengths = _lengths(npz, split, where, total=len(X))
        arrays = np.split(X.astype(np.float32), np.cumsum(lengths)[:-1]) if len(lengths) else []
    else:
        lengths = (_lengths(npz, split, where, n=len(X)) if lengths_key in npz.files
                   else np.full(len(X), X.shape[1]))
        if lengths.max(initial=0) > X.shape[1]:
            raise EchoesError(f"{where}: {lengths_key} must lie between 1 and T={X.shape[1]}, "
                              f"got up to {lengths.max()}")
        arrays = [X[i, : int(n)].astype(np.float32) for i, n in enumerate(lengths)]
    if not arrays:
        raise EchoesError(f"{where}: {key} holds no sequences — every split needs at least one")
    if arrays[0].shape[1] == 0:
        raise EchoesError(f"{where}: {key} has 0 features per step — store at least one")
    empty = [i for i, a in enumerate(arrays) if len(a) == 0]
    if empty:
        raise EchoesError(f"{where}: {key}: sequence {empty[0]} has no steps ({len(empty)} empty in all) "
                          f"— every sequence needs at least one step; drop the empty ones")
    for i, a in enumerate(arrays):
        check_finite(a, f"{where}: {key}[{i}]")
    return arrays


def _open(name: str, allow_pickle: bool) -> np.lib.npyio.NpzFile:
    path, where = Path(name), f"npz:{name}"
    if not path.is_file():
        raise EchoesError(f"{where}: file not found — check the path")
    if not zipfile.is_zipfile(path):
        raise EchoesError(f"{where}: not a readable .npz file — save it with numpy.savez")
    try:
        return np.load(path, allow_pickle=allow_pickle)
    except (OSError, ValueError, zipfile.BadZipFile):
        raise EchoesError(f"{where}: not a readable .npz file — save it with numpy.savez") from None


def is_inputs_file(name: str) -> bool:
    """A file of inputs only (``X``, no ``X_train``): what ``echoes predict`` reads besides sources."""
    with _open(name, allow_pickle=False) as f:
        return INPUTS in f.files and "X_train" not in f.files


def read_inputs(name: str, allow_pickle: bool = False) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The sequences of a file of inputs (``X`` in either form, ``lengths``) and its labels ``y`` if any."""
    where = f"npz:{name}"
    with _open(name, allow_pickle) as f:
        arrays = _arrays(where, f, "", allow_pickle)
        y = _read(f, "y", where) if "y" in f.files else None
    if y is not None and (y.ndim != 1 or len(y) != len(arrays)):
        raise EchoesError(f"{where}: y has {y.shape} labels for {len(arrays)} sequences — one label per sequence")
    return arrays, y


@register_source("npz")
def npz(name: str, *, seed: int = 0, allow_pickle: bool = False) -> SourceData:  # noqa: ARG001
    """Your own arrays in a .npz file: X_train, y_train, X_test, y_test (+ X_val, y_val)."""
    where = f"npz:{name}"
    with _open(name, allow_pickle) as npz_file:
        files = set(npz_file.files)
        missing = [k for k in REQUIRED if k not in files]
        if missing:
            raise EchoesError(f"{where}: missing key(s) {', '.join(missing)} — the file needs {', '.join(REQUIRED)}")
        if ("X_val" in files) != ("y_val" in files):
            given, absent = ("X_val", "y_val") if "X_val" in files else ("y_val", "X_val")
            raise EchoesError(f"{where}: {given} given without {absent} — add {absent} or drop {given}")
        splits = ["train", "test"] + (["val"] if "X_val" in files else [])
        arrays, labels = {}, {}
        for split in splits:
            arrays[split] = _arrays(where, npz_file, split, allow_pickle)
            y = _read(npz_file, f"y_{split}", where)
            if y.ndim not in (1, 2) or len(y) != len(arrays[split]):
                raise EchoesError(
                    f"{where}: y_{split} has {y.shape} labels for {len(arrays[split])} sequences in X_{split} "
                    "— give one label per sequence (or one row of labels per sequence with head_names)"
                )
            labels[split] = y
        head_names = _head_names(npz_file, labels, where)
    features = {a[0].shape[1] for a in arrays.values()}
    if len(features) > 1:
        raise EchoesError(f"{where}: splits have different feature counts {sorted(features)} — use the same F")
    heads = None
    if head_names is None:
        encoded, classes = encode_labels(*(labels[s] for s in splits))
    else:  # each head's labels encoded on their own, then every row's heads as one code
        per_head = [encode_labels(*(labels[s][:, h] for s in splits)) for h in range(len(head_names))]
        heads = Heads.of({name: names for name, (_, names) in zip(head_names, per_head, strict=True)})
        encoded = [heads.encode(np.stack([codes[i] for codes, _ in per_head], 1)) for i in range(len(splits))]
        classes = []
    t_max = max(len(a) for split in splits for a in arrays[split])
    seqs = {}
    for split, y in zip(splits, encoded, strict=True):
        x, lengths = pad_sequences(arrays[split], t_max)
        seqs[split] = Sequences(x, lengths, y)
    return SourceData(train=seqs["train"], test=seqs["test"], val=seqs.get("val"), class_names=classes, heads=heads)


def _head_names(npz: np.lib.npyio.NpzFile, labels: dict[str, np.ndarray], where: str) -> list[str] | None:
    """The names of the label heads when labels come as (N, H) rows (``head_names``), else None."""
    widths = {y.shape[1] if y.ndim == 2 else None for y in labels.values()}
    if widths == {None}:
        if "head_names" in npz.files:
            raise EchoesError(f"{where}: head_names given but the labels are one per sequence — give y_* "
                              "of shape (N, heads), or drop head_names")
        return None
    if len(widths) > 1:
        shapes = ", ".join(f"y_{k} {y.shape}" for k, y in labels.items())
        raise EchoesError(f"{where}: the splits' labels have different shapes ({shapes}) — give one label per "
                          "sequence in every split, or (N, heads) rows in every split with head_names")
    if "head_names" not in npz.files:
        raise EchoesError(f"{where}: y_* have several labels per sequence — add head_names, e.g. "
                          "head_names=np.array(['verb', 'noun'])")
    names = [str(n) for n in _read(npz, "head_names", where).ravel()]
    if len(names) != widths.pop() or len(set(names)) != len(names):
        raise EchoesError(f"{where}: head_names {names} must name each column of y_* once")
    return names
