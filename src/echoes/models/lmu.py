"""Legendre Memory Units (Voelker, Kajić & Eliasmith, NeurIPS 2019) and the parallel LMU.

The memory m (order d per channel) holds the Legendre coefficients of its input
u over a sliding window of θ steps: θ ṁ = A m + B u with

    A_ij = (2i+1) · (-1 if i < j else (-1)^(i-j+1)),    B_i = (2i+1) · (-1)^i,

discretised by zero-order hold into frozen Ā, B̄. The ``lmu`` cell (paper eqs. 4-6):

    u_t = e_xᵀ x_t + e_hᵀ h_{t-1} + e_mᵀ m_{t-1}
    m_t = Ā m_{t-1} + B̄ u_t
    h_t = tanh(W_x x_t + W_h h_{t-1} + W_m m_t)

``lmu_fft`` (Chilkuri & Eliasmith 2021) drops the feedback into u and h, so the
memory depends only on the input: m_t = Σ_k Āᵏ B̄ u_{t-k}, one causal convolution
with the impulse response, computed for all steps at once by FFT.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ..errors import EchoesError
from . import Options, register_model
from .base import SequenceModel, masked_mean


def legendre_delay(order: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Continuous-time (A [d,d], B [d]) of the delay system, already divided by θ."""
    if order < 1 or theta <= 0:
        raise EchoesError(f"LMU needs order >= 1 and theta > 0, got order={order}, theta={theta}")
    i, j = np.arange(order)[:, None], np.arange(order)[None, :]
    A = (2 * i + 1) * np.where(i < j, -1.0, (-1.0) ** (i - j + 1))
    B = (2 * np.arange(order) + 1) * (-1.0) ** np.arange(order)
    return A / theta, B / theta


