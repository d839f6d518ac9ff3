import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    """Work in a fresh folder so results (echoes-runs/, mlflow.db) never leak between tests."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory):
    """An empty MLflow SQLite store, created once per session: creating one runs every schema
    migration, which takes seconds; copying the file takes none."""
    from echoes.tracking import ensure_store

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    ensure_store(f"sqlite:///{path}")
    return path


@pytest.fixture
def tracked_dir(run_dir, migrated_store):
    """run_dir with a fresh, ready MLflow store at echoes-runs/mlflow.db (the default location)."""
    (run_dir / "echoes-runs").mkdir()
    shutil.copyfile(migrated_store, run_dir / "echoes-runs" / "mlflow.db")
    return run_dir


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
        return np.concatenate(xs), np.array([len(x) for x in xs]), np.array(ys)

    x_tr, len_tr, y_tr = make(80)
    x_te, len_te, y_te = make(40)
    path = tmp_path / "tiny.npz"  # the concatenated form: (ΣT, F) steps + lengths, no object arrays
    np.savez(path, X_train=x_tr, lengths_train=len_tr, y_train=y_tr, X_test=x_te, lengths_test=len_te, y_test=y_te)
    return path


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory):
    """A tiny TIMIT-layout corpus spoken by Festival, made once per test session (needs `make system-deps`)."""
    from echoes.data.speech.make_speech import make_speech

    root = tmp_path_factory.mktemp("speech") / "corpus"
    make_speech(root, regions=2, train_speakers=2, test_speakers=1, dev_speakers=1, sentences=2, seed=0)
    return root
