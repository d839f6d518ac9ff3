"""Real-time inference: per-frame latency, sustained frames/s and memory of ``Model.stream``.

    .venv/bin/python benchmarks/streaming.py [--frames 300] [--long 10000] [--resnet] [--device cpu]

1. latency: ``--frames`` frames of 128x96 RGB (as ``echoes data make-videos`` writes them), each
   through exactly what ``echoes stream`` does per frame — resize + centre crop to 64 px, the
   small_cnn backbone, standardisation, the model's ``step`` — for small_cnn + esn / lstm / gru /
   lmu / lsnn / transformer (a 16-step window re-read every frame), each at its defaults (8 classes).
   The pipelines run in interleaved rounds of 20 frames (after 10 warm-up frames each): p50 / p99
   of the per-frame latency, frames/s sustained (frames over the summed latencies), and the CPU
   time per frame (all threads; median) — the figure a loaded machine
   disturbs least. ``--resnet`` adds resnet18 (weights none: the same cost as ImageNet's) + esn at 224 px.
2. memory: the temporal model alone stepped ``--long`` times on feature vectors; the bytes its
   streaming state holds after 100 steps and at the end (exact), and the process RSS at both points
   (``--long 0`` skips it).

The machine is shared: the load average is printed with the numbers.
"""

from __future__ import annotations

import argparse
import time

import bench_utils
import numpy as np
import torch

from echoes.config import build_config
from echoes.model import Model
from echoes.models import create_model
from echoes.stream import Feed, FrameFeatures

TEMPORAL = {"esn": {}, "lstm": {}, "gru": {}, "lmu": {}, "lsnn": {}, "transformer": {}}
CLASSES = [f"class{i}" for i in range(8)]
ROUND = 20  # frames per pipeline per interleaved round
RESNET_FRAMES = 60  # resnet18 at 224 px is slow on a CPU: fewer frames


def fitted(name: str, features: str = "small_cnn", size: int = 64) -> Model:
    """An untrained model dressed as a trained one (latency does not depend on the weights)."""
    dim = {"small_cnn": 128, "resnet18": 512}[features]
    torch.manual_seed(0)
    module = create_model(name, input_size=dim, num_classes=len(CLASSES), **TEMPORAL.get(name, {})).eval()
    cfg = build_config({"model": {"name": name}, "data": {"source": "ucf101:generated", "features": features,
                                                           "weights": "none", "size": size, "frames": 16}})
    return Model(module, cfg, CLASSES, np.zeros(dim), np.ones(dim))


class Pipeline:
    """One model behind the frame pipeline, as ``echoes stream`` runs it; ``step=False``: the frame
    pipeline alone (resize, crop, backbone)."""

    def __init__(self, model: Model, device: str, step: bool = True) -> None:
        model.module.to(device)
        self.to_vector, self.feed, self.step = FrameFeatures(model, device), Feed(), step
        self.logits = model.stream(self.feed)
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self, frames: list[np.ndarray], record: bool = True) -> None:
        for frame in frames:
            t0, c0 = time.perf_counter(), time.process_time()
            self.feed.item = self.to_vector(frame)
            if self.step:
                next(self.logits)
            if record:
                self.wall.append(time.perf_counter() - t0)
                self.cpu.append(time.process_time() - c0)

    def result(self) -> dict[str, float]:
        ms = np.array(self.wall) * 1e3
        return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
                "fps": len(ms) / float(np.sum(self.wall)), "cpu": float(np.median(self.cpu)) * 1e3}


def state_bytes(state: object) -> int:
    """Bytes of every tensor a streaming state holds (nested in tuples, lists, deques, objects)."""
    seen: set[int] = set()

    def walk(x: object) -> int:
        if id(x) in seen:
            return 0
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            return x.numel() * x.element_size()
        if isinstance(x, list | tuple | set) or type(x).__name__ == "deque":
            return sum(walk(v) for v in x)
        if isinstance(x, dict):
            return sum(walk(v) for v in x.values())
        if hasattr(x, "__dict__") and not isinstance(x, torch.nn.Module):
            return sum(walk(v) for v in vars(x).values())
        return 0

    return walk(state)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@torch.no_grad()
def memory(name: str, steps: int) -> dict[str, float]:
    module = fitted(name).module
    state = module.init_state(1, 16)
    out = {}
    for t in range(1, steps + 1):
        _, state = module.step(torch.randn(1, module.input_size), state)
        if t == 100:
            out["state100"], out["rss100"] = state_bytes(state), rss_mb()
    out["state_end"], out["rss_end"] = state_bytes(state), rss_mb()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--long", type=int, default=10_000)
    p.add_argument("--resnet", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", default=["none", *TEMPORAL], choices=["none", *TEMPORAL],
                   help="temporal models after small_cnn (none: the frame pipeline alone)")
    args = p.parse_args()
    print(bench_utils.machine())
    rng = np.random.default_rng(0)
    frames = list(rng.integers(0, 256, (args.frames, 96, 128, 3), dtype=np.uint8))
    rows = []
    runs = [(n, "small_cnn", 64) for n in args.models] + ([("esn", "resnet18", 224)] if args.resnet else [])
    pipes = {run: Pipeline(fitted("esn" if run[0] == "none" else run[0], run[1], run[2]), args.device,
                           step=run[0] != "none") for run in runs}
    for pipe in pipes.values():  # warm up (first calls allocate, pick kernels)
        pipe.run(frames[:10], record=False)
    # Interleaved rounds: the noise of a shared machine falls on every pipeline alike.
    for r in range(0, args.frames, ROUND):
        for (_, features, _), pipe in pipes.items():
            if features == "small_cnn" or r < RESNET_FRAMES:
                pipe.run(frames[r:r + ROUND])
    rows = []
    for (name, features, size), pipe in pipes.items():
        r = pipe.result()
        what = (f"{features} {size}px alone" if name == "none" else f"{features} {size}px + {name}"
                + (" (window 16)" if name == "transformer" else ""))
        m = memory(name, args.long) if features == "small_cnn" and args.long and name != "none" else None
        rows.append([what, f"{r['p50']:.2f}", f"{r['p99']:.2f}", f"{r['fps']:.0f}", f"{r['cpu']:.2f}",
                     f"{m['state100'] / 1024:.1f} → {m['state_end'] / 1024:.1f}" if m else "",
                     f"{m['rss100']:.0f} → {m['rss_end']:.0f}" if m else ""])
        print(" | ".join(rows[-1]), flush=True)
    print(bench_utils.load())
    print()
    print(bench_utils.markdown_table(
        ["frame → backbone → step", "p50 ms", "p99 ms", "frames/s", "CPU ms/frame",
         f"state KiB (100 → {args.long:,} steps)", f"process RSS MB (100 → {args.long:,})"], rows))


if __name__ == "__main__":
    main()
