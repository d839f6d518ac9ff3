"""Gradient-trained recurrent baselines: Elman RNN, LSTM, GRU and the seed's SimpleRNN/DeepRNN."""

from __future__ import annotations

import torch
from torch import nn

from . import register_model
from .base import SequenceModel


class Recurrent(SequenceModel):
    """A torch recurrent layer stack, read out at the last valid step (or every step)."""

    family = "recurrent"

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        framewise: bool = False,
        *,
        cell: str = "lstm",
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_size, num_classes, framewise)
        layer = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.rnn = layer(
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(hidden_size, num_classes)

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # Causal: steps after a sequence's end cannot reach its last valid output.
        h, _ = self.rnn(x)
        return self.dropout(self.pick(h, lengths))

    def init_state(self, batch: int, window: int | None = None, stride: int = 1) -> None:  # noqa: ARG002
        return None  # the torch layer's own zero state

    def step(self, x_t: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        h, state = self.rnn(x_t[:, None], state)
        return self.readout(self.dropout(h[:, 0])), state


@register_model("rnn")
def rnn(input_size: int, num_classes: int, framewise: bool = False, hidden_size: int = 128,
        num_layers: int = 1, dropout: float = 0.0) -> Recurrent:
    """Elman RNN (tanh), trained by backpropagation through time."""
    return Recurrent(input_size, num_classes, framewise, cell="rnn", hidden_size=hidden_size,
                     num_layers=num_layers, dropout=dropout)


@register_model("lstm")
def lstm(input_size: int, num_classes: int, framewise: bool = False, hidden_size: int = 128,
         num_layers: int = 1, dropout: float = 0.0) -> Recurrent:
    """LSTM, trained by backpropagation through time."""
    return Recurrent(input_size, num_classes, framewise, cell="lstm", hidden_size=hidden_size,
                     num_layers=num_layers, dropout=dropout)


@register_model("gru")
def gru(input_size: int, num_classes: int, framewise: bool = False, hidden_size: int = 128,
        num_layers: int = 1, dropout: float = 0.0) -> Recurrent:
    """GRU, trained by backpropagation through time."""
    return Recurrent(input_size, num_classes, framewise, cell="gru", hidden_size=hidden_size,
                     num_layers=num_layers, dropout=dropout)


@register_model("simple_rnn")
def simple_rnn(input_size: int, num_classes: int, framewise: bool = False,
               hidden_size: int = 256) -> Recurrent:
    """The seed's SimpleRNN baseline: input → LSTM(256) → fully connected."""
    return Recurrent(input_size, num_classes, framewise, cell="lstm", hidden_size=hidden_size)


@register_model("deep_rnn")
def deep_rnn(input_size: int, num_classes: int, framewise: bool = False, hidden_size: int = 256,
             num_layers: int = 3, dropout: float = 0.3) -> Recurrent:
    """The seed's DeepRNN: 2–4 stacked LSTM layers with dropout between them."""
    if not 2 <= num_layers <= 4:
        from ..errors import EchoesError

        raise EchoesError(f"deep_rnn takes num_layers between 2 and 4, got {num_layers}")
    return Recurrent(input_size, num_classes, framewise, cell="lstm", hidden_size=hidden_size,
                     num_layers=num_layers, dropout=dropout)
