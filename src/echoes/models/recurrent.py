"""Gradient-trained recurrent baselines: Elman RNN, LSTM, GRU and the seed's SimpleRNN/DeepRNN."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from . import Options, register_model
from .base import SequenceModel, masked_mean


class RecurrentOptions(Options):
    """Hyperparameters of the recurrent family."""

    hidden_size: int = Field(128, ge=1, description="units per layer")
    num_layers: int = Field(1, ge=1, description="stacked layers")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout between layers and before the readout")
    pooling: Literal["last", "mean", "last_mean"] = Field(
        "last_mean", description="what the readout sees per sequence: the last step's output, the mean over "
        "steps, or both (framewise tasks: every step's)")


class LSTMOptions(RecurrentOptions):
    """The LSTM cells' options."""

    forget_bias: float = Field(
        1.0, description="added to the forget gates' initial bias: 1 keeps the cells' memory at the start of "
        "training (Jozefowicz et al. 2015; Keras's unit_forget_bias); 0 is torch's init")


LSTM_LR = 1e-3  # the LSTM's train.lr=auto


class Recurrent(SequenceModel):
    """A torch recurrent layer stack, read out at the last valid step, the mean over steps, or both (framewise:
    every step). The mean gives every step a direct path to the loss: on synthetic:recall it lifts the LSTM
    from 0.47 to 0.90 (BENCHMARKS.md)."""

    family = "recurrent"

    def __init__(self, input_size: int, num_classes: int, framewise: bool, *, cell: Literal["rnn", "lstm", "gru"],
                 hidden_size: int, num_layers: int, dropout: float, pooling: str, forget_bias: float = 0.0) -> None:
        super().__init__(input_size, num_classes, framewise)
        if cell == "lstm":  # measured on 7 sets: +7 to +17 points on GunPoint, ArrowHead, recall (BENCHMARKS.md)
            self.default_lr = LSTM_LR
        layer = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = layer(
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        if cell == "lstm":  # gates i, f, g, o
            with torch.no_grad():
                for k in range(num_layers):
                    getattr(self.rnn, f"bias_ih_l{k}")[hidden_size:2 * hidden_size] += forget_bias
        self.dropout = nn.Dropout(dropout)
        self.pooling = "last" if framewise else pooling
        self.readout = nn.Linear(hidden_size * (2 if self.pooling == "last_mean" else 1), num_classes)

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Causal: steps after a sequence's end cannot reach its last valid output (nor the mean over valid steps).
        h, _ = self.rnn(x)
        return self.dropout(self.read(self.pick(h, lengths), lambda: masked_mean(h, lengths)))

    def read(self, last: torch.Tensor, mean: Callable[[], torch.Tensor]) -> torch.Tensor:
        """The readout's input from the last output and (called only when needed) the mean over steps."""
        if self.pooling == "last":
            return last
        return mean() if self.pooling == "mean" else torch.cat([last, mean()], -1)

    def init_state(self, batch: int, window: int | None = None, stride: int = 1) -> tuple:  # noqa: ARG002
        return None, 0.0, 0  # the torch layer's own zero state, the sum of the outputs so far, steps seen

    def step(self, x_t: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        rnn_state, total, seen = state
        h, rnn_state = self.rnn(x_t[:, None], rnn_state)
        total, seen = total + h[:, 0], seen + 1
        return self.readout(self.dropout(self.read(h[:, 0], lambda: total / seen))), (rnn_state, total, seen)


class DeepRNNOptions(LSTMOptions):
    """The seed's DeepRNN keeps 2–4 layers."""

    num_layers: int = Field(3, ge=2, le=4, description="stacked LSTM layers")


register_model("rnn", options=RecurrentOptions, cell="rnn",
               doc="Elman RNN (tanh), trained by backpropagation through time.")(Recurrent)
register_model("lstm", options=LSTMOptions, cell="lstm",
               doc="LSTM, trained by backpropagation through time.")(Recurrent)
register_model("gru", options=RecurrentOptions, cell="gru",
               doc="GRU, trained by backpropagation through time.")(Recurrent)
register_model("simple_rnn", options=LSTMOptions, cell="lstm", hidden_size=256,
               doc="The seed's SimpleRNN baseline: input → LSTM(256) → fully connected.")(Recurrent)
register_model("deep_rnn", options=DeepRNNOptions, cell="lstm", hidden_size=256, dropout=0.3,
               doc="The seed's DeepRNN: 2–4 stacked LSTM layers with dropout between them.")(Recurrent)
