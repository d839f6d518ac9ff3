"""Label heads: one task per sequence, or several at once (EPIC-KITCHENS: a verb and a noun).

Several heads travel through the spine as one label and one output, so batching, splitting,
padding and every model stay as they are:

- the label of a sequence is the mixed-radix code of its heads' labels
  (``verb * num_nouns + noun``): ``Sequences.y`` stays one integer per sequence;
- a model's output is its heads' logits side by side (``[..., C_verb + C_noun]``): its readout is
  one linear map, which ridge fits in one solve with the heads' one-hot targets stacked;
- the loss is the sum of the heads' cross-entropies (weighted), a prediction is right when
  every head is right (EPIC's "action").

A single head is the plain case: code = label, output = logits, loss = cross-entropy.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import EchoesError

SINGLE = "class"  # the name of the one head of an ordinary dataset


@dataclass(frozen=True)
class Heads:
    """The label heads of a dataset: their names and class names, in output order."""

    names: tuple[str, ...]
    classes: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.classes) or not self.names:
            raise EchoesError("label heads need one class list per head name")
        if len(set(self.names)) != len(self.names):
            raise EchoesError(f"label head names must differ, got {list(self.names)}")

    @classmethod
    def single(cls, class_names: Sequence[str]) -> Heads:
        return cls((SINGLE,), (tuple(class_names),))

    @classmethod
    def of(cls, heads: dict[str, Sequence[str]]) -> Heads:
        """From ``{"verb": [...], "noun": [...]}`` (insertion order is output order)."""
        return cls(tuple(heads), tuple(tuple(str(c) for c in v) for v in heads.values()))

    # --- shape ----------------------------------------------------------------------------------

    @property
    def multi(self) -> bool:
        return len(self.names) > 1

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.classes)

    @property
    def width(self) -> int:
        """Outputs a model needs: every head's classes side by side."""
        return sum(self.sizes)

    @property
    def output_names(self) -> list[str]:
        """One name per output: the class names, ``head:class`` with several heads."""
        if not self.multi:
            return list(self.classes[0])
        return [f"{h}:{c}" for h, cs in zip(self.names, self.classes, strict=True) for c in cs]

    def _radix(self) -> np.ndarray:
        """Place values of the mixed-radix code: the last head varies fastest."""
        sizes = np.array(self.sizes, dtype=np.int64)
        return np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)

    # --- labels ---------------------------------------------------------------------------------

    def encode(self, labels: np.ndarray) -> np.ndarray:
        """Per-head labels [N, H] → codes [N] (a single head: labels [N] as they are)."""
        labels = np.asarray(labels, dtype=np.int64)
        if not self.multi:
            return labels.reshape(-1) if labels.ndim == 2 else labels
        if labels.ndim != 2 or labels.shape[1] != len(self.names):
            raise EchoesError(f"labels of {len(self.names)} heads need shape (N, {len(self.names)}), "
                              f"got {labels.shape}")
        return labels @ self._radix()

    def decode(self, y: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Codes [...] → per-head labels [..., H] (numpy or torch, as given)."""
        radix, sizes = self._radix(), np.array(self.sizes)
        if isinstance(y, torch.Tensor):
            r, s = (torch.as_tensor(v, device=y.device) for v in (radix, sizes))
            return torch.div(y[..., None], r, rounding_mode="floor") % s
        return (np.asarray(y)[..., None] // radix) % sizes

    def split(self, outputs: torch.Tensor | np.ndarray) -> list:
        """Outputs [..., width] → one [..., C_h] per head."""
        edges = np.cumsum([0, *self.sizes])
        return [outputs[..., a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """Codes [M] → the heads' one-hot targets side by side, [M, width] float64 (ridge's targets)."""
        if not self.multi:
            return nn.functional.one_hot(y, self.width).double()
        parts = self.decode(y).unbind(-1)
        return torch.cat([nn.functional.one_hot(p, c).double() for p, c in zip(parts, self.sizes, strict=True)], -1)

    @property
    def label_names(self) -> list[str]:
        """One name per label code: the class names, or ``verb/noun`` for every combination of the heads."""
        return ["/".join(combo) for combo in itertools.product(*self.classes)]

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Logits [..., width] → probabilities [..., codes]: a softmax, or with several heads the product
        of the heads' softmaxes over every combination (the joint score streaming ranks by)."""
        parts = [softmax(z) for z in self.split(np.asarray(logits))]
        joint = parts[0]
        for p in parts[1:]:
            joint = (joint[..., :, None] * p[..., None, :]).reshape(*p.shape[:-1], -1)
        return joint

    # --- training signals -----------------------------------------------------------------------

    def loss(self, logits: torch.Tensor, y: torch.Tensor, weights: Sequence[float] | None = None,
             label_smoothing: float = 0.0) -> torch.Tensor:
        """Σ_h weight_h · cross-entropy of head h (logits [M, width], codes [M])."""
        if not self.multi:
            return nn.functional.cross_entropy(logits, y, label_smoothing=label_smoothing)
        weights = self.weights(weights)
        parts = self.decode(y).unbind(-1)
        return sum(w * nn.functional.cross_entropy(z, t, label_smoothing=label_smoothing)
                   for w, z, t in zip(weights, self.split(logits), parts, strict=True))

    def weights(self, weights: Sequence[float] | None) -> list[float]:
        if weights is None:
            return [1.0] * len(self.names)
        if len(weights) != len(self.names):
            raise EchoesError(f"train.head_weights has {len(weights)} values for {len(self.names)} label heads "
                              f"({', '.join(self.names)}) — give one weight per head")
        return [float(w) for w in weights]

    def predicted(self, logits: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """The predicted code of every row: each head's argmax, encoded (a single head: the argmax)."""
        if not self.multi:
            return logits.argmax(-1)
        tops = [z.argmax(-1) for z in self.split(logits)]
        radix = self._radix()
        return sum(t * int(r) for t, r in zip(tops, radix, strict=True))

    def criterion(self, weights: Sequence[float] | None = None, label_smoothing: float = 0.0) -> HeadsLoss:
        return HeadsLoss(self, self.weights(weights), label_smoothing)

    # --- saving ---------------------------------------------------------------------------------

    def to_json(self) -> dict[str, list[str]]:
        return {h: list(c) for h, c in zip(self.names, self.classes, strict=True)}


class HeadsLoss(nn.Module):
    """The training loss of a set of heads: ``loss(logits [M, width], codes [M])``."""

    def __init__(self, heads: Heads, weights: list[float], label_smoothing: float) -> None:
        super().__init__()
        self.heads, self.head_weights, self.label_smoothing = heads, weights, label_smoothing

    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.heads.loss(logits, y, self.head_weights, self.label_smoothing)


def softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (numpy)."""
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)
