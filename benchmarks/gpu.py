"""Every model on one accelerator: sequence models side by side, the ESN harvest's FLOP/s, video throughput.

    python benchmarks/gpu.py [--out DIR] [--device cuda] [--parts sequence harvest video]
                             [--models esn lstm ...] [--small]

1. sequence: the workload of issue 17 — 20,000 training sequences × 100 steps × 64 features,
   10 classes (``bench_utils.templates``: a smooth random template per class under Gaussian
   noise σ = 12; 2,500 validation and 2,500 test sequences) — every sequence model with its
   default settings through ``echoes.api.train`` (tracking off), gradient models for 10 epochs:
   train s (ridge-fitted models: the median of three runs), test accuracy, inference ms per
   sequence (the test split in batches of ``train.eval_batch_size``), peak device memory during
   training. Each model first trains once on 200 sequences, so no row pays for CUDA's start-up.
2. harvest: ``esn.features`` on the whole training set in one batch against the bare
   float32 products it is made of — W [N, N] × H [N, B] at every step plus the input
   product — timed alone on the same shapes; both counted as T·B·(2N² + 2NF) FLOPs.
3. video: training clips/s of r2plus1d_18, cnn_lstm and cnn_transformer (batch 16, 16
   frames of 112², bf16 autocast, AdamW, weights=none, augmentation on as in training);
   frame-feature extraction frames/s of resnet18 / resnet50 / efficientnet_b3 (weights=none,
   as the cache builder runs them: float32, 256 frames per call) at 112 px and at each
   backbone's default size; and the end-to-end UCF101 estimate — 13,320 clips × 16 frames,
   decoding on all CPU cores (``--decode-rate`` clips/s per core, BENCHMARKS.md's PyAV figure)
   beside the backbone on the device: the slower of the two sets the time.

Writes ``gpu.json`` and ``gpu.md`` (``gpu-TAG.*`` with ``--tag``) to ``--out`` ($OUT when set). ``--small``
runs tiny sizes (the test suite runs it on CPU so the script cannot rot).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import bench_utils
import numpy as np
import torch

from echoes.api import train
from echoes.config import load_config
from echoes.data.video.backbones import backbone_info, create_backbone
from echoes.models import create_model

# (label, model, overrides): every sequence model with its defaults, and the earlier fixed reservoir
# (before `auto` became the default) for comparison with the first GPU table.
FIXED_RESERVOIR = ["model.leak_rate=0.1", "model.spectral_radius=0.9", "model.input_scaling=null"]
SEQUENCE_MODELS = [
    ("esn (500 units)", "esn", []),
    ("esn (500 units, fixed reservoir)", "esn", FIXED_RESERVOIR),
    ("esn (2000 units)", "esn", ["model.units=2000"]),
    ("deep_esn", "deep_esn", []),
    ("esn_ensemble", "esn_ensemble", []),
    ("lstm", "lstm", []),
    ("lstm, batch 256", "lstm", ["train.batch_size=256"]),
    ("gru", "gru", []),
    ("transformer", "transformer", []),
    ("lmu_fft", "lmu_fft", []),
]
VIDEO_MODELS = ["r2plus1d_18", "cnn_lstm", "cnn_transformer"]
BACKBONES = ["resnet18", "resnet50", "efficientnet_b3"]
UCF101_CLIPS = 13_320


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int = 3) -> float:
    """Median seconds of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mb(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


# --- 1. sequence models ------------------------------------------------------------


def sequence_models(ds, device: torch.device, epochs: int, names: list[str] | None) -> list[dict]:
    def few(seqs):
        return seqs.subset(np.arange(min(200, len(seqs))))

    warm_ds = type(ds)(ds.name, few(ds.train), few(ds.val), few(ds.test), ds.class_names)
    rows = []
    for label, model, overrides in SEQUENCE_MODELS:
        if names and model not in names and label not in names:
            continue
        cfg = load_config(None, [f"model={model}", "data=synthetic:motion", "tracking=false",
                                 f"train.device={device}", f"train.epochs={epochs}", *overrides])
        train(cfg, dataset=warm_ds)  # CUDA start-up, cuBLAS/cuDNN/cuSOLVER handles
        r = train(cfg, dataset=ds)
        if r["learner"] == "ridge":  # a fraction of a second: the median of three runs
            runs = sorted([r, train(cfg, dataset=ds), train(cfg, dataset=ds)], key=lambda v: v["train_seconds"])
            r = runs[1]
        rows.append({
            "model": label, "learner": r["learner"], "train_s": r["train_seconds"],
            "epochs": r["epochs"], "test_accuracy": r["test_accuracy"],
            "inference_ms_per_seq": 1e3 * r["inference_seconds_per_sample"],
            "peak_memory_mb": r["peak_memory_mb"],
            "harvest_s": r.history[-1].get("harvest_seconds"), "solve_s": r.history[-1].get("solve_seconds"),
        })
        print(f"  {label}: {rows[-1]['train_s']:.2f} s, accuracy {rows[-1]['test_accuracy']:.3f}", flush=True)
    return rows


# --- 2. the ESN harvest against the bare products -----------------------------------


def harvest_rate(ds, device: torch.device, units: int) -> dict:
    x = torch.from_numpy(np.asarray(ds.train.x)).to(device)
    lengths = torch.from_numpy(ds.train.lengths).to(device)
    b, t, f = x.shape
    esn = create_model("esn", input_size=f, num_classes=ds.num_classes, units=units).to(device)
    layer = esn.members[0][0]
    w, w_in = layer.w.clone(), layer.w_in.clone()
    h = torch.zeros(units, b, device=device)
    drive = torch.empty(units, b, device=device)
    xt = x.transpose(0, 2).contiguous()  # [F, T, B]: one step's input is xt[:, s]

    def products() -> None:
        for s in range(t):
            torch.mm(w_in, xt[:, s], out=drive)
            drive.addmm_(w, h)

    flops = t * b * (2 * units * units + 2 * units * f)
    bare = timed(products, device)
    harvest = timed(lambda: esn.features(x, lengths), device)
    return {"units": units, "batch": b, "steps": t, "features": f, "flops": flops,
            "bare_s": bare, "harvest_s": harvest, "bare_tflops": flops / bare / 1e12,
            "harvest_tflops": flops / harvest / 1e12, "fraction": bare / harvest}


# --- 3. video --------------------------------------------------------------------------


def video_training(name: str, device: torch.device, batch: int, frames: int, size: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name, input_size=3 * size * size, num_classes=101, weights="none").to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch, frames, 3 * size * size), device=device).float()
    lengths = torch.full((batch,), frames, device=device)
    y = torch.randint(0, 101, (batch,), device=device)
    amp = device.type == "cuda"

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.cross_entropy(model(x, lengths).float(), y)
        loss.backward()
        opt.step()

    peak_reset(device)
    step()  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - t0
    return {"model": name, "clips_per_s": batch * steps / seconds, "batch": batch, "frames": frames,
            "size": size, "peak_memory_mb": peak_mb(device)}


