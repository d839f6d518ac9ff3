import os

import numpy as np
import pytest

os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """Work in a fresh folder so results (echoes-runs/, mlflow.db) never leak between tests."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture
def tiny_npz(tmp_path):
    """A small variable-length task: class = sign of the first step's first feature, remembered to the end."""
    rng = np.random.default_rng(0)

    def make(n):
        xs, ys = [], []
        for _ in range(n):
            t = int(rng.integers(6, 12))
            label = int(rng.integers(0, 2))
            x = 0.3 * rng.standard_normal((t, 3)).astype(np.float32)
            x[0, 0] = 2.0 if label else -2.0
            xs.append(x)
            ys.append(label)
        arr = np.empty(n, dtype=object)
        arr[:] = xs
        return arr, np.array(ys)

    x_tr, y_tr = make(80)
    x_te, y_te = make(40)
    path = tmp_path / "tiny.npz"
    np.savez(path, X_train=x_tr, y_train=y_tr, X_test=x_te, y_test=y_te)
    return path
