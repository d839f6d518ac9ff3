"""Defaults that need no tuning: calibrated ridge scores, a training budget that fits the data."""

import numpy as np
import pytest
import torch
from test_ridge import FirstStep, dataset, fit, problem

from echoes.learners.ridge import fit_temperature


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Σ over confidence bins of |accuracy - confidence|, weighted by the bin's share of rows."""
    conf, pred = probs.max(1), probs.argmax(1)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs((pred[which == b] == y[which == b]).mean() - conf[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def test_fit_temperature_recovers_the_true_temperature():
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.standard_normal((20000, 4)))
    probs = torch.softmax(z / 0.3, 1).numpy()
    y = torch.from_numpy((rng.random((len(z), 1)) > probs.cumsum(1)).sum(1))
    assert abs(fit_temperature(z, y) - 0.3) < 0.02


def test_ridge_scores_are_calibrated():
    """On held-out rows the calibrated readout has a lower ECE and a sensible test loss (< log C)."""
    c = 4
    x, y = problem(300, 10, c, seed=1, noise=1.5)
    xv, yv = problem(200, 10, c, seed=2, noise=1.5)
    xt, yt = problem(2000, 10, c, seed=3, noise=1.5)
    scores = {}
    for calibrate in (False, True):
        for select in ("loo", "val"):
            model = FirstStep(10, c)
            result = fit(model, dataset(x, y, (xv, yv)), select=select, calibrate=calibrate)
            with torch.no_grad():
                logits = model(torch.from_numpy(xt[:, None, :]).float(), torch.ones(len(xt), dtype=torch.long))
            probs = torch.softmax(logits.double(), 1).numpy()
            loss = float(torch.nn.functional.cross_entropy(logits.double(), torch.from_numpy(yt)))
            scores[calibrate, select] = expected_calibration_error(probs, yt), loss, (probs.argmax(1) == yt).mean()
            assert ("ridge_temperature" in result.extra) == calibrate
    for select in ("loo", "val"):
        (ece0, loss0, acc0), (ece1, loss1, acc1) = scores[False, select], scores[True, select]
        assert acc0 == acc1  # dividing by T keeps every prediction
        assert ece1 < ece0 / 2 and ece1 < 0.05
        assert loss1 < loss0 and loss1 < np.log(c)


def test_no_validation_split_for_leave_one_out(tmp_path):
    """data.val_fraction=0: ridge trains on every training series, val metrics are None; an iterative
    learner is refused before anything runs."""
    from echoes import train
    from echoes.config import ExperimentConfig
    from echoes.errors import EchoesError
    from echoes.run import check_experiment, load_data

    base = dict(model="esn", data="synthetic:motion", tracking=False, **{"model.units": 40, "data.n_train": 60,
                                                                          "data.n_test": 30})
    cfg = ExperimentConfig(**{"model": {"name": "esn", "units": 40},
                              "data": {"source": "synthetic:motion", "val_fraction": 0, "n_train": 60, "n_test": 30}})
    ds = load_data(cfg)
    assert len(ds.train) == 60 and len(ds.val) == 0
    result = train(None, **base, **{"data.val_fraction": 0, "tracking.results_dir": str(tmp_path)})
    assert result["val_accuracy"] is None and result["overfit_gap"] is None
    assert result["train_accuracy"] > 0.5 and result["ridge_select"] == "loo"
    assert result.metrics["ridge_temperature"] > 0
    for learner in ("gradient", "eprop"):
        bad = cfg.model_copy(update={"learner": cfg.learner.model_copy(update={"name": learner})})
        with pytest.raises(EchoesError, match="val_fraction > 0"):
            check_experiment(bad)
    with pytest.raises(EchoesError, match="val_fraction > 0"):
        check_experiment(ExperimentConfig(**{"data": {"val_fraction": 0},
                                             "learner": {"name": "ridge", "select": "val"}}))


def test_ridge_run_builds_no_optimizer():
    """The memory meter's warm-up of a one-pass learner builds no optimizer (which imports torch._dynamo);
    an iterative learner's does. Fresh interpreters: the warm-up happens once per process."""
    import subprocess
    import sys

    code = ("import sys\nfrom echoes import train\n"
            "train(None, model='esn', learner='{}', tracking=False, **{{'model.units': 20, 'data.n_train': 30, "
            "'data.n_test': 10, 'train.epochs': 1}})\nprint('torch._dynamo' in sys.modules)")
    for learner, imported in (("ridge", "False"), ("gradient", "True")):
        out = subprocess.run([sys.executable, "-c", code.format(learner)], capture_output=True, text=True, check=True)
        assert out.stdout.strip().splitlines()[-1] == imported


def test_auto_training_budget_adapts_to_the_data_size():
    """Small sets get min_steps optimizer steps (epochs raised, capped), large ones 30 epochs; the batch is
    about an eighth of the set within [8, 64]; early stopping waits for enough validation series."""
    from echoes.config import AUTO_MAX_EPOCHS, AUTO_MIN_VAL, TrainConfig

    auto = TrainConfig()
    small = auto.resolved(n_train=32, n_val=8)
    assert small.batch_size == 8 and small.epochs == 250  # 4 steps an epoch → 1000 steps
    assert small.patience is None and small.warmup_steps == 50  # 5% of the steps
    assert small.checkpoint_every == 12  # about 20 checkpoints a run
    mid = auto.resolved(n_train=320, n_val=AUTO_MIN_VAL)
    assert mid.batch_size == 40 and mid.epochs == 125 and mid.patience == 31
    large = auto.resolved(n_train=20000, n_val=2500)
    assert large.batch_size == 64 and large.epochs == 30 and large.patience == 10 and large.checkpoint_every == 1
    assert auto.resolved(n_train=3, n_val=1).epochs == AUTO_MAX_EPOCHS
    two = auto.resolved(n_train=320, n_val=8, world_size=2)  # per rank: 160 series, batch 20, 8 steps
    assert two.batch_size == 20 and two.epochs == 125
    fewer = TrainConfig(min_steps=100).resolved(n_train=32, n_val=8)
    assert fewer.epochs == 30  # never fewer than 30 epochs
    given = TrainConfig(epochs=3, batch_size=5, patience=2, warmup_steps=0, checkpoint_every=2, lr=0.02)
    assert given.resolved(n_train=32, n_val=8, model_lr=1e-3) == given
    assert auto.resolved(n_train=32, n_val=8, model_lr=1e-3).lr == 1e-3


def test_lr_auto_is_the_models_own():
    """train.lr=auto: the LSTM trains at 1e-3 (better on GunPoint, ArrowHead, recall: BENCHMARKS.md), other
    models at 3e-3; a given lr wins. The lr used is reported."""
    from echoes import train

    options = {"model.hidden_size": 8, "data.n_train": 40, "data.n_test": 10, "data.min_length": 8,
               "data.max_length": 12, "train.epochs": 2}
    lstm = train(None, model="lstm", data="synthetic:recall", tracking=False, **options)
    gru = train(None, model="gru", data="synthetic:recall", tracking=False, **options)
    given = train(None, model="lstm", data="synthetic:recall", tracking=False, **options, **{"train.lr": 0.02})
    assert (lstm["learning_rate"], gru["learning_rate"], given["learning_rate"]) == (1e-3, 3e-3, 0.02)
    assert lstm.history[-1]["lr"] == pytest.approx(1e-3)  # after the warm-up


def test_lr_warms_up_linearly_then_stays_or_decays_to_zero():
    import math

    from echoes.config import TrainConfig
    from echoes.learners.gradient import lr_schedule

    def lrs(**kw):
        train = TrainConfig(epochs=10, lr=1.0, **kw)
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=train.lr)
        sched, out = lr_schedule(opt, train, steps=4), []
        for _ in range(40):
            out.append(opt.param_groups[0]["lr"])  # the lr this step uses
            opt.step()
            sched.step()
        return np.array(out)

    const = lrs(warmup_steps=8)
    assert np.allclose(const[:8], np.arange(1, 9) / 8) and np.allclose(const[8:], 1.0)
    cos = lrs(warmup_steps=4, schedule="cosine")
    assert np.allclose(cos[:3], np.arange(1, 4) / 4 * [0.5 * (1 + math.cos(math.pi * s / 40)) for s in range(3)])
    assert np.all(np.diff(cos[4:]) < 0) and cos[-1] < 0.01  # one decay to (nearly) zero at the end
    restarts = lrs(warmup_steps=0, schedule="cosine", restart_epochs=2)  # 8 steps a period
    assert restarts[0] == 1.0 and restarts[8] == 1.0 and restarts[4] == pytest.approx(0.5)


def test_default_training_runs_the_planned_budget(tmp_path):
    """Default settings on a tiny set: the planned epochs (min_steps / steps per epoch) all run (too few
    validation series to stop early), the lr warms up, and the plan is reported."""
    from echoes import train

    r = train(None, model="gru", data="synthetic:recall", tracking=False,
              **{"model.hidden_size": 8, "data.n_train": 40, "data.n_test": 10, "data.min_length": 8,
                 "data.max_length": 12, "train.min_steps": 80, "tracking.results_dir": str(tmp_path)})
    # 32 training series → batch 8, 4 steps an epoch: 20 epochs make 80 steps, but never fewer than 30
    assert r["planned_epochs"] == 30 and r["epochs"] == 30 and r["batch_size"] == 8 and r["patience"] == 0
    lrs = [h["lr"] for h in r.history]
    assert lrs[0] < lrs[1] == lrs[-1] == pytest.approx(3e-3)  # warm-up: 5% of 120 steps = 6 steps