def frame_extraction(name: str, device: torch.device, size: int, frames: int, repeats: int) -> dict:
    torch.manual_seed(0)
    backbone = create_backbone(name, "none").to(device).eval()
    pixels = torch.randint(0, 256, (frames, 3, size, size), dtype=torch.uint8)  # on the host, as decoded

    @torch.no_grad()
    def run() -> None:
        backbone(pixels.to(device).float().div_(255)).float().cpu()

    peak_reset(device)
    seconds = timed(run, device, repeats)
    return {"backbone": name, "size": size, "frames_per_s": frames / seconds, "peak_memory_mb": peak_mb(device)}


def ucf101_estimate(frames_per_s: float, decode_rate: float, cores: int, frames: int = 16) -> dict:
    decode_s = UCF101_CLIPS / (decode_rate * cores)
    backbone_s = UCF101_CLIPS * frames / frames_per_s
    return {"decode_s": decode_s, "backbone_s": backbone_s, "total_s": max(decode_s, backbone_s),
            "bound": "decode" if decode_s >= backbone_s else "backbone"}


# --- the report ------------------------------------------------------------------------


def fmt(v: object, spec: str = ".3f") -> str:
    return "–" if v is None else format(v, spec)


def markdown(results: dict) -> str:
    table = bench_utils.markdown_table
    parts = [f"machine: {results['machine']}", ""]
    if rows := results.get("sequence"):
        parts += [f"Sequence models on {results['workload']}:", "", table(
            ["model", "learner", "train s", "epochs", "test acc", "inference ms/seq", "peak MB",
             "harvest s", "solve s"],
            [[r["model"], r["learner"], f"{r['train_s']:.3f}", str(r["epochs"]), f"{r['test_accuracy']:.3f}",
              f"{r['inference_ms_per_seq']:.4f}", fmt(r["peak_memory_mb"], ".0f"), fmt(r["harvest_s"]),
              fmt(r["solve_s"])] for r in rows]), ""]
    if h := results.get("harvest"):
        parts += ["ESN harvest against the bare float32 products of the same shapes:", "", table(
            ["units", "batch × steps × features", "bare s", "bare TFLOP/s", "harvest s", "harvest TFLOP/s",
             "of bare rate"],
            [[str(h["units"]), f"{h['batch']} × {h['steps']} × {h['features']}", f"{h['bare_s']:.4f}",
              f"{h['bare_tflops']:.2f}", f"{h['harvest_s']:.4f}", f"{h['harvest_tflops']:.2f}",
              f"{100 * h['fraction']:.0f}%"]]), ""]
    if rows := results.get("video_training"):
        parts += ["Video training (bf16 autocast, weights=none):", "", table(
            ["model", "batch × frames × size²", "clips/s", "peak MB"],
            [[r["model"], f"{r['batch']} × {r['frames']} × {r['size']}²", f"{r['clips_per_s']:.1f}",
              fmt(r["peak_memory_mb"], ".0f")] for r in rows]), ""]
    if rows := results.get("frame_extraction"):
        parts += ["Frame features (float32, as the cache builder runs them; UCF101 = 13,320 clips × 16 frames, "
                  f"decoding at {results['decode_rate']} clips/s per core on {results['cores']} cores):", "",
                  table(["backbone", "size", "frames/s", "peak MB", "UCF101 decode s", "UCF101 backbone s",
                         "UCF101 total s (bound)"],
                        [[r["backbone"], str(r["size"]), f"{r['frames_per_s']:.0f}", fmt(r["peak_memory_mb"], ".0f"),
                          f"{r['ucf101']['decode_s']:.0f}", f"{r['ucf101']['backbone_s']:.0f}",
                          f"{r['ucf101']['total_s']:.0f} ({r['ucf101']['bound']})"] for r in rows]), ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "benchmarks-out"))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--parts", nargs="+", default=["sequence", "harvest", "video"])
    parser.add_argument("--models", nargs="+", help="sequence models (names or labels) to run; default all")
    parser.add_argument("--epochs", type=int, default=10, help="for the gradient-trained models")
    parser.add_argument("--decode-rate", type=float, default=34.6,
                        help="PyAV clips/s per CPU core (16 frames, 112 px), from BENCHMARKS.md")
    parser.add_argument("--small", action="store_true", help="tiny sizes (tests, CPU)")
    parser.add_argument("--tag", default="", help="a name for this run in the output files")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    device = torch.device(args.device)
    small = args.small
    n, t, f = (60, 12, 6) if small else (25_000, 100, 64)
    ds = bench_utils.templates(n, t, f, noise=12.0, classes=10, seed=0, val_fraction=0.5)
    results: dict = {"machine": bench_utils.machine(), "device": str(device), "tag": args.tag,
                     "workload": f"{len(ds.train)} × {t} × {f} train, {len(ds.val)} val, {len(ds.test)} test, "
                                 "10 classes", "decode_rate": args.decode_rate, "cores": os.cpu_count()}
    print(results["machine"], flush=True)
    if "sequence" in args.parts:
        results["sequence"] = sequence_models(ds, device, 1 if small else args.epochs, args.models)
    if "harvest" in args.parts:
        results["harvest"] = harvest_rate(ds, device, 20 if small else 500)
    if "video" in args.parts:
        batch, frames, size = (2, 4, 32) if small else (16, 16, 112)
        results["video_training"] = [video_training(m, device, batch, frames, size, 1 if small else 10)
                                     for m in VIDEO_MODELS]
        rows = []
        for name in BACKBONES:
            sizes = [size] if small else [size, backbone_info(name).default_size]
            for s in sizes:
                row = frame_extraction(name, device, s, 8 if small else 256, 1 if small else 5)
                row["ucf101"] = ucf101_estimate(row["frames_per_s"], args.decode_rate, os.cpu_count() or 1)
                rows.append(row)
        results["frame_extraction"] = rows
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"gpu{'-' + args.tag if args.tag else ''}"
    (out / f"{stem}.json").write_text(json.dumps(results, indent=1, default=str))
    text = markdown(results)
    (out / f"{stem}.md").write_text(text)
    print(text)
    return results


if __name__ == "__main__":
    main()
