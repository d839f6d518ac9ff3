"""Several label heads that look at each other: the seed's cross-task attention (EPIC-KITCHENS phase 3).

Per-frame features ``[B, T, F]`` → input projection + sinusoidal positions → a shared multi-scale
temporal encoder (one encoder layer per window of 4, 8 and 16 frames, run side by side, each step
attending only to the steps of its window; their outputs concatenated and mixed back to ``d_model``)
→ one branch per label head (an encoder layer of its own: verb, noun) → bidirectional cross-attention
(each head's steps attend to the other heads' steps: the verb branch reads the noun branch and the
noun branch the verb branch, both from what the branches were before the exchange) → per head a
masked mean over the valid steps (or every step, framewise) and a linear readout; the heads' logits
side by side, in head order (:mod:`echoes.data.heads`).

``cross=False`` (registered as ``independent_heads``) is the same network without the exchange:
each head's logits depend on the shared encoder and its own branch only — the ablation that says
whether modelling the verb–noun interaction helps. With one head there is one branch and nothing to
attend to. Padded steps never change an output: they are never a key of a valid step.
"""

from __future__ import annotations

import torch
from pydantic import Field, model_validator
from torch import nn

from . import Options, register_model
from .attention import EncoderLayer, sinusoids
from .base import DropPath, SequenceModel, masked_mean, step_mask


class CrossAttentionOptions(Options):
    """Hyperparameters of the cross-task attention model."""

    d_model: int = Field(64, ge=2, description="width of every layer (even, divisible by nhead)")
    nhead: int = Field(4, ge=1, description="attention heads in every layer")
    windows: list[int] = Field([4, 8, 16], description="temporal scales: frames each step sees")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout in every layer and before the readouts")
    drop_path: float = Field(0.1, ge=0, lt=1, description="stochastic depth on every residual branch")
    cross: bool = Field(True, description="the heads' branches attend to each other (false: independent heads)")

    @model_validator(mode="after")
    def _consistent(self) -> CrossAttentionOptions:
        if self.d_model % self.nhead or self.d_model % 2:
            raise ValueError(f"d_model ({self.d_model}) must be even and divisible by nhead ({self.nhead}) — "
                             "change model.d_model or model.nhead")
        if not self.windows or min(self.windows) < 1:
            raise ValueError(f"windows must be one or more sizes in frames (>= 1), got {self.windows} — "
                             "e.g. model.windows=[4, 8, 16]")
        return self


def window_mask(valid: torch.Tensor, window: int, nhead: int) -> torch.Tensor:
    """[B·nhead, T, T] bool, True where a query step may NOT attend: outside its window of ``window``
    steps (centred), or a padded key. A step always sees itself, so no row is empty (an empty row
    would give NaN, which attention weights of zero cannot hold back)."""
    t = valid.shape[1]
    offset = torch.arange(t, device=valid.device)[None, :] - torch.arange(t, device=valid.device)[:, None]
    inside = (offset >= -(window // 2)) & (offset < window - window // 2)  # [T(query), T(key)]
    allowed = inside[None] & (valid[:, None, :] | torch.eye(t, dtype=torch.bool, device=valid.device)[None])
    return (~allowed).repeat_interleave(nhead, 0)


class CrossAttend(nn.Module):
    """Pre-norm cross-attention with a residual: ``q + drop_path(attention(q → kv))``."""

    def __init__(self, d_model: int, nhead: int, dropout: float, drop_path: float) -> None:
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.drop_path = DropPath(drop_path)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_padded: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(kv)
        out = self.attn(self.norm_q(q), kv, kv, key_padding_mask=kv_padded, need_weights=False)[0]
        return q + self.drop_path(out)


class HeadReadouts(nn.Module):
    """One linear readout per head, each on its own block of the features; logits side by side."""

    def __init__(self, d_model: int, heads: tuple[int, ...]) -> None:
        super().__init__()
        self.d_model = d_model
        self.heads = nn.ModuleList(nn.Linear(d_model, c) for c in heads)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        blocks = features.split(self.d_model, dim=-1)
        return torch.cat([r(f) for r, f in zip(self.heads, blocks, strict=True)], -1)


class CrossAttention(SequenceModel):
    """Shared multi-scale temporal encoder, a branch per label head, bidirectional cross-attention."""

    family = "multitask"

    def __init__(self, input_size: int, num_classes: int, framewise: bool, *, heads: tuple[int, ...] = (),
                 d_model: int, nhead: int, windows: list[int], dropout: float, drop_path: float,
                 cross: bool) -> None:
        super().__init__(input_size, num_classes, framewise)
        heads = tuple(heads) or (num_classes,)
        self.nhead, self.windows = nhead, list(windows)
        self.proj = nn.Linear(input_size, d_model)
        self.scales = nn.ModuleList(EncoderLayer(d_model, nhead, 2 * d_model, dropout, drop_path) for _ in windows)
        self.fuse = nn.Linear(len(windows) * d_model, d_model)
        self.branches = nn.ModuleList(EncoderLayer(d_model, nhead, 2 * d_model, dropout, drop_path) for _ in heads)
        self.cross = (nn.ModuleList(CrossAttend(d_model, nhead, dropout, drop_path) for _ in heads)
                      if cross and len(heads) > 1 else None)
        self.norms = nn.ModuleList(nn.LayerNorm(d_model) for _ in heads)
        self.dropout = nn.Dropout(dropout)
        self.readout = HeadReadouts(d_model, heads)

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, H·d_model] (framewise: [B, T, H·d_model]): each head's block for its own readout."""
        valid = step_mask(lengths.to(x.device), x.shape[1])
        h = self.dropout(self.proj(x) + sinusoids(x.shape[1], self.proj.out_features, x.device))
        h = self.fuse(torch.cat([layer(h, src_mask=window_mask(valid, w, self.nhead))
                                 for layer, w in zip(self.scales, self.windows, strict=True)], -1))
        branches = [b(h, src_key_padding_mask=~valid) for b in self.branches]
        if self.cross is not None:  # each head reads the others' steps (their padded steps masked)
            padded = ~valid
            branches = [attend(z, torch.cat([o for j, o in enumerate(branches) if j != i], 1),
                               padded.repeat(1, len(branches) - 1))
                        for i, (attend, z) in enumerate(zip(self.cross, branches, strict=True))]
        return torch.cat([self.dropout(n(self.pick(z, lengths))) for n, z in zip(self.norms, branches, strict=True)],
                         -1)

    def pick(self, h: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Every step (framewise) or the mean of the valid steps."""
        return h if self.framewise else masked_mean(h, lengths)


register_model("cross_attention", options=CrossAttentionOptions)(CrossAttention)
register_model("independent_heads", options=CrossAttentionOptions, cross=False, doc=(
    "cross_attention without the exchange between heads: the same encoder, independent verb / noun "
    "branches (the ablation)."))(CrossAttention)