def zero_order_hold(A: np.ndarray, B: np.ndarray, dt: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Exact discretisation for inputs held constant over each step: Ā = e^{A dt}, B̄ = ∫ e^{As} ds B."""
    from scipy.linalg import expm

    d = len(B)
    M = np.zeros((d + 1, d + 1))
    M[:d, :d], M[:d, d] = A * dt, B * dt
    E = expm(M)
    return E[:d, :d], E[:d, d]


class LegendreMemory(nn.Module):
    """The frozen linear memory: q channels, each of order d, stepped or convolved."""

    def __init__(self, order: int, theta: float, dt: float = 1.0) -> None:
        super().__init__()
        self.order, self.theta = order, theta
        Ab, Bb = zero_order_hold(*legendre_delay(order, theta), dt)
        self.register_buffer("A", torch.tensor(Ab, dtype=torch.float32))  # Ā
        self.register_buffer("B", torch.tensor(Bb, dtype=torch.float32))  # B̄
        self._impulse: torch.Tensor | None = None  # Āᵏ B̄ for k < len, computed in float64 once

    def step(self, m: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """m [B,q,d], u [B,q] → Ā m + B̄ u."""
        return m @ self.A.T + u[..., None] * self.B

    def scan(self, u: torch.Tensor) -> torch.Tensor:
        """u [B,T,q] → memories [B,T,q,d], one step at a time (the reference)."""
        m = u.new_zeros(*u.shape[::2], self.order)
        out = []
        for t in range(u.shape[1]):
            m = self.step(m, u[:, t])
            out.append(m)
        return torch.stack(out, 1)

    def impulse_response(self, steps: int) -> torch.Tensor:
        """H [steps, d] with H_k = Āᵏ B̄."""
        if self._impulse is None or len(self._impulse) < steps:
            A, h = self.A.double().cpu(), self.B.double().cpu()
            rows = []
            for _ in range(max(steps, 2 * len(self._impulse) if self._impulse is not None else 0)):
                rows.append(h)
                h = A @ h
            self._impulse = torch.stack(rows)
        return self._impulse[:steps]

    def convolve(self, u: torch.Tensor) -> torch.Tensor:
        """u [B,T,q] → memories [B,T,q,d] by FFT: all steps in parallel, equal to :meth:`scan`.

        At least float32 even under autocast: a half-precision FFT (complex half) is experimental
        in PyTorch and too coarse for a memory that sums hundreds of steps."""
        t = u.shape[1]
        n = 1 << (2 * t - 1).bit_length()
        with torch.autocast(u.device.type, enabled=False):
            u = u.float() if u.dtype in (torch.float16, torch.bfloat16) else u
            H = torch.fft.rfft(self.impulse_response(t).to(u.device, u.dtype), n=n, dim=0)  # [n/2+1, d]
            U = torch.fft.rfft(u, n=n, dim=1)  # [B, n/2+1, q]
            return torch.fft.irfft(U[..., None] * H[None, :, None, :], n=n, dim=1)[:, :t]


class MemoryOptions(Options):
    """Hyperparameters of both LMUs."""

    hidden_size: int = Field(128, ge=1, description="hidden units")
    order: int = Field(16, ge=1, description="Legendre coefficients per memory channel (d)")
    theta: float = Field(32.0, gt=0, description="length of the remembered window, in steps (θ)")
    memory_channels: int = Field(1, ge=1, description="input projections remembered (q)")


class LMUOptions(MemoryOptions):
    """The stepped LMU's feedback into the memory's input."""

    hidden_to_memory: bool = Field(True, description="the hidden state feeds the memory's input (e_h)")
    memory_to_memory: bool = Field(True, description="the memory feeds its own input (e_m)")


class LMUFFTOptions(MemoryOptions):
    """The parallel LMU's readout of the steps."""

    pooling: Literal["mean", "last"] = Field(
        "mean", description="one label per sequence: hidden layer averaged over the steps, or the last step's "
        "(which sees only the last θ steps)")


class LMU(SequenceModel):
    """The LMU cell of Voelker et al. (2019), stepped through time."""

    family = "lmu"

    def __init__(self, input_size: int, num_classes: int, framewise: bool, *, hidden_size: int, order: int,
                 theta: float, memory_channels: int, hidden_to_memory: bool, memory_to_memory: bool) -> None:
        super().__init__(input_size, num_classes, framewise)
        self.memory = LegendreMemory(order, theta)
        q, dm = memory_channels, memory_channels * order
        self.q, self.hidden_size = q, hidden_size
        self.e_x = nn.Linear(input_size, q, bias=False)
        self.e_h = nn.Linear(hidden_size, q, bias=False) if hidden_to_memory else None
        self.e_m = nn.Linear(dm, q, bias=False) if memory_to_memory else None
        self.W_x = nn.Linear(input_size, hidden_size)
        self.W_h = nn.Linear(hidden_size, hidden_size, bias=False)
        self.W_m = nn.Linear(dm, hidden_size, bias=False)
        # The paper's initialisation: LeCun-uniform input encoder, zero feedback encoders.
        nn.init.uniform_(self.e_x.weight, -math.sqrt(3 / input_size), math.sqrt(3 / input_size))
        for enc in (self.e_h, self.e_m):
            if enc is not None:
                nn.init.zeros_(enc.weight)
        for w in (self.W_x, self.W_h, self.W_m):
            nn.init.xavier_normal_(w.weight)
        nn.init.zeros_(self.W_x.bias)
        self.readout = nn.Linear(hidden_size, num_classes)

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        ux, hx = self.e_x(x), self.W_x(x)  # input terms for all steps at once
        h = x.new_zeros(b, self.hidden_size)
        m = x.new_zeros(b, self.q, self.memory.order)
        hs = []
        for step in range(t):
            u = ux[:, step]
            if self.e_h is not None:
                u = u + self.e_h(h)
            if self.e_m is not None:
                u = u + self.e_m(m.flatten(1))
            m = self.memory.step(m, u)
            h = torch.tanh(hx[:, step] + self.W_h(h) + self.W_m(m.flatten(1)))
            hs.append(h)
        return self.pick(torch.stack(hs, 1), lengths)

    def init_state(self, batch: int, window: int | None = None, stride: int = 1  # noqa: ARG002
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        like = self.W_h.weight
        return like.new_zeros(batch, self.hidden_size), like.new_zeros(batch, self.q, self.memory.order)

    def step(self, x_t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        h, m = state
        u = self.e_x(x_t)
        if self.e_h is not None:
            u = u + self.e_h(h)
        if self.e_m is not None:
            u = u + self.e_m(m.flatten(1))
        m = self.memory.step(m, u)
        h = torch.tanh(self.W_x(x_t) + self.W_h(h) + self.W_m(m.flatten(1)))
        return self.readout(h), (h, m)


class LMUFFT(SequenceModel):
    """The parallel LMU: memory of the encoded input by FFT convolution, then a feed-forward hidden layer.

    With no recurrent hidden state, step t sees only the last θ steps: for one label per sequence
    ``pooling="mean"`` averages the hidden layer over the valid steps (``"last"``: the last step's).
    """

    family = "lmu"

    def __init__(self, input_size: int, num_classes: int, framewise: bool, *, hidden_size: int, order: int,
                 theta: float, memory_channels: int, pooling: str) -> None:
        super().__init__(input_size, num_classes, framewise)
        self.pooling = pooling
        self.memory = LegendreMemory(order, theta)
        self.e_x = nn.Linear(input_size, memory_channels, bias=False)
        nn.init.uniform_(self.e_x.weight, -math.sqrt(3 / input_size), math.sqrt(3 / input_size))
        self.hidden = nn.Linear(input_size + memory_channels * order, hidden_size)
        self.readout = nn.Linear(hidden_size, num_classes)

    def memories(self, x: torch.Tensor) -> torch.Tensor:
        """[B,T,q,d]: every step's memory, in parallel."""
        return self.memory.convolve(self.e_x(x))

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        m = self.memories(x).flatten(2)
        h = torch.tanh(self.hidden(torch.cat([x, m], -1)))
        if self.framewise or self.pooling == "last":
            return self.pick(h, lengths)
        return masked_mean(h, lengths)

    def init_state(self, batch: int, window: int | None = None, stride: int = 1  # noqa: ARG002
                   ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(memory, running sum of the hidden layer, steps so far): the sum serves mean pooling."""
        zeros = self.e_x.weight.new_zeros
        return zeros(batch, self.e_x.out_features, self.memory.order), zeros(batch, self.hidden.out_features), 0

    def step(self, x_t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor, int]
             ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, int]]:
        """The recurrent form of the convolution: m_t = Ā m_{t-1} + B̄ u_t."""
        m, total, steps = state
        m = self.memory.step(m, self.e_x(x_t))
        h = torch.tanh(self.hidden(torch.cat([x_t, m.flatten(1)], -1)))
        total, steps = total + h, steps + 1
        mean = not self.framewise and self.pooling == "mean"
        return self.readout(total / steps if mean else h), (m, total, steps)


register_model("lmu", options=LMUOptions, doc="Legendre Memory Unit (Voelker et al. 2019): order-d Legendre "
               "memory over θ steps + tanh hidden.")(LMU)
register_model("lmu_fft", options=LMUFFTOptions, doc="Parallel LMU: memory depends only on the input, computed "
               "for all steps by FFT convolution.")(LMUFFT)
