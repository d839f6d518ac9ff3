"""ESN training speed and accuracy: echoes against ReservoirPy 0.4, side by side in one process.

    make bench-esn                                   # installs reservoirpy, runs every ESN benchmark
    .venv/bin/python benchmarks/esn_vs_reservoirpy.py [--repeats 5] [--quick]

Same data and hyperparameters for both: 500 units, spectral radius 0.9, leak rate 0.1,
connectivity 0.1, input scaling 1 (input connectivity 0.1, no bias: ReservoirPy's
defaults), readout features = last state + mean state, ridge λ = 1e-3. echoes is also
timed with its default readout fit (λ chosen by exact leave-one-out over 19 values).
"fit" is harvesting the training states plus solving the readout; drawing the
reservoir ("init") is timed apart. Each round uses a new seed; times are medians,
accuracies means over rounds. A check first drives ReservoirPy with echoes' very
weights and compares the features: the two compute the same thing.

Workloads: (i) 300 sequences × 30 steps × 12 features, (ii) 5,000 × 100 × 64 (both
synthetic: 5 classes, a smooth random template per class under Gaussian noise, σ = 3
and 12 so that accuracy is not saturated; 80/20 split), (iii) uea:BasicMotions (its
own train/test split).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import bench_utils
import numpy as np
import torch

from echoes.config import TrainConfig
from echoes.data import SOURCES, Dataset, Sequences
from echoes.data.sequences import standardize
from echoes.learners import create_learner
from echoes.metrics import predict
from echoes.models import create_model

try:
    import reservoirpy
    from reservoirpy.nodes import Reservoir, Ridge
except ImportError:
    sys.exit("reservoirpy is not installed — run `make bench-esn`, or "
             "`.venv/bin/pip install -c constraints.txt 'reservoirpy>=0.4,<0.5'`")

HYPER = dict(units=500, spectral_radius=0.9, leak_rate=0.1, connectivity=0.1)
RIDGE = 1e-3
CPU = torch.device("cpu")


def basic_motions() -> Dataset:
    raw = SOURCES.build("uea", name="BasicMotions", seed=0)
    return standardize(Dataset("uea:BasicMotions", raw.train, raw.test, raw.test, raw.class_names))


def series(seqs: Sequences) -> list[np.ndarray]:
    return [np.asarray(seqs.x[i, :n], dtype=np.float64) for i, n in enumerate(seqs.lengths)]


def rpy_features(reservoir: Reservoir, xs: list[np.ndarray]) -> np.ndarray:
    if not reservoir.initialized:
        reservoir.initialize(xs[0])
    reservoir.reset()  # run() starts every series from the node's state: zero it
    states = reservoir.run(xs)
    return np.stack([np.concatenate([s[-1], s.mean(0)]) for s in states])


def reservoirpy_run(ds: Dataset, seed: int) -> dict[str, float]:
    xs, onehot = series(ds.train), np.eye(ds.num_classes)[ds.train.y]
    t0 = time.perf_counter()
    reservoir = Reservoir(units=HYPER["units"], sr=HYPER["spectral_radius"], lr=HYPER["leak_rate"],
                          rc_connectivity=HYPER["connectivity"], input_scaling=1.0,
                          input_connectivity=0.1, seed=seed)
    reservoir.initialize(xs[0])
    t1 = time.perf_counter()
    readout = Ridge(ridge=RIDGE).fit(rpy_features(reservoir, xs), onehot)
    t2 = time.perf_counter()
    pred = readout.run(rpy_features(reservoir, series(ds.test))).argmax(1)
    return {"init": t1 - t0, "fit": t2 - t1, "accuracy": float((pred == ds.test.y).mean())}


def echoes_model(ds: Dataset, seed: int):
    return create_model("esn", input_size=ds.num_features, num_classes=ds.num_classes, seed=seed,
                        input_scaling=1.0, input_connectivity=0.1, bias_scaling=0.0,
                        pooling="last_mean", **HYPER)


def echoes_run(ds: Dataset, seed: int, alpha: float | None) -> dict[str, float]:
    t0 = time.perf_counter()
    model = echoes_model(ds, seed)
    t1 = time.perf_counter()
    learner = create_learner("ridge", **({"alpha": alpha} if alpha is not None else {}))
    fit = learner.fit(model, ds, TrainConfig(), device=CPU, seed=seed)
    t2 = time.perf_counter()
    return {"init": t1 - t0, "fit": t2 - t1, "accuracy": predict(model, ds.test, 256, CPU).accuracy,
            "alpha": fit.extra["ridge_alpha"]}


def same_weights_check(ds: Dataset) -> float:
    """Max |difference| of last+mean features when ReservoirPy runs echoes' own reservoir."""
    import scipy.sparse as sp

    model = echoes_model(ds, 0)
    layer = model.members[0][0]
    reservoir = Reservoir(W=sp.csr_matrix(layer.w.double().numpy()), Win=layer.w_in.double().numpy(),
                          bias=layer.bias.double().numpy(), lr=layer.leak_rate)
    sub = ds.train.subset(np.arange(min(20, len(ds.train))))
    theirs = rpy_features(reservoir, series(sub))
    ours = model.features(torch.from_numpy(sub.x), torch.from_numpy(sub.lengths)).double().numpy()
    return float(np.abs(theirs - ours).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="rounds per workload (medians)")
    parser.add_argument("--quick", action="store_true", help="workload (ii) at 1,000 sequences")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"machine: {bench_utils.machine()}; reservoirpy {reservoirpy.__version__}\n")
    workloads = [bench_utils.templates(300, 30, 12, noise=3.0),
                 bench_utils.templates(1000 if args.quick else 5000, 100, 64, noise=12.0, seed=1),
                 basic_motions()]
    print(f"same weights, ReservoirPy vs echoes features: max |diff| = {same_weights_check(workloads[0]):.1e}"
          " (float64 vs float32)\n")
    rows = []
    for ds in workloads:
        steps = int(ds.train.lengths.sum())
        _, out = bench_utils.interleaved({
            "ReservoirPy": lambda r, ds=ds: reservoirpy_run(ds, r),
            f"echoes (λ={RIDGE:g})": lambda r, ds=ds: echoes_run(ds, r, RIDGE),
            "echoes (λ by LOO)": lambda r, ds=ds: echoes_run(ds, r, None),
        }, args.repeats)
        base = np.median([o["fit"] for o in out["ReservoirPy"]])
        for name, runs in out.items():
            fit = float(np.median([o["fit"] for o in runs]))
            init = float(np.median([o["init"] for o in runs]))
            acc = [o["accuracy"] for o in runs]
            rows.append([ds.name, name, f"{init:.2f}", f"{fit:.3f}", f"{steps / fit:,.0f}",
                         f"{np.mean(acc):.3f} ± {np.std(acc):.3f}", f"{base / fit:.1f}×"])
        print(f"{ds.name}: {len(ds.train)} train / {len(ds.test)} test sequences done ({bench_utils.load()})",
              flush=True)
    print()
    print(bench_utils.markdown_table(["workload", "library", "init s", "fit s", "states/s", "test accuracy",
                          "fit speed-up vs ReservoirPy"], rows))
    print(f"\n{args.repeats} rounds each; finished with {bench_utils.load()}")


if __name__ == "__main__":
    main()
