"""UEA/UCR archive datasets through aeon (``uea:BasicMotions``, ``uea:JapaneseVowels``...)."""

from __future__ import annotations

import numpy as np

from ..errors import EchoesError
from ..utils import MissingExtra, require
from . import SourceData, register_source
from .labels import encode_labels
from .sequences import Sequences, pad_sequences


def bundled() -> list[str]:
    """Classification datasets that ship inside aeon's wheel (work offline)."""
    import os

    try:
        require("aeon", "uea")
    except MissingExtra:  # `echoes datasets` on a core install lists no names
        return []
    from aeon.datasets import _data_loaders
    from aeon.datasets.dataset_collections import get_downloaded_tsc_tsr_datasets
    from aeon.datasets.tsc_datasets import multivariate, univariate

    root = os.path.join(os.path.dirname(_data_loaders.__file__), "data")
    known = set(univariate) | set(multivariate)
    return sorted(n for n in get_downloaded_tsc_tsr_datasets(root) if n in known)


@register_source("uea", examples=bundled)
def uea(name: str, *, seed: int = 0, extract_path: str | None = None) -> SourceData:  # noqa: ARG001
    """UEA/UCR time-series classification archive via aeon (bundled sets work offline).

    ``extract_path``: folder to download other archive sets into (null: aeon's default).
    """
    require("aeon", "uea")
    from aeon.datasets import load_classification

    splits = {}
    for split in ("train", "test"):
        try:
            X, y = load_classification(name, split=split, extract_path=extract_path)
        except Exception as e:  # aeon raises ValueError/URLError/OSError for missing sets
            offline = "download" in str(e).lower() or "url" in type(e).__name__.lower()
            hint = (
                f"it is not bundled with aeon and could not be downloaded ({type(e).__name__}); "
                f"bundled: {', '.join(bundled())}"
                if offline or "not in the list" in str(e)
                else f"{type(e).__name__}: {str(e).splitlines()[0]}"
            )
            raise EchoesError(f"uea:{name}: {hint}") from None
        # aeon gives (N, channels, T) or a list of (channels, T_i) for unequal lengths
        arrays = [np.asarray(s, dtype=np.float32).T for s in X]
        splits[split] = (arrays, np.asarray(y))
    (y_train, y_test), classes = encode_labels(splits["train"][1], splits["test"][1])
    t_max = max(len(a) for arrays, _ in splits.values() for a in arrays)
    x_train, l_train = pad_sequences(splits["train"][0], t_max)
    x_test, l_test = pad_sequences(splits["test"][0], t_max)
    return SourceData(
        train=Sequences(x_train, l_train, y_train),
        test=Sequences(x_test, l_test, y_test),
        class_names=classes,
    )
