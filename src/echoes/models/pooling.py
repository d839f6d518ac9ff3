"""The order-blind baseline: average the steps, then classify.

``mean_pool`` sees which features occur in a sequence but not when; a temporal
model that beats it is using the order of the steps. On framewise tasks each
step is classified on its own (no context at all).
"""

from __future__ import annotations

import torch
from torch import nn

from . import register_model
from .base import SequenceModel, step_mask


class MeanPool(SequenceModel):
    """Mean of the valid steps → optional hidden layer → linear readout."""

    family = "pooling"

    def __init__(self, input_size: int, num_classes: int, framewise: bool = False, *,
                 hidden_size: int = 0, dropout: float = 0.0) -> None:
        super().__init__(input_size, num_classes, framewise)
        self.hidden = (nn.Sequential(nn.Linear(input_size, hidden_size), nn.ReLU())
                       if hidden_size else nn.Identity())
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(hidden_size or input_size, num_classes)

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.framewise:
            w = step_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1).to(x.dtype)
            x = (x * w).sum(1) / w.sum(1).clamp(min=1)
        return self.dropout(self.hidden(x))


@register_model("mean_pool")
def mean_pool(input_size: int, num_classes: int, framewise: bool = False, hidden_size: int = 0,
              dropout: float = 0.0) -> MeanPool:
    """Order-blind baseline: average of the steps' features, then a (hidden +) linear readout."""
    return MeanPool(input_size, num_classes, framewise, hidden_size=hidden_size, dropout=dropout)
