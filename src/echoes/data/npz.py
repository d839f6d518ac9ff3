"""Your own arrays: ``npz:path/to/file.npz``.

Keys ``X_train, y_train, X_test, y_test`` and optionally ``X_val, y_val``. Each
``X_*`` is a float array (N, T, F) — with optional ``lengths_*`` (N,) for padded
data — or an object array of N float arrays (T_i, F). Labels may be ints or
strings.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from ..errors import EchoesError
from . import SourceData, register_source
from .labels import encode_labels
from .sequences import Sequences, check_finite, pad_sequences


def _arrays(path: str, npz: np.lib.npyio.NpzFile, split: str) -> list[np.ndarray]:
    key = f"X_{split}"
    X = npz[key]
    where = f"npz:{path}: {key}"
    if X.dtype == object:
        arrays = []
        for i, a in enumerate(X):
            a = np.asarray(a)
            if a.ndim == 1:
                a = a[:, None]
            if a.ndim != 2 or a.shape[0] == 0:
                raise EchoesError(f"{where}[{i}] must be a non-empty (T, F) array, got shape {a.shape}")
            try:
                arrays.append(a.astype(np.float32))
            except (TypeError, ValueError):
                raise EchoesError(f"{where}[{i}] is not numeric — store float arrays") from None
        if len({a.shape[1] for a in arrays}) > 1:
            raise EchoesError(f"{where}: sequences have different feature counts — every (T_i, F) needs the same F")
        for i, a in enumerate(arrays):
            check_finite(a, f"{where}[{i}]")
        return arrays
    if X.ndim != 3:
        raise EchoesError(
            f"{where} has shape {X.shape} — expected (N, T, F), or an object array of (T_i, F) arrays"
        )
    if not np.issubdtype(X.dtype, np.number):
        raise EchoesError(f"{where} has dtype {X.dtype} — store a float array")
    lengths_key = f"lengths_{split}"
    if lengths_key in npz.files:
        lengths = np.asarray(npz[lengths_key])
        if lengths.shape != (X.shape[0],):
            raise EchoesError(f"npz:{path}: {lengths_key} has shape {lengths.shape}, expected ({X.shape[0]},)")
        if lengths.min(initial=1) < 1 or lengths.max(initial=0) > X.shape[1]:
            raise EchoesError(
                f"npz:{path}: {lengths_key} must lie between 1 and T={X.shape[1]}, "
                f"got {lengths.min()}..{lengths.max()}"
            )
    else:
        lengths = np.full(X.shape[0], X.shape[1])
    arrays = [X[i, : int(n)].astype(np.float32) for i, n in enumerate(lengths)]
    for i, a in enumerate(arrays):
        check_finite(a, f"{where}[{i}]")
    return arrays


@register_source("npz")
def npz(name: str, *, seed: int = 0) -> SourceData:  # noqa: ARG001
    """Your own arrays in a .npz file: X_train, y_train, X_test, y_test (+ X_val, y_val)."""
    path = Path(name)
    if not path.is_file():
        raise EchoesError(f"npz:{name}: file not found — check the path")
    if not zipfile.is_zipfile(path):
        raise EchoesError(f"npz:{name}: not a readable .npz file — save it with numpy.savez")
    try:
        npz_file = np.load(path, allow_pickle=True)
    except (OSError, ValueError, zipfile.BadZipFile):
        raise EchoesError(f"npz:{name}: not a readable .npz file — save it with numpy.savez") from None
    with npz_file:
        files = set(npz_file.files)
        required = ["X_train", "y_train", "X_test", "y_test"]
        missing = [k for k in required if k not in files]
        if missing:
            raise EchoesError(f"npz:{name}: missing key(s) {', '.join(missing)} — the file needs {', '.join(required)}")
        splits = ["train", "test"] + (["val"] if "X_val" in files else [])
        if "X_val" in files and "y_val" not in files:
            raise EchoesError(f"npz:{name}: X_val given without y_val — add y_val or drop X_val")
        arrays, labels = {}, {}
        for split in splits:
            arrays[split] = _arrays(name, npz_file, split)
            y = np.asarray(npz_file[f"y_{split}"])
            if y.ndim != 1 or len(y) != len(arrays[split]):
                raise EchoesError(
                    f"npz:{name}: y_{split} has {y.shape} labels for {len(arrays[split])} sequences in X_{split} "
                    "— give one label per sequence"
                )
            labels[split] = y
    features = {a[0].shape[1] for a in arrays.values()}
    if len(features) > 1:
        raise EchoesError(f"npz:{name}: splits have different feature counts {sorted(features)}")
    encoded, classes = encode_labels(*(labels[s] for s in splits))
    t_max = max(len(a) for split in splits for a in arrays[split])
    seqs = {}
    for split, y in zip(splits, encoded, strict=True):
        x, lengths = pad_sequences(arrays[split], t_max)
        seqs[split] = Sequences(x, lengths, y)
    return SourceData(train=seqs["train"], test=seqs["test"], val=seqs.get("val"), class_names=classes)
