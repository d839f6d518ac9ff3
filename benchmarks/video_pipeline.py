"""The video pipeline's throughput, stage by stage, and the temporal models' training time on its cache.

    .venv/bin/python benchmarks/video_pipeline.py [--root data/ucf101-synthetic] [--clips 160]
                                                  [--seeds 0] [--backbones small_cnn resnet18]

1. decode only: PyAV decoding + sampling 16 frames + resize/crop, clips/s with 1 and 2 threads
   (interleaved rounds, median), at 64 px (small_cnn's size) and 112 px;
2. decode + features: a full cache extraction (``build_cache``: decoding one chunk ahead in
   2 threads, the backbone on the CPU) into a fresh folder, clips/s over ``--clips`` clips, for
   each backbone (torchvision ones with weights=none at 112 px: ImageNet weights are not needed
   to time them) and for raw frames;
3. training on the cache: every model of the packaged suite ``video-quick`` (same options)
   through ``echoes.api.train`` (tracking off) on split 1, seconds and test accuracy.

The generated data set is written to ``--root`` first if it is not there.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from bench_utils import interleaved, load, machine, markdown_table

from echoes.api import load_data, train
from echoes.config import load_config
from echoes.data.ucf101 import read_split
from echoes.data.video.cache import FrameSettings, build_cache
from echoes.data.video.decode import decode_clip
from echoes.data.video.make_videos import make_videos
from echoes.suite import load_suite


def decode_rate(paths: list[Path], size: int, threads: int) -> float:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(lambda p: decode_clip(p, 16, size), paths):
            pass
    return len(paths) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/ucf101-synthetic")
    parser.add_argument("--clips", type=int, default=160, help="clips per throughput measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbones", nargs="+", default=["small_cnn", "resnet18"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"machine: {machine()}\n")
    root = Path(args.root)
    if not (root / "UCF-101").is_dir():
        print(f"writing the generated set to {root} ...", flush=True)
        make_videos(root)
    _, splits = read_split(root, 1)
    clips = (splits["train"] + splits["test"])[: args.clips]
    paths = [c.path for c in clips]

    rows = []
    for size in (64, 112):
        candidates = {f"{t} thread{'s' * (t > 1)}": (lambda r, t=t, size=size: decode_rate(paths, size, t))
                      for t in (1, 2)}
        _, rates = interleaved(candidates, args.repeats)
        for name, values in rates.items():
            rows.append(["decode only", f"{size}px, {name}", f"{np.median(values):.1f}"])
    for features in [*args.backbones, "frames"]:
        size = 64 if features == "small_cnn" else 112
        settings = FrameSettings(features, "none", 16, size, "uniform", 0)
        with tempfile.TemporaryDirectory() as tmp:
            result = build_cache(tmp, {"train": clips}, settings, workers=2)
        rows.append(["decode + features", settings.describe(),
                     f"{result.clips_per_second:.1f}"])
        print(f"{features} extracted ({load()})", flush=True)
    print()
    print(markdown_table(["stage", "setting", "clips/s"], rows))

    suite = load_suite("video-quick", [f"datasets=[ucf101:{root}]"])
    ds = None
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        for cfg in suite.runs:
            if cfg.seed != suite.runs[0].seed:
                continue
            cfg = load_config(None, ["tracking=false", f"seed={seed}"], base=cfg.model_dump())
            if ds is None:
                t0 = time.perf_counter()
                ds = load_data(cfg.data)
                print(f"\n{ds.describe()} (cache ready in {time.perf_counter() - t0:.1f}s)")
            r = train(cfg, dataset=ds)
            results.setdefault(r["label"], []).append(r)
    train_rows = []
    for label, runs in results.items():
        seconds = float(np.median([r["train_seconds"] for r in runs]))
        acc = [r["test_accuracy"] for r in runs]
        train_rows.append([label, runs[0]["learner"], f"{seconds:.2f}",
                           f"{np.mean([r['epochs'] for r in runs]):.0f}",
                           f"{np.mean(acc):.3f}" + (f" ± {np.std(acc):.3f}" if len(acc) > 1 else "")])
    print()
    print(markdown_table(["model", "learner", "train s", "epochs", "test accuracy"], train_rows))
    print(f"\nseeds {args.seeds}; finished with {load()}")


if __name__ == "__main__":
    main()
