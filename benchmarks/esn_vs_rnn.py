"""ESN and DeepESN against LSTM and GRU: training time and accuracy, same data, splits and seeds.

    .venv/bin/python benchmarks/esn_vs_rnn.py [--seeds 0 1 2] [--quick]

Every model goes through ``echoes.api.train`` exactly as ``echoes train`` runs it
(tracking off): reservoirs with their defaults and the ridge learner (λ by
leave-one-out), LSTM/GRU (128 units) by AdamW for up to 60 epochs with early
stopping (patience 10, best validation epoch kept). Train seconds are medians over
seeds, accuracies means ± std. Target (issue 3): the ESN trains ≥ 30× faster than
the LSTM, with test accuracy within 2 points of the best RNN, or better.
"""

from __future__ import annotations

import argparse
import warnings

import bench_utils
import numpy as np

from echoes.api import load_data, train
from echoes.config import load_config

DATASETS = ["uea:BasicMotions", "uea:JapaneseVowels", "synthetic:motion"]
MODELS = {
    "esn": [],
    "deep_esn": [],
    "lstm": ["model.hidden_size=128"],
    "gru": ["model.hidden_size=128"],
}
RNN_TRAIN = ["train.epochs=60", "train.patience=10", "train.lr=0.005", "train.batch_size=32"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="20 epochs at most for the RNNs")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"machine: {bench_utils.machine()}\n")
    rnn_train = RNN_TRAIN + (["train.epochs=20"] if args.quick else [])
    rows, summary = [], []
    for source in DATASETS:
        ds = None
        results: dict[str, list[dict]] = {}
        for seed in args.seeds:  # seeds outermost: models take turns, so load hits all alike
            for name, options in MODELS.items():
                extra = options + (rnn_train if name in ("lstm", "gru") else [])
                cfg = load_config(None, [f"model={name}", f"data={source}", "tracking=false",
                                         "train.device=cpu", f"seed={seed}", *extra])
                ds = ds or load_data(cfg.data)
                results.setdefault(name, []).append(train(cfg, dataset=ds))
        seconds = {k: float(np.median([r["train_seconds"] for r in v])) for k, v in results.items()}
        accuracy = {k: [r["test_accuracy"] for r in v] for k, v in results.items()}
        for name, runs in results.items():
            rows.append([source, name, runs[0]["learner"], f"{seconds[name]:.2f}",
                         f"{np.mean(accuracy[name]):.3f} ± {np.std(accuracy[name]):.3f}",
                         f"{np.mean([r['epochs'] for r in runs]):.0f}",
                         f"{seconds['lstm'] / seconds[name]:.1f}×"])
        best_rnn = max(np.mean(accuracy["lstm"]), np.mean(accuracy["gru"]))
        summary.append([source, f"{seconds['lstm'] / seconds['esn']:.0f}×",
                        f"{100 * (np.mean(accuracy['esn']) - best_rnn):+.1f}",
                        f"{100 * (np.mean(accuracy['deep_esn']) - best_rnn):+.1f}"])
        print(f"{source} done ({bench_utils.load()})", flush=True)
    print()
    print(bench_utils.markdown_table(["dataset", "model", "learner", "train s", "test accuracy", "epochs",
                          "train speed-up vs LSTM"], rows))
    print()
    print(bench_utils.markdown_table(["dataset", "ESN speed-up vs LSTM", "ESN − best RNN (points)",
                          "DeepESN − best RNN (points)"], summary))
    print(f"\nseeds {args.seeds}; finished with {bench_utils.load()}")


if __name__ == "__main__":
    main()
