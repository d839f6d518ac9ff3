"""The order-blind baseline: average the steps, then classify.

``mean_pool`` sees which features occur in a sequence but not when; a temporal
model that beats it is using the order of the steps. On framewise tasks each
step is classified on its own (no context at all).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from . import Options, register_model
from .base import SequenceModel, masked_mean


class MeanPoolOptions(Options):
    """Hyperparameters of the order-blind baseline."""

    hidden_size: int = Field(0, ge=0, description="units of a ReLU hidden layer before the readout (0: none)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the readout")


class MeanPool(SequenceModel):
    """Order-blind baseline: average of the steps' features, then a (hidden +) linear readout."""

    family = "pooling"

    def __init__(self, input_size: int, num_classes: int, framewise: bool, *, hidden_size: int,
                 dropout: float) -> None:
        super().__init__(input_size, num_classes, framewise)
        self.hidden = (nn.Sequential(nn.Linear(input_size, hidden_size), nn.ReLU())
                       if hidden_size else nn.Identity())
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(hidden_size or input_size, num_classes)

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.framewise:
            x = masked_mean(x, lengths)
        return self.dropout(self.hidden(x))


register_model("mean_pool", options=MeanPoolOptions)(MeanPool)
