"""Label encoding shared by file-based sources: ints or strings → 0..C-1."""

from __future__ import annotations

import numpy as np


def encode_labels(*splits: np.ndarray) -> tuple[list[np.ndarray], list[str]]:
    """Encode labels of several splits with one class list (sorted; numeric order for numbers)."""
    values = np.concatenate([np.asarray(s).ravel() for s in splits])
    classes = np.unique(values)
    try:
        classes = np.array(sorted(classes, key=lambda v: float(v)))
    except (TypeError, ValueError):
        pass
    lookup = {v: i for i, v in enumerate(classes.tolist())}
    encoded = [np.array([lookup[v] for v in np.asarray(s).tolist()], dtype=np.int64) for s in splits]
    return encoded, [str(c) for c in classes.tolist()]
