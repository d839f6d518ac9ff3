"""The measurements every run gets, taken the same way for every model and learner."""

from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch

from .data.heads import Heads
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
    """A model's outputs over a split's counted items. With several label heads (``heads``), ``y`` holds
    label codes, ``accuracy`` and ``top_k`` are the action's (every head right; EPIC's scoring) and
    ``loss`` is the sum of the heads' cross-entropies."""

    logits: np.ndarray  # [M, C] over counted items
    y: np.ndarray  # [M]
    batch_seconds: list[float]
    num_sequences: int
    heads: Heads | None = None  # several label heads; None: one

    @property
    def multi(self) -> bool:
        return self.heads is not None and self.heads.multi

    @property
    def accuracy(self) -> float:
        if not len(self.y):
            return float("nan")
        predicted = self.heads.predicted(self.logits) if self.multi else self.logits.argmax(1)
        return float((predicted == self.y).mean())

    def top_k(self, k: int) -> float:
        if self.multi:
            return float(action_hits(self.heads.split(self.logits), self.heads.decode(self.y), (k,))[k].mean())
        return float(top_k_hits(self.logits, self.y, k).mean())

    def loss(self) -> float:
        if self.multi:
            labels = self.heads.decode(self.y)
            return float(sum(_nll(z, labels[:, h]) for h, z in enumerate(self.heads.split(self.logits))))
        return _nll(self.logits, self.y)

    def confusion(self, num_classes: int) -> np.ndarray:
        cm = np.zeros((num_classes, num_classes), dtype=np.int64)
        np.add.at(cm, (self.y, self.logits.argmax(1)), 1)
        return cm


def _nll(logits: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of softmax(logits) at labels y."""
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def top_k_hits(scores: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """[M] bool: is y among the k highest scores of its row."""
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return (top == y[:, None]).any(1)


# EPIC-KITCHENS-100's action scoring: the 100 best verbs × the 100 best nouns of each segment.
ACTION_TOP_N = 100


def action_hits(head_scores: list[np.ndarray], labels: np.ndarray, ks: tuple[int, ...] = (1, 5),
                top_n: int = ACTION_TOP_N, chunk: int = 256) -> dict[int, np.ndarray]:
    """{k: [M] bool} — is the true action (every head's label) among the k best actions of its row.

    As EPIC-KITCHENS-100's evaluation scores them: per head, the ``top_n`` highest raw scores,
    softmaxed among themselves; an action's score is the product of its heads' probabilities, and only
    actions whose every head is in its top ``top_n`` are ranked (others never count as found)."""
    m = len(labels)
    hits = {k: np.zeros(m, bool) for k in ks}
    for a in range(0, m, chunk):
        rows = slice(a, a + chunk)
        joint, found = None, None  # [r, n1*n2*...] probabilities; is the true action there (its rank)
        for h, scores in enumerate(head_scores):
            s = np.asarray(scores[rows], np.float64)
            n = min(top_n, s.shape[1])
            top = np.argsort(-s, axis=1, kind="stable")[:, :n]
            p = np.exp(np.take_along_axis(s, top, 1) - s[np.arange(len(s)), top[:, 0]][:, None])
            p /= p.sum(1, keepdims=True)
            where = top == labels[rows, h][:, None]  # [r, n]: the true class's slot, if among the top n
            joint = p if joint is None else (joint[:, :, None] * p[:, None, :]).reshape(len(s), -1)
            found = where if found is None else (found[:, :, None] & where[:, None, :]).reshape(len(s), -1)
        present = found.any(1)
        truth = np.where(present, (joint * found).sum(1), -1.0)
        # rank of the true action: how many actions score higher (ties broken in the true one's favour)
        higher = (joint > truth[:, None]).sum(1)
        for k in ks:
            hits[k][rows] = present & (higher < k)
    return hits


def head_metrics(pred: Predictions, prefix: str, subsets: dict[str, np.ndarray] | None = None,
                 tail_classes: dict[str, list[int]] | None = None) -> dict[str, float | None]:
    """EPIC-KITCHENS-100's numbers for several label heads: ``{prefix}_{head}_accuracy`` / ``_top5`` for
    every head and the ``action``; top-1 of each on the ``tail`` items (a head's tail: its label is a tail
    class; the action's: any head's is) and on each of ``subsets`` ({name: bool mask over the items}),
    as ``{prefix}_{subset}_{head}_accuracy``."""
    heads = pred.heads
    labels = heads.decode(pred.y)
    scores = heads.split(pred.logits)
    hits: dict[str, dict[int, np.ndarray]] = {
        name: {k: top_k_hits(z, labels[:, h], k) for k in (1, 5)}
        for h, (name, z) in enumerate(zip(heads.names, scores, strict=True))
    }
    hits["action"] = action_hits(scores, labels)
    sizes = dict(zip(heads.names, heads.sizes, strict=True))
    out: dict[str, float | None] = {}
    for task, by_k in hits.items():
        out[f"{prefix}_{task}_accuracy"] = float(by_k[1].mean())
        out[f"{prefix}_{task}_top5"] = float(by_k[5].mean()) if sizes.get(task, 6) > 5 else None
    masks = dict(subsets or {})
    if tail_classes:
        tail = {h: np.isin(labels[:, i], tail_classes.get(h, [])) for i, h in enumerate(heads.names)}
        for task in hits:  # each head on its own tail items; the action on items with any tail label
            mask = tail[task] if task in tail else np.any(list(tail.values()), axis=0)
            out[f"{prefix}_tail_{task}_accuracy"] = float(hits[task][1][mask].mean()) if mask.any() else None
    for name, mask in masks.items():
        mask = np.asarray(mask, bool)
        for task in hits:
            out[f"{prefix}_{name}_{task}_accuracy"] = float(hits[task][1][mask].mean()) if mask.any() else None
    return out


@torch.no_grad()
def predict(model: torch.nn.Module, seqs: Sequences, batch_size: int, device: torch.device,
            heads: Heads | None = None) -> Predictions:
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
    return Predictions(np.concatenate(outs), np.concatenate(ys), times, len(seqs), heads)


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
