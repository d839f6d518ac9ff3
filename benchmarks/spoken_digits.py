"""Default ESN against default LSTM on a spoken-digit-style workload (CPU): train seconds and accuracy.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/spoken_digits.py [--seeds 0 1 2] [--features 13]

The workload (synthetic, like the Free Spoken Digit Dataset's MFCCs): 2,000 utterances of
10 digits by 20 speakers, each 20–90 frames of ``--features`` MFCC-like coefficients. A digit is
a smooth path through 3–6 random "phone" targets; an utterance warps it in time (speaking
rate, nonlinear), shifts it by its speaker's offset and adds frame noise; zero-padded to 90
frames, standardised. 80/10/10 train/validation/test. Both models as ``echoes train`` runs
them with their defaults (tracking off): the ESN by ridge (λ by leave-one-out), the LSTM by
the gradient learner's defaults (early stopping on validation). Seeds outermost so models take
turns under the shared load. Target (issue 17): the ESN trains ≥ 30× faster than the LSTM
with test accuracy within 2 points.
"""

from __future__ import annotations

import argparse
import warnings

import bench_utils
import numpy as np

from echoes.api import train
from echoes.config import load_config
from echoes.data import Dataset, Sequences
from echoes.data.sequences import standardize

DIGITS, SPEAKERS, MIN_FRAMES, MAX_FRAMES = 10, 20, 20, 90


def spoken_digits(n: int = 2000, features: int = 13, noise: float = 3.0, seed: int = 0) -> Dataset:
    """The synthetic MFCC-like digits described in the module docstring."""
    rng = np.random.default_rng(seed)
    phones = [rng.standard_normal((rng.integers(3, 7), features)) for _ in range(DIGITS)]
    speakers = 0.7 * rng.standard_normal((SPEAKERS, features))
    y, who = rng.integers(0, DIGITS, n), rng.integers(0, SPEAKERS, n)
    lengths = rng.integers(MIN_FRAMES, MAX_FRAMES + 1, n)
    x = np.zeros((n, MAX_FRAMES, features), np.float32)
    for i in range(n):
        path = phones[y[i]]
        knots = np.linspace(0, 1, len(path))
        warp = np.linspace(0, 1, lengths[i]) ** rng.uniform(0.7, 1.4)  # speaking rate, unevenly
        frames = np.stack([np.interp(warp, knots, path[:, k]) for k in range(features)], 1)
        x[i, : lengths[i]] = frames + speakers[who[i]] + noise * rng.standard_normal(frames.shape)
    seqs = Sequences(x, lengths, y)
    a, b = int(0.8 * n), int(0.9 * n)
    return standardize(Dataset(f"spoken digits {n}×{MIN_FRAMES}–{MAX_FRAMES}×{features}",
                               seqs.subset(np.arange(a)), seqs.subset(np.arange(a, b)),
                               seqs.subset(np.arange(b, n)), [str(d) for d in range(DIGITS)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--features", type=int, default=13)
    p.add_argument("--models", nargs="+", default=["esn", "lstm"])
    args = p.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"machine: {bench_utils.machine()}\n")
    data = spoken_digits(features=args.features)
    runs: dict[str, list[dict]] = {m: [] for m in args.models}
    for seed in args.seeds:
        for name in args.models:
            cfg = load_config(None, [f"model={name}", "tracking=false", "train.device=cpu", f"seed={seed}"])
            result = train(cfg, dataset=data)
            runs[name].append({**result.history[-1], **result.row()})  # ridge's harvest/solve seconds: history
    seconds = {k: float(np.median([r["train_seconds"] for r in v])) for k, v in runs.items()}
    rows = []
    for name, rs in runs.items():
        acc = [r["test_accuracy"] for r in rs]
        parts = ""
        if rs[0].get("harvest_seconds") is not None:
            parts = " + ".join(f"{np.median([r[k] for r in rs]):.3f}"
                               for k in ("build_seconds", "harvest_seconds", "solve_seconds"))
        rows.append([name, rs[0]["learner"], f"{seconds[name]:.3f}", parts,
                     f"{np.mean(acc):.3f} ± {np.std(acc):.3f}", f"{np.mean([r['epochs'] for r in rs]):.0f}",
                     f"{seconds.get('lstm', np.nan) / seconds[name]:.1f}×"])
    print(data.name)
    print(bench_utils.markdown_table(["model", "learner", "train s (median)", "build + harvest + solve s",
                                      "test accuracy", "epochs", "speed-up vs LSTM"], rows))
    print(f"\nseeds {args.seeds}; finished with {bench_utils.load()}")


if __name__ == "__main__":
    main()
