"""The ridge learner against textbook solutions: lstsq, brute-force leave-one-out, validation."""

import numpy as np
import pytest
import torch
from torch import nn

from echoes.config import TrainConfig
from echoes.data import Dataset, Sequences
from echoes.errors import EchoesError
from echoes.learners import create_learner
from echoes.learners.ridge import _Block
from echoes.models.base import AveragedReadout, SequenceModel

CPU = torch.device("cpu")


class FirstStep(SequenceModel):
    """Features = the inputs at the first step (or at every step when framewise)."""

    def __init__(self, f: int, c: int, framewise: bool = False, blocks: list[int] | None = None,
                 readout: nn.Module | None = None) -> None:
        super().__init__(f, c, framewise)
        self.readout = readout or (AveragedReadout(blocks, c) if blocks else nn.Linear(f, c))

    def features(self, x, lengths):
        return x if self.framewise else x[:, 0, :]


def problem(n: int, f: int, c: int, seed: int = 0, noise: float = 1.0):
    """Noisy linear classes: features and labels, as (x [n, f], y [n])."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, f))
    y = (x[:, :c] * 2 + noise * rng.standard_normal((n, c))).argmax(1)
    return x, y


def dataset(x: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray] | None = None) -> Dataset:
    def seqs(x, y):
        return Sequences(x[:, None, :].astype(np.float32), np.ones(len(x), np.int64), y)

    train = seqs(x, y)
    valid = seqs(*val) if val else train
    return Dataset("test", train, valid, valid, [str(i) for i in range(int(y.max()) + 1)])


def ridge_lstsq(x: np.ndarray, y1h: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """min |Y - b - XW|² + α|W|² as one least-squares problem (the bias is not penalised)."""
    n, f = x.shape
    a = np.block([[x, np.ones((n, 1))], [np.sqrt(alpha) * np.eye(f), np.zeros((f, 1))]])
    b = np.vstack([y1h, np.zeros((f, y1h.shape[1]))])
    sol = np.linalg.lstsq(a, b, rcond=None)[0]
    return sol[:f], sol[f]


def fit(model, ds, **options):
    return create_learner("ridge", **options).fit(model, ds, TrainConfig(), device=CPU, seed=0)


def readout_weights(linear: nn.Linear) -> tuple[np.ndarray, np.ndarray]:
    return linear.weight.detach().double().numpy().T, linear.bias.detach().double().numpy()


@pytest.mark.parametrize("n,f,alpha,cache_mb", [(60, 5, 0.7, 1024), (60, 5, 0.0, 1024),
                                                (10, 30, 0.5, 1024), (10, 30, 0.5, 0)])
def test_fixed_alpha_equals_lstsq(n, f, alpha, cache_mb):
    """Primal (n > D), unregularised, dual (n < D, rows in memory) and streamed primal
    (n < D, rows not kept) solutions all equal numpy's lstsq."""
    x, y = problem(n, f, 3)
    model = FirstStep(f, 3)
    result = fit(model, dataset(x, y), alpha=alpha, cache_mb=cache_mb, batch_size=4)
    w_ref, b_ref = ridge_lstsq(x, np.eye(3)[y], alpha)
    w, b = readout_weights(model.readout)
    np.testing.assert_allclose(w, w_ref, atol=2e-5)
    np.testing.assert_allclose(b, b_ref, atol=2e-5)
    assert result.extra["ridge_alpha"] == alpha
    assert result.extra["ridge_dual"] == (n < f and cache_mb > 0)


def brute_force_loo(x, y1h, alpha):
    """Leave each row out, refit (with its own centring), predict it."""
    preds = np.empty_like(y1h)
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        w, b = ridge_lstsq(x[keep], y1h[keep], alpha)
        preds[i] = x[i] @ w + b
    return preds


