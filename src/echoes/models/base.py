"""What every model shares: ``forward(x, lengths) -> logits`` = readout(features).

``features`` returns ``[B, D]`` (one vector per sequence) or ``[B, T, D]``
(framewise tasks); ``readout`` is a linear layer, so closed-form learners such
as ridge can fit it for any model. Padded steps must never change an output.
"""

from __future__ import annotations

import torch
from torch import nn


def last_step(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``h[b, lengths[b]-1]`` for every sequence b: the last valid step."""
    idx = (lengths.to(h.device).long() - 1).clamp(min=0)
    return h[torch.arange(h.shape[0], device=h.device), idx]


def step_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """[B, T] bool, True on valid steps."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


class SequenceModel(nn.Module):
    """Base class: subclasses set ``family``, build ``readout`` and define ``features``."""

    family: str = "other"
    default_learner: str = "gradient"
    readout: nn.Module

    def __init__(self, input_size: int, num_classes: int, framewise: bool = False) -> None:
        super().__init__()
        self.input_size = input_size
        self.num_classes = num_classes
        self.framewise = framewise
        self.name = type(self).__name__.lower()

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x, lengths))

    def regularization_loss(self) -> torch.Tensor | None:
        """A term the gradient learner adds to the loss, from the last forward pass (None: none)."""
        return None

    def pick(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Per-step states [B,T,D] → what the readout sees for this task."""
        return h if self.framewise else last_step(h, lengths)

    def parameter_counts(self) -> tuple[int, int]:
        """(trainable, total). Total includes fixed weights held as buffers (reservoirs)."""
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        fixed = sum(p.numel() for p in self.parameters() if not p.requires_grad)
        fixed += sum(
            b.numel()
            for name, b in self.named_buffers()
            if b.is_floating_point() and not name.rsplit(".", 1)[-1].startswith("running_")
        )
        return trainable, trainable + fixed


class AveragedReadout(nn.Module):
    """One linear readout per consecutive block of the features, outputs averaged (ensembles).

    Closed-form learners fit each member's ``nn.Linear`` on its own block.
    """

    def __init__(self, sizes: list[int], num_classes: int) -> None:
        super().__init__()
        self.sizes = list(sizes)
        self.members = nn.ModuleList(nn.Linear(d, num_classes) for d in self.sizes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        blocks = features.split(self.sizes, dim=-1)
        return torch.stack([m(f) for m, f in zip(self.members, blocks, strict=True)]).mean(0)


def reverse_valid(z: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each sequence's valid steps in reverse order, padding left at the end; [B, T, ...]. Its own inverse."""
    t = torch.arange(z.shape[1], device=z.device)[None, :]
    last = lengths.to(z.device)[:, None] - 1
    idx = torch.where(t <= last, last - t, t)
    return z.gather(1, idx.view(*idx.shape, *([1] * (z.dim() - 2))).expand_as(z))


def masked_mean(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, T, D] → [B, D]: the mean over each sequence's valid steps."""
    w = step_mask(lengths.to(h.device), h.shape[1]).unsqueeze(-1).to(h.dtype)
    return (h * w).sum(1) / w.sum(1).clamp(min=1)
