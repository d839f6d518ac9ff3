"""Defaults that need no tuning: calibrated ridge scores."""

import numpy as np
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
    import pytest

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