@pytest.mark.parametrize("n,f", [(40, 6), (12, 25)])
def test_leave_one_out_equals_brute_force(n, f):
    """One eigendecomposition gives every row's leave-one-out prediction for every λ, exactly."""
    x, y = problem(n, f, 3, seed=1, noise=2.0)
    y1h = np.eye(3)[y]
    alphas = [1e-3, 0.1, 1.0, 10.0, 100.0, 1e3]
    tx, ty = torch.from_numpy(x), torch.from_numpy(y1h)
    block = _Block(0, f, nn.Linear(f, 3), CPU)
    dual = n < f
    if dual:
        block.use_rows(tx, ty)
    else:
        block.add(tx[: n // 2], ty[: n // 2])  # streamed in two batches
        block.add(tx[n // 2:], ty[n // 2:])
        block.centre()
    block.decompose()
    loo = block.loo(tx, ty, torch.arange(n), torch.tensor(alphas, dtype=torch.float64)).numpy()
    scores = []
    for g, alpha in enumerate(alphas):
        ref = brute_force_loo(x, y1h, alpha)
        np.testing.assert_allclose(loo[g], ref, atol=1e-8)
        scores.append(((ref.argmax(1) == y).sum(), -((ref - y1h) ** 2).sum()))
    assert len(set(s[0] for s in scores)) > 1  # the grid matters on this problem
    best = alphas[max(range(len(alphas)), key=lambda g: scores[g])]
    result = fit(FirstStep(f, 3), dataset(x, y), alphas=alphas, select="loo")
    assert result.extra["ridge_alpha"] == best
    assert result.extra["ridge_dual"] == dual


def test_validation_selection_picks_best_val_alpha():
    x, y = problem(50, 8, 3, seed=2, noise=2.0)
    xv, yv = problem(40, 8, 3, seed=3, noise=2.0)
    alphas = [1e-2, 1.0, 30.0, 300.0, 3e3]
    scores = []
    for alpha in alphas:
        w, b = ridge_lstsq(x, np.eye(3)[y], alpha)
        p = xv @ w + b
        scores.append(((p.argmax(1) == yv).sum(), -((p - np.eye(3)[yv]) ** 2).sum()))
    model = FirstStep(8, 3)
    result = fit(model, dataset(x, y, (xv, yv)), alphas=alphas, select="val")
    assert result.extra["ridge_alpha"] == alphas[max(range(len(alphas)), key=lambda g: scores[g])]
    assert result.history[0]["val_accuracy"] == max(s[0] for s in scores) / len(yv)
    w_ref, _ = ridge_lstsq(x, np.eye(3)[y], result.extra["ridge_alpha"])
    # the fitted temperature divides the readout
    np.testing.assert_allclose(readout_weights(model.readout)[0] * result.extra["ridge_temperature"], w_ref,
                               atol=2e-5)


def test_framewise_counts_only_valid_frames():
    rng = np.random.default_rng(4)
    n, t, f = 12, 9, 4
    lengths = rng.integers(3, t + 1, n)
    x = rng.standard_normal((n, t, f)).astype(np.float32)  # nonzero padding: must be ignored
    y = rng.integers(0, 3, (n, t))
    valid = np.arange(t)[None, :] < lengths[:, None]
    y[~valid] = -1
    seqs = Sequences(x, lengths, y)
    ds = Dataset("frames", seqs, seqs, seqs, ["a", "b", "c"])
    model = FirstStep(f, 3, framewise=True)
    fit(model, ds, alpha=0.3, batch_size=5)  # several batches, each cut to its longest
    w_ref, b_ref = ridge_lstsq(x[valid].astype(np.float64), np.eye(3)[y[valid]], 0.3)
    w, b = readout_weights(model.readout)
    np.testing.assert_allclose(w, w_ref, atol=2e-5)
    np.testing.assert_allclose(b, b_ref, atol=2e-5)


def test_ensemble_members_fitted_on_their_own_blocks():
    x, y = problem(50, 7, 3, seed=5)
    model = FirstStep(7, 3, blocks=[3, 4])
    fit(model, dataset(x, y), alpha=0.2)
    for member, cols in zip(model.readout.members, (slice(0, 3), slice(3, 7)), strict=True):
        w_ref, b_ref = ridge_lstsq(x[:, cols], np.eye(3)[y], 0.2)
        w, b = readout_weights(member)
        np.testing.assert_allclose(w, w_ref, atol=2e-5)
        np.testing.assert_allclose(b, b_ref, atol=2e-5)


def test_selection_without_cache_recomputes_features():
    x, y = problem(40, 6, 3, seed=6, noise=2.0)
    alphas = [1e-2, 1.0, 100.0]
    cached = fit(FirstStep(6, 3), dataset(x, y), alphas=alphas, select="loo")
    streamed = fit(FirstStep(6, 3), dataset(x, y), alphas=alphas, select="loo", cache_mb=0,
                   batch_size=7)
    assert cached.extra["ridge_alpha"] == streamed.extra["ridge_alpha"]
    assert cached.history[0]["loo_accuracy"] == streamed.history[0]["loo_accuracy"]


def test_bad_input_is_one_line_error():
    x, y = problem(20, 4, 2)
    with pytest.raises(EchoesError, match="linear readout"):
        fit(FirstStep(4, 2, readout=nn.Sequential(nn.Linear(4, 2))), dataset(x, y))
    with pytest.raises(EchoesError, match="ridge selection"):
        create_learner("ridge", select="kfold")
    with pytest.raises(EchoesError, match="alpha"):
        create_learner("ridge", alpha=-1)


@pytest.mark.parametrize("framewise", [False, True])
def test_batches_from_host_slices_equal_the_splits_batches(framewise):
    from echoes.learners.ridge import host_slices

    rng = np.random.default_rng(0)
    lengths = np.array([5, 3, 7, 2, 6])
    x = rng.standard_normal((5, 7, 2)).astype(np.float32) * (np.arange(7)[None, :, None] < lengths[:, None, None])
    y = np.where(np.arange(7)[None, :] < lengths[:, None], 1, -1) if framewise else np.arange(5)
    seqs = Sequences(x, lengths, y)
    for got, want in zip(host_slices(seqs, 2, torch.device("cpu")), seqs.batches(2), strict=True):
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a, b)
