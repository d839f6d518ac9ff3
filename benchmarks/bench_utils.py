"""What every benchmark shares: machine description and interleaved, repeated timing.

Import it before torch (``import bench_utils`` sorts first): importing echoes here
sets its OpenMP spin count before torch loads, as the ``echoes`` command does.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import numpy as np

import echoes  # noqa: F401  (before torch: see the docstring)


def machine() -> str:
    """One line: CPU, cores, torch threads, load average, versions (and the GPU when there is one)."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} "
            f"threads ({openmp()}), numpy "
            f"{np.__version__}, Python {platform.python_version()}{gpu}; {load()}")


OPENMP_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def openmp() -> str:
    """The OpenMP wait settings torch loaded with."""
    return ", ".join(f"{k}={os.environ[k]}" for k in OPENMP_WAIT_VARIABLES if k in os.environ
                     ) or "libgomp's default wait"


def load() -> str:
    """The 1-minute load average: other processes share these cores."""
    try:
        return f"load average {os.getloadavg()[0]:.1f}"
    except OSError:
        return "load average unknown"


def interleaved(candidates: dict[str, Callable[[int], object]], repeats: int
                ) -> tuple[dict[str, float], dict[str, list[object]]]:
    """Call each candidate once per round (with the round number), rounds repeated.

    Returns (median seconds, results) per name.
    Interleaving spreads the noise of a shared machine over every candidate alike.
    """
    times: dict[str, list[float]] = {k: [] for k in candidates}
    outputs: dict[str, list[object]] = {k: [] for k in candidates}
    for r in range(repeats):
        for name, fn in candidates.items():
            t0 = time.perf_counter()
            outputs[name].append(fn(r))
            times[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}, outputs


def templates(n: int, t: int, f: int, noise: float, classes: int = 5, seed: int = 0,
              val_fraction: float = 0.0):
    """Each class a smooth random template [t, f]; samples add Gaussian noise; standardised.

    80/20 train/test split; ``val_fraction`` of the test rows become a validation split
    (else validation = test).
    """
    from echoes.data import Dataset, Sequences
    from echoes.data.sequences import standardize

    rng = np.random.default_rng(seed)
    base = np.cumsum(rng.standard_normal((classes, t, f)), axis=1) / np.sqrt(t)
    y = rng.integers(0, classes, n)
    x = (base[y] + noise * rng.standard_normal((n, t, f))).astype(np.float32)
    seqs = Sequences(x, np.full(n, t), y)
    cut = int(0.8 * n)
    mid = cut + int(val_fraction * (n - cut))
    train, test = seqs.subset(np.arange(cut)), seqs.subset(np.arange(mid, n))
    val = seqs.subset(np.arange(cut, mid)) if mid > cut else test
    return standardize(Dataset(f"templates {n}×{t}×{f}", train, val, test, list(map(str, range(classes)))))


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
