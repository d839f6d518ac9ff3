"""Phones: e-prop vs BPTT memory and time against sequence length; lmu_fft vs the stepped LMU.

    .venv/bin/python benchmarks/phones.py [--lengths 100,250,500,1000,2000] [--repeats 3]
    .venv/bin/python benchmarks/phones.py --suite      # also runs the packaged phones suite

(i) One training step (gradients of one batch, 16 sequences of 39 features, 39 framewise
classes) of an LSNN (100 neurons, half ALIF) and an LSTM (100 units), by e-prop and by
BPTT, at each sequence length: peak memory growth during the step (CUDA: max allocated;
CPU: sampled RSS growth, see echoes.metrics.PeakMemory) and median seconds. e-prop keeps
eligibility traces instead of the history, so its memory should stay flat while BPTT's
grows with T. (ii) Forward + backward of lmu_fft and the stepped lmu on psMNIST's shape
(length 784, 1 input, order 256, θ = 784, 212 hidden units, batch 16), interleaved.
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


def bptt_step(model, x, lengths, y) -> None:
    logits, target = flat_targets(model(x, lengths), y)
    loss = torch.nn.functional.cross_entropy(logits, target)
    reg = model.regularization_loss()
    (loss if reg is None else loss + reg).backward()


def ignore_round(step):
    return lambda _round: step()


def memory_curve(lengths: list[int], repeats: int, device: torch.device) -> str:
    torch.manual_seed(0)
    rows = []
    models = {
        "lsnn": create_model("lsnn", input_size=39, num_classes=39, framewise=True, hidden_size=100),
        "lstm": create_model("lstm", input_size=39, num_classes=39, framewise=True, hidden_size=100),
    }
    rules = {"lsnn": lsnn_eprop, "lstm": lstm_eprop}
    for t in lengths:
        x = torch.randn(16, t, 39, device=device)
        y = torch.randint(0, 39, (16, t), device=device)
        lens = torch.full((16,), t, device=device)
        row = [str(t)]
        for name, model in models.items():
            model.to(device)
            steps = {"e-prop": partial(rules[name], model, x, lens, y), "BPTT": partial(bptt_step, model, x, lens, y)}
            memory = {}
            for label, step in steps.items():
                model.zero_grad(set_to_none=True)
                with PeakMemory(device) as mem:
                    step()
                memory[label] = mem.megabytes
            seconds, _ = interleaved({label: ignore_round(step) for label, step in steps.items()}, repeats)
            for label in steps:
                row += [f"{memory[label]:.1f}", f"{seconds[label]:.2f}"]
                print(f"T={t} {name} {label}: {memory[label]:.1f} MB, {seconds[label]:.2f} s", file=sys.stderr)
        rows.append(row)
    headers = ["T"] + [f"{m} {k} {u}" for m in models for k in ("e-prop", "BPTT") for u in ("MB", "s")]
    return markdown_table(headers, rows)


def lmu_speedup(repeats: int, device: torch.device) -> str:
    torch.manual_seed(0)
    kw = dict(input_size=1, num_classes=10, hidden_size=212, order=256, theta=784.0)
    stepped = create_model("lmu", **kw, hidden_to_memory=False, memory_to_memory=False).to(device)
    parallel = create_model("lmu_fft", **kw).to(device)
    x, lengths = torch.randn(16, 784, 1, device=device), torch.full((16,), 784, device=device)
    y = torch.randint(0, 10, (16,), device=device)

    def run(model):
        def step(_r):
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x, lengths), y).backward()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return step

    seconds, _ = interleaved({"lmu": run(stepped), "lmu_fft": run(parallel)}, repeats)
    rows = [[name, f"{s:.3f}"] for name, s in seconds.items()]
    rows.append(["speed-up", f"{seconds['lmu'] / seconds['lmu_fft']:.1f}×"])
    return markdown_table(["model (length 784, batch 16)", "s per training step"], rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="100,250,500,1000,2000")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--suite", action="store_true", help="also run the packaged phones suite")
    args = p.parse_args()
    device = torch.device(args.device)
    print(f"machine: {machine()}\n")
    print("### Training-step memory and time against sequence length\n")
    print(memory_curve([int(t) for t in args.lengths.split(",")], args.repeats, device))
    print("\n### lmu_fft against the stepped LMU\n")
    print(lmu_speedup(args.repeats, device))
    if args.suite:
        from echoes.api import compare

        print("\n### The phones suite\n")
        summary = compare("phones", fresh=True, echo=lambda s: print(s, file=sys.stderr))
        print("```\n" + summary["table"] + "\n```")


if __name__ == "__main__":
    main()
