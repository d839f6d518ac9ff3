"""Transformer encoder over a sequence of feature vectors (e.g. per-frame CNN features).

Input projection → sinusoidal positions → pre-norm encoder layers → mean over the
valid steps → linear readout (framewise tasks read every step). A key padding
mask keeps padded steps out of every attention, so they never change an output.
Positions matter: without them attention is blind to order, like ``mean_pool``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import EchoesError
from . import register_model
from .base import SequenceModel, step_mask


def sinusoids(t: int, dim: int, device: torch.device) -> torch.Tensor:
    """[t, dim] sine/cosine positions (Vaswani et al. 2017), for any length."""
    pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(t, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class TransformerEncoder(SequenceModel):
    """Self-attention over the whole (valid) sequence, pooled by a masked mean."""

    family = "attention"

    def __init__(self, input_size: int, num_classes: int, framewise: bool = False, *,
                 d_model: int = 64, nhead: int = 4, num_layers: int = 2,
                 dim_feedforward: int | None = None, dropout: float = 0.1) -> None:
        super().__init__(input_size, num_classes, framewise)
        if d_model % nhead or d_model % 2:
            raise EchoesError(f"transformer: d_model ({d_model}) must be even and divisible by "
                              f"nhead ({nhead})")
        self.proj = nn.Linear(input_size, d_model)
        layer = nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward or 2 * d_model, dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(d_model, num_classes)

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = step_mask(lengths.to(x.device), x.shape[1])
        h = self.proj(x) + sinusoids(x.shape[1], self.proj.out_features, x.device)
        h = self.norm(self.encoder(h, src_key_padding_mask=~valid))
        if not self.framewise:
            w = valid.unsqueeze(-1).to(h.dtype)
            h = (h * w).sum(1) / w.sum(1).clamp(min=1)
        return self.dropout(h)


@register_model("transformer")
def transformer(input_size: int, num_classes: int, framewise: bool = False, d_model: int = 64,
                nhead: int = 4, num_layers: int = 2, dim_feedforward: int | None = None,
                dropout: float = 0.1) -> TransformerEncoder:
    """Transformer encoder (sinusoidal positions, padding mask, masked mean pooling)."""
    return TransformerEncoder(input_size, num_classes, framewise, d_model=d_model, nhead=nhead,
                              num_layers=num_layers, dim_feedforward=dim_feedforward,
                              dropout=dropout)
