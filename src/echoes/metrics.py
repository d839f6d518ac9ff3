"""The measurements every run gets, taken the same way for every model and learner."""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from .data.sequences import PAD_LABEL, Sequences


def flat_targets(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [M,C], y [M]) over what counts: sequences, or valid frames when framewise."""
    if logits.dim() == 3:
        t = min(logits.shape[1], y.shape[1])
        logits, y = logits[:, :t].reshape(-1, logits.shape[-1]), y[:, :t].reshape(-1)
        keep = y != PAD_LABEL
        return logits[keep], y[keep]
    return logits, y


@dataclass
class Predictions:
    logits: np.ndarray  # [M, C] over counted items
    y: np.ndarray  # [M]
    batch_seconds: list[float]
    num_sequences: int

    @property
    def accuracy(self) -> float:
        return float((self.logits.argmax(1) == self.y).mean()) if len(self.y) else float("nan")

    def top_k(self, k: int) -> float:
        top = np.argsort(-self.logits, axis=1)[:, :k]
        return float((top == self.y[:, None]).any(1).mean())

    def loss(self) -> float:
        z = self.logits - self.logits.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return float(-logp[np.arange(len(self.y)), self.y].mean())

    def confusion(self, num_classes: int) -> np.ndarray:
        cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(cm, (self.y, self.logits.argmax(1)), 1)
        return cm


@torch.no_grad()
def predict(model: torch.nn.Module, seqs: Sequences, batch_size: int, device: torch.device) -> Predictions:
    """Run the model in eval mode over a split, timing each batch."""
    model.eval()
    outs, ys, times = [], [], []
    for x, lengths, y in seqs.batches(batch_size, device=device):
        sync(device)
        t0 = time.perf_counter()
        logits = model(x, lengths)
        sync(device)
        times.append(time.perf_counter() - t0)
        lg, yy = flat_targets(logits.float(), y)
        outs.append(lg.cpu().numpy())
        ys.append(yy.cpu().numpy())
    return Predictions(np.concatenate(outs), np.concatenate(ys), times, len(seqs))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def convergence_epoch(val_accuracies: list[float], tolerance: float = 0.01) -> int | None:
    """First epoch (1-based) whose validation accuracy is within `tolerance` of the best."""
    if not val_accuracies:
        return None
    best = max(val_accuracies)
    return next(i + 1 for i, a in enumerate(val_accuracies) if a >= best - tolerance)


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: ru_maxrss is the closest we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS, so growth is visible again to RSS."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


_warmed: set[bool] = set()  # the kinds of warm-up done (iterative or not)


def _warm_up(iterative: bool) -> None:
    """Pay torch's one-time start-up allocations (thread pools; for iterative learners also the autograd
    engine and an optimizer) before measuring, so the first run of a process is not charged for them.
    A one-pass learner (ridge) warms up only a forward pass: building an optimizer lazily imports ~150 MB
    of torch (torch._dynamo), seconds a ridge run would never spend."""
    if iterative in _warmed:
        return
    _warmed.add(iterative)
    with torch.random.fork_rng(devices=[]):  # the run's random numbers stay untouched (seeded runs repeat)
        layer = torch.nn.GRU(4, 4, batch_first=True)
        if not iterative:
            with torch.no_grad():
                layer(torch.randn(2, 3, 4))
            return
        opt = torch.optim.AdamW(layer.parameters())
        out, _ = layer(torch.randn(2, 3, 4))
        out.sum().backward()
        opt.step()


class PeakMemory:
    """Peak memory growth during a block: CUDA max allocated, else sampled RSS growth."""

    def __init__(self, device: torch.device, interval: float = 0.005, iterative: bool = True) -> None:
        self.device, self.iterative = device, iterative
        self.interval = interval
        self.peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        _warm_up(self.iterative)
        _release_free_heap()
        self._start = _rss_bytes()
        self._peak = self._start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, _rss_bytes())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._start
            return
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, _rss_bytes())
        self.peak_bytes = self._peak - self._start

    @property
    def megabytes(self) -> float:
        return max(self.peak_bytes, 0) / 2**20
