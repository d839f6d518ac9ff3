"""Transformer encoder over a sequence of feature vectors (e.g. per-frame CNN features).

Input projection → sinusoidal positions → pre-norm encoder layers → mean over the
valid steps → linear readout (framewise tasks read every step). A key padding
mask keeps padded steps out of every attention, so they never change an output.
``drop_path`` (stochastic depth) drops each layer's attention and feed-forward
branches per sample in training, as the seed's phase-2 models do.
Positions matter: without them attention is blind to order, like ``mean_pool``.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field, model_validator
from torch import nn

from . import Options, register_model
from .base import DropPath, SequenceModel, masked_mean, step_mask


def sinusoids(t: int, dim: int, device: torch.device) -> torch.Tensor:
    """[t, dim] sine/cosine positions (Vaswani et al. 2017), for any length."""
    pos = torch.arange(t, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(t, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return pe


class TransformerOptions(Options):
    """Hyperparameters of the transformer encoder."""

    d_model: int = Field(64, ge=2, description="width of every layer (even, divisible by nhead)")
    nhead: int = Field(4, ge=1, description="attention heads")
    num_layers: int = Field(2, ge=1, description="encoder layers")
    dim_feedforward: int | None = Field(None, ge=1, description="feed-forward width (null: 2·d_model)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in every layer and before the readout")
    drop_path: float = Field(0.0, ge=0, lt=1, description="stochastic depth: chance a layer's branch is "
                                                           "skipped for a sample in training")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TransformerOptions:
        if self.d_model % self.nhead or self.d_model % 2:
            raise ValueError(f"d_model ({self.d_model}) must be even and divisible by nhead ({self.nhead}) — "
                             "change model.d_model or model.nhead")
        return self


class EncoderLayer(nn.TransformerEncoderLayer):
    """torch's pre-norm encoder layer with stochastic depth on its two residual branches (the same
    parameters, so weights load either way)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float, drop_path: float) -> None:
        super().__init__(d_model, nhead, dim_feedforward, dropout, batch_first=True, norm_first=True)
        self.drop_path = DropPath(drop_path)

    def _sa_block(self, x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        return self.drop_path(super()._sa_block(x, *args, **kwargs))

    def _ff_block(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop_path(super()._ff_block(x))


class TransformerEncoder(SequenceModel):
    """Transformer encoder (sinusoidal positions, padding mask, masked mean pooling)."""

    family = "attention"

    def __init__(self, input_size: int, num_classes: int, framewise: bool, *, d_model: int, nhead: int,
                 num_layers: int, dim_feedforward: int | None, dropout: float, drop_path: float) -> None:
        super().__init__(input_size, num_classes, framewise)
        self.proj = nn.Linear(input_size, d_model)
        layer = EncoderLayer(d_model, nhead, dim_feedforward or 2 * d_model, dropout, drop_path)
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(d_model, num_classes)

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        valid = step_mask(lengths.to(x.device), x.shape[1])
        h = self.proj(x) + sinusoids(x.shape[1], self.proj.out_features, x.device)
        h = self.norm(self.encoder(h, src_key_padding_mask=~valid))
        return self.dropout(h if self.framewise else masked_mean(h, lengths))


register_model("transformer", options=TransformerOptions)(TransformerEncoder)
