"""The one data type every source produces and every model consumes.

A split is a set of variable-length sequences stored padded: ``x [N, T, F]``
float32 (zeros past each length), ``lengths [N]`` and labels ``y`` — ``[N]`` for
one label per sequence, or ``[N, T]`` with ``-1`` on padded steps for framewise
tasks. Batches are cut to the longest sequence they hold.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..errors import EchoesError
from .heads import Heads

PAD_LABEL = -1


@dataclass
class Sequences:
    x: np.ndarray  # [N, T, F] float32, zero-padded
    lengths: np.ndarray  # [N] int64
    y: np.ndarray  # [N] or [N, T] int64 (framewise, PAD_LABEL past each length)

    def __post_init__(self) -> None:
        self.lengths = np.asarray(self.lengths, dtype=np.int64)
        self.y = np.asarray(self.y, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def framewise(self) -> bool:
        return self.y.ndim == 2

    @property
    def num_features(self) -> int:
        return int(self.x.shape[2])

    def subset(self, idx: np.ndarray) -> Sequences:
        idx = np.asarray(idx)
        lazy = isinstance(self.x, np.memmap | RowView)  # keep big on-disk arrays on disk
        x = RowView(self.x, idx) if lazy else np.asarray(self.x[idx])
        return Sequences(x, self.lengths[idx], self.y[idx])

    def valid_labels(self) -> np.ndarray:
        """All labels that count: one per sequence, or every valid frame."""
        if not self.framewise:
            return self.y
        return self.y[self.y != PAD_LABEL]

    def batches(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(x [B,T_b,F], lengths [B], y)`` tensors, T_b = longest in batch."""
        n = len(self)
        order = torch.randperm(n, generator=generator).numpy() if shuffle else np.arange(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            lengths = self.lengths[idx]
            t = int(lengths.max())
            x = torch.from_numpy(np.ascontiguousarray(self.x[idx, :t], dtype=np.float32))
            y = self.y[idx, :t] if self.framewise else self.y[idx]
            yield (
                x.to(device, non_blocking=True),
                torch.from_numpy(lengths).to(device),
                torch.from_numpy(np.ascontiguousarray(y)).to(device),
            )


class RowView:
    """Rows ``idx`` of a memory-mapped array, read from disk only when a batch asks for them."""

    def __init__(self, base: np.ndarray | RowView, idx: np.ndarray) -> None:
        self.base, self.idx = base, np.asarray(idx, dtype=np.int64)
        self.shape = (len(self.idx), *base.shape[1:])
        self.dtype = base.dtype

    def __len__(self) -> int:
        return len(self.idx)

    def __getitem__(self, key):  # noqa: ANN001, ANN204 — x[rows] or x[rows, :t]
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        return self.base[(self.idx[rows], *rest)]

    def __array__(self, dtype=None, copy=None):  # noqa: ANN001, ANN204
        return np.asarray(self.base[self.idx], dtype=dtype)


def pad_sequences(arrays: Sequence[np.ndarray], max_len: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stack (T_i, F) arrays into a zero-padded [N, T, F] float32 array and lengths."""
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    t = int(max_len or (lengths.max() if len(lengths) else 0))
    f = arrays[0].shape[1] if len(arrays) else 0
    out = np.zeros((len(arrays), t, f), dtype=np.float32)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out, lengths


def pad_labels(labels: Sequence[np.ndarray], max_len: int) -> np.ndarray:
    """Stack per-frame label arrays into [N, T] with PAD_LABEL past each length."""
    out = np.full((len(labels), max_len), PAD_LABEL, dtype=np.int64)
    for i, lab in enumerate(labels):
        out[i, : len(lab)] = lab
    return out


def valid_mask(lengths: np.ndarray, t: int) -> np.ndarray:
    return np.arange(t)[None, :] < np.asarray(lengths)[:, None]


@dataclass
class Dataset:
    """Train / validation / test splits of one source, ready for any model."""

    name: str
    train: Sequences
    val: Sequences
    test: Sequences
    class_names: list[str]  # one per output: with several label heads, "head:class"
    info: dict = field(default_factory=dict)  # e.g. skipped files, feature cache path
    label_heads: Heads | None = None  # several label heads (verb + noun); None: one, over class_names

    @property
    def heads(self) -> Heads:
        return self.label_heads or Heads.single(self.class_names)

    @property
    def num_classes(self) -> int:
        """Outputs a model needs (with several heads: all of theirs)."""
        return len(self.class_names)

    @property
    def num_features(self) -> int:
        return self.train.num_features

    @property
    def framewise(self) -> bool:
        return self.train.framewise

    def describe(self) -> str:
        kind = "framewise" if self.framewise else "sequence"
        heads = self.heads
        classes = (" + ".join(f"{n} {h}" for h, n in zip(heads.names, heads.sizes, strict=True)) if heads.multi
                   else f"{self.num_classes}")
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
            f"{self.num_features} features, {classes} classes ({kind} labels), "
            f"length {int(self.train.lengths.min())}–{int(self.train.lengths.max())}"
        )


def stratified_split(
    y: np.ndarray, fraction: float, seed: int, groups: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): a seeded split keeping each class's share.

    With ``groups``, whole groups go to one side (e.g. UCF101's gXX actors).
    Framewise labels stratify by each sequence's most frequent label.
    """
    rng = np.random.default_rng(seed)
    if y.ndim == 2:
        y = np.array([np.bincount(row[row != PAD_LABEL]).argmax() for row in y])
    train_idx, val_idx = [], []
    if groups is not None:
        # Assign groups per class, so every class appears on both sides when it can.
        for cls in np.unique(y):
            cls_groups = np.unique(groups[y == cls])
            rng.shuffle(cls_groups)
            n_val = int(round(len(cls_groups) * fraction)) if len(cls_groups) > 1 else 0
            n_val = min(max(n_val, 1 if len(cls_groups) > 1 and fraction > 0 else 0), len(cls_groups) - 1)
            val_groups = set(cls_groups[:n_val].tolist())
            members = np.flatnonzero(y == cls)
            for i in members:
                (val_idx if groups[i] in val_groups else train_idx).append(i)
    else:
        for cls in np.unique(y):
            members = np.flatnonzero(y == cls)
            rng.shuffle(members)
            n_val = int(round(len(members) * fraction))
            if len(members) > 1 and fraction > 0:
                n_val = min(max(n_val, 1), len(members) - 1)
            else:
                n_val = 0
            val_idx.extend(members[:n_val])
            train_idx.extend(members[n_val:])
    return np.sort(np.array(train_idx, dtype=np.int64)), np.sort(np.array(val_idx, dtype=np.int64))


def check_finite(x: np.ndarray, what: str) -> None:
    if not np.issubdtype(x.dtype, np.floating):  # integers (e.g. uint8 pixels) are always finite
        return
    bad = ~np.isfinite(x)
    if bad.any():
        raise EchoesError(
            f"{what} contains {int(bad.sum())} NaN or inf values — clean or impute them before training"
        )


def standardize(ds: Dataset) -> Dataset:
    """Scale every feature to zero mean, unit variance using train statistics only."""
    tr = ds.train
    mask = valid_mask(tr.lengths, tr.x.shape[1])
    valid = np.asarray(tr.x)[mask]  # [sum(lengths), F]
    mean = valid.mean(axis=0, dtype=np.float64)
    std = valid.std(axis=0, dtype=np.float64)
    std[std < 1e-8] = 1.0

    def apply(s: Sequences) -> Sequences:
        x = ((np.asarray(s.x, dtype=np.float32) - mean) / std).astype(np.float32)
        x[~valid_mask(s.lengths, x.shape[1])] = 0.0
        return replace(s, x=x)

    info = dict(ds.info, feature_mean=mean, feature_std=std)
    return replace(ds, train=apply(ds.train), val=apply(ds.val), test=apply(ds.test), info=info)
