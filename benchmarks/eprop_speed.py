"""e-prop against BPTT on CPU: time per epoch and peak memory, LSNN and LSTM, against sequence length.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/eprop_speed.py [--lengths 100,300,1000] [--repeats 5]

Issue 17's workload: 2,000 sequences × T steps × 16 features, 10 classes (one label per
sequence), batch 32, default models (lsnn: 200 neurons, half ALIF; lstm: 128 units). One
gradient computation per batch (e-prop: the learner's rule; BPTT: autodiff of the same
loss and, for the LSNN, its rate regulariser). An epoch is 63 batches: its time is 63 × the
median batch, the batches interleaved (e-prop, BPTT, e-prop, …) so that a shared machine's
load falls on both alike. Memory: the peak growth during one batch (``PeakMemory``: sampled
RSS on CPU). Targets (issue 17): e-prop within 2× of BPTT at T = 100, faster from T = 1,000,
its memory flat in T.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import torch
from bench_utils import interleaved, machine, markdown_table

from echoes.learners.eprop import lsnn_eprop, lstm_eprop
from echoes.metrics import PeakMemory, flat_targets
from echoes.models import create_model

SEQUENCES, BATCH, FEATURES, CLASSES = 2000, 32, 16, 10
BATCHES = -(-SEQUENCES // BATCH)


def bptt(model, x, lengths, y) -> None:
    logits, target = flat_targets(model(x, lengths), y)
    loss = torch.nn.functional.cross_entropy(logits, target)
    reg = model.regularization_loss()
    (loss if reg is None else loss + reg).backward()


def one_batch(step, model, x, lengths, y, _round: int = 0) -> None:
    model.zero_grad(set_to_none=True)
    step(model, x, lengths, y)


def measure(lengths: list[int], repeats: int, models: list[str]) -> str:
    rules = {"lsnn": lsnn_eprop, "lstm": lstm_eprop}
    rows = []
    for name, rule in rules.items():
        if name not in models:
            continue
        for t in lengths:
            torch.manual_seed(0)
            last = {"pooling": "last"} if name == "lstm" else {}  # e-prop reads the LSTM at its last step
            model = create_model(name, input_size=FEATURES, num_classes=CLASSES, framewise=False, **last)
            x = torch.randn(BATCH, t, FEATURES)
            y, lens = torch.randint(0, CLASSES, (BATCH,)), torch.full((BATCH,), t)

            steps = {"e-prop": partial(one_batch, rule, model, x, lens, y),
                     "BPTT": partial(one_batch, bptt, model, x, lens, y)}
            memory = {}
            for label, step in steps.items():
                with PeakMemory(torch.device("cpu")) as mem:
                    step()
                memory[label] = mem.megabytes
            seconds, _ = interleaved(steps, repeats)
            epoch = {k: BATCHES * s for k, s in seconds.items()}
            rows.append([name, str(t), f"{epoch['e-prop']:.1f}", f"{epoch['BPTT']:.1f}",
                         f"{epoch['e-prop'] / epoch['BPTT']:.2f}", f"{memory['e-prop']:.1f}", f"{memory['BPTT']:.1f}"])
            print(" ".join(rows[-1]), file=sys.stderr)
    return markdown_table(["model", "T", "e-prop s/epoch", "BPTT s/epoch", "e-prop / BPTT", "e-prop MB",
                           "BPTT MB"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="100,300,1000")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--models", nargs="+", default=["lsnn", "lstm"])
    args = p.parse_args()
    print(f"machine: {machine()}\n")
    print(measure([int(t) for t in args.lengths.split(",")], args.repeats, args.models))
    print(f"\n(after: {machine().rsplit('; ', 1)[-1]})")


if __name__ == "__main__":
    main()
