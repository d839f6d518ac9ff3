"""What every model shares: ``forward(x, lengths) -> logits`` = readout(features).

``features`` returns ``[B, D]`` (one vector per sequence) or ``[B, T, D]``
(framewise tasks); ``readout`` is a linear layer, so closed-form learners such
as ridge can fit it for any model. Padded steps must never change an output.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


def last_step(h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``h[b, lengths[b]-1]`` for every sequence b: the last valid step."""
    idx = (lengths.to(h.device).long() - 1).clamp(min=0)
    return h[torch.arange(h.shape[0], device=h.device), idx]


def step_mask(lengths: torch.Tensor, t: int) -> torch.Tensor:
    """[B, T] bool, True on valid steps."""
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]


# --- streaming: one step at a time ------------------------------------------------------------

DEFAULT_WINDOW = 16  # steps a sliding window keeps when neither the caller nor the config says


@dataclass
class WindowState:
    """The last ``window`` steps of a stream, and the logits of the last re-read."""

    window: int
    stride: int
    steps: deque = field(default_factory=deque)
    seen: int = 0
    logits: torch.Tensor | None = None


def init_window(batch: int, window: int | None = None, stride: int = 1) -> WindowState:  # noqa: ARG001
    """A sliding window: ``window`` steps (default 16) re-read every ``stride`` steps."""
    window = DEFAULT_WINDOW if window is None else int(window)
    if window < 1 or stride < 1:
        raise ValueError(f"a sliding window needs window >= 1 and stride >= 1, got {window}, {stride}")
    return WindowState(window, int(stride), deque(maxlen=window))


def step_window(model: nn.Module, x_t: torch.Tensor, state: WindowState) -> tuple[torch.Tensor, WindowState]:
    """Add one step ``[B, F]``; at the first step and every ``stride`` steps run ``model`` over the window
    (its last step's logits when framewise), in between repeat the last logits. With ``stride`` equal to
    ``window`` the windows tile the stream (steps 1–W, W+1–2W, ...)."""
    state.steps.append(x_t)
    state.seen += 1
    if state.logits is None or state.seen % state.stride == 0:
        x = torch.stack(tuple(state.steps), 1)
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
        logits = model(x, lengths)
        state.logits = logits[:, -1] if logits.dim() == 3 else logits
    return state.logits, state


class SequenceModel(nn.Module):
    """Base class: subclasses set ``family``, build ``readout`` and define ``features``."""

    family: str = "other"
    default_learner: str = "gradient"
    default_lr: float = 3e-3  # the learning rate train.lr=auto gives this model (gradient learners)
    readout: nn.Module

    def __init__(self, input_size: int, num_classes: int, framewise: bool = False) -> None:
        super().__init__()
        self.input_size = input_size
        self.num_classes = num_classes
        self.framewise = framewise
        self.head_sizes: tuple[int, ...] = (num_classes,)  # classes per label head (create_model sets them)
        self.name = type(self).__name__.lower()

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.readout(self.features(x, lengths))

    def regularization_loss(self) -> torch.Tensor | None:
        """A term the gradient learner adds to the loss, from the last forward pass (None: none)."""
        return None

    # Streaming: logits after every step, for live sources. The default re-reads a sliding window of
    # the last steps; families with a recurrent state override both methods and are exact.
    def init_state(self, batch: int, window: int | None = None, stride: int = 1) -> Any:
        """The state before the first step of ``batch`` streams (``window``/``stride``: sliding-window models)."""
        return init_window(batch, window, stride)

    def step(self, x_t: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """One step ``x_t`` [B, F] → (logits [B, C] as the full forward pass would give them now, the state).

        The state may be updated in place: keep using the one returned."""
        return step_window(self, x_t, state)

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


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016) on a residual branch: in training, each sample's branch
    output is dropped with probability ``p`` and kept ones are scaled by 1/(1-p), so the expected
    output is unchanged; in evaluation it is the identity. Wrap the branch, not the sum."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"drop path probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(1 - self.p)  # one draw per sample
        return x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


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
