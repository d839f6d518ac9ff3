"""Spiking LSNN: LIF and adaptive (ALIF) neurons as in Bellec et al. (Nat. Commun. 2020).

Per step t, with α = exp(-dt/τ_m), ρ = exp(-dt/τ_a), κ = exp(-dt/τ_out):

    v_t = α v_{t-1} + W_in x_t + b + W_rec z_{t-1} − v_th z_{t-1}   (reset by subtraction)
    a_t = ρ a_{t-1} + z_{t-1}                                    (ALIF: β > 0; LIF: β = 0)
    z_t = H(v_t − v_th − β a_t), held at 0 for ``refractory`` steps after a spike
    ζ_t = κ ζ_{t-1} + z_t,   logits_t = W_out ζ_t + b            (leaky output readout)

Time constants are in the units of ``dt`` (default: one input step); ``refractory`` is in
steps and 0 by default, since a 10 ms TIMIT frame outlasts a neuron's refractory period.
W_rec has no self-connections. Gradients pass through the spike by the
pseudo-derivative ψ = γ/v_th · max(0, 1 − |v − A|/v_th) with dampening γ = 0.3;
the reset carries no gradient (as in the paper). Trained by BPTT (``learner=gradient``)
or online by e-prop (``learner=eprop``, the default). A firing-rate regulariser pulls
each neuron's mean rate towards ``target_rate`` (spikes per step).

The bias current b starts at 0 (Bellec's LSNN has none) and is trained like the
input weights. ``init=lmu`` sets W_in, W_rec and b of the LIF neurons so that the
network's linearised (rate) dynamics implement a Legendre memory (Voelker et al.
2019) of a projection P x of the input, built the way Nengo builds a spiking LMU:
encoders E (± one coefficient per neuron), gains G and bias currents from each
neuron's own rate curve (intercepts and max rates), regularised least-squares
decoders D (leave-one-out, as there are no self-connections): W_rec = G E Ā D,
W_in = G E B̄ P. ALIF neurons keep their random weights: adaptation would fight a
memory held by persistent activity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from ..errors import EchoesError
from . import Options, register_model
from .base import SequenceModel, last_step, reverse_valid, step_mask

DAMPENING = 0.3


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward; triangular pseudo-derivative γ·max(0, 1−|x|) backward (x = scaled voltage)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad * pseudo_derivative(x)


def pseudo_derivative(x: torch.Tensor) -> torch.Tensor:
    return DAMPENING * torch.clamp(1.0 - x.abs(), min=0.0)


@dataclass
class State:
    v: torch.Tensor  # membrane [B,H]
    a: torch.Tensor  # adaptation [B,H]
    z: torch.Tensor  # spikes of the last step [B,H]
    ref: torch.Tensor  # refractory steps left [B,H]


class SpikingLayer(nn.Module):
    """One recurrent population of LIF + ALIF neurons (ALIF first)."""

    def __init__(self, input_size: int, hidden_size: int, *, adaptive_fraction: float, dt: float,
                 tau_mem: float, tau_adapt: float, beta: float, threshold: float, refractory: int,
                 generator: torch.Generator) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.alpha = math.exp(-dt / tau_mem)
        self.rho = math.exp(-dt / tau_adapt)
        self.threshold = threshold
        self.refractory = refractory
        n_adaptive = round(adaptive_fraction * hidden_size)
        # Constants, not weights: kept as bool buffers so they follow the device but count as no parameter.
        self.register_buffer("adaptive", torch.arange(hidden_size) < n_adaptive)  # ALIF neurons first
        self.register_buffer("rec_mask", ~torch.eye(hidden_size, dtype=torch.bool))  # no self-connections
        self.beta_value = beta
        self.w_in = nn.Parameter(torch.randn(hidden_size, input_size, generator=generator) / math.sqrt(input_size))
        w_rec = torch.randn(hidden_size, hidden_size, generator=generator) / math.sqrt(hidden_size)
        self.w_rec = nn.Parameter(w_rec * self.rec_mask)
        self.bias = nn.Parameter(torch.zeros(hidden_size))  # input current at rest (set by init=lmu)

    @property
    def beta(self) -> torch.Tensor:
        """Adaptation strength per neuron: β for ALIF, 0 for LIF."""
        return self.adaptive * self.beta_value

    def initial_state(self, batch: int, like: torch.Tensor) -> State:
        zeros = like.new_zeros(batch, self.hidden_size)
        return State(zeros, zeros, zeros, zeros)

    def recurrent_weight(self) -> torch.Tensor:
        """(W_rec without self-connections)ᵀ, as a step multiplies the spikes by it."""
        return (self.w_rec * self.rec_mask).T

    def step(self, i_in: torch.Tensor, s: State, detach_recurrent: bool = False,
             w_rec: torch.Tensor | None = None) -> tuple[State, torch.Tensor]:
        """One step driven by the input current W_in x_t + b; returns the new state and (v − A)/v_th.

        ``w_rec``: :meth:`recurrent_weight`, when the caller computed it once for all steps.
        """
        z_rec = s.z.detach() if detach_recurrent else s.z
        w_rec = self.recurrent_weight() if w_rec is None else w_rec
        v = self.alpha * s.v + i_in + z_rec @ w_rec - self.threshold * s.z.detach()
        a = self.rho * s.a + s.z
        x = (v - self.threshold - self.beta * a) / self.threshold
        if not self.refractory:  # no neuron is ever held: skip the bookkeeping (ref stays 0)
            return State(v, a, SpikeFunction.apply(x), s.ref), x
        free = s.ref <= 0
        z = SpikeFunction.apply(x) * free
        ref = torch.where(z > 0, torch.full_like(s.ref, self.refractory), (s.ref - 1).clamp(min=0))
        return State(v, a, z, ref), x * free - 2.0 * (~free)  # refractory: ψ = 0 (x far below 0)

    def forward(self, x: torch.Tensor, detach_recurrent: bool = False) -> torch.Tensor:
        """x [B,T,F] → spikes [B,T,H]."""
        i_in = x @ self.w_in.T + self.bias
        s, w_rec = self.initial_state(x.shape[0], x), self.recurrent_weight()
        spikes = []
        for t in range(x.shape[1]):
            s, _ = self.step(i_in[:, t], s, detach_recurrent, w_rec)
            spikes.append(s.z)
        return torch.stack(spikes, 1)


def leaky_filter(z: torch.Tensor, kappa: float) -> torch.Tensor:
    """ζ_t = κ ζ_{t-1} + z_t over dim 1."""
    out, zeta = [], torch.zeros_like(z[:, 0])
    for t in range(z.shape[1]):
        zeta = kappa * zeta + z[:, t]
        out.append(zeta)
    return torch.stack(out, 1)


class LSNNOptions(Options):
    """Hyperparameters of the spiking LSNN (time constants in units of ``dt``)."""

    hidden_size: int = Field(200, ge=1, description="neurons (LIF + ALIF)")
    adaptive_fraction: float = Field(0.5, ge=0, le=1, description="share of adaptive (ALIF) neurons")
    dt: float = Field(1.0, gt=0, description="length of one input step")
    tau_mem: float = Field(5.0, gt=0, description="membrane time constant")
    tau_adapt: float = Field(50.0, gt=0, description="adaptation time constant of ALIF neurons")
    tau_out: float = Field(3.0, gt=0, description="time constant of the leaky readout")
    beta: float = Field(1.8, ge=0, description="threshold adaptation strength of ALIF neurons")
    threshold: float = Field(1.0, gt=0, description="firing threshold v_th")
    refractory: int = Field(0, ge=0, description="steps a neuron stays silent after a spike")
    target_rate: float = Field(0.05, ge=0, le=1, description="firing rate the regulariser pulls to (spikes/step)")
    rate_reg: float = Field(0.1, ge=0, description="weight of the firing-rate regulariser")
    bidirectional: bool = Field(False, description="a second population reads the sequence backwards")
    init: Literal["random", "lmu"] = Field("random", description="random weights, or LIF weights holding "
                                           "a Legendre memory")
    lmu_order: int = Field(6, ge=1, description="init=lmu: Legendre coefficients per channel")
    lmu_theta: float = Field(20.0, gt=0, description="init=lmu: remembered window, in dt units")
    lmu_channels: int = Field(1, ge=1, description="init=lmu: input projections remembered")
    seed: int = Field(0, description="draws the initial weights")


class LSNN(SequenceModel):
    """A recurrent network of LIF and ALIF spiking neurons with a leaky readout."""

    family = "spiking"
    default_learner = "eprop"

    def __init__(self, input_size: int, num_classes: int, framewise: bool, *, hidden_size: int,
                 adaptive_fraction: float, dt: float, tau_mem: float, tau_adapt: float, tau_out: float, beta: float,
                 threshold: float, refractory: int, target_rate: float, rate_reg: float, bidirectional: bool,
                 init: str, lmu_order: int, lmu_theta: float, lmu_channels: int, seed: int) -> None:
        super().__init__(input_size, num_classes, framewise)
        g = torch.Generator().manual_seed(seed)
        kw = dict(adaptive_fraction=adaptive_fraction, dt=dt, tau_mem=tau_mem, tau_adapt=tau_adapt,
                  beta=beta, threshold=threshold, refractory=refractory, generator=g)
        self.layers = nn.ModuleList([SpikingLayer(input_size, hidden_size, **kw)
                                     for _ in range(2 if bidirectional else 1)])
        if init == "lmu":
            rng = np.random.default_rng(seed)
            for layer in self.layers:
                lmu_init(layer, order=lmu_order, theta=lmu_theta / dt, channels=lmu_channels, rng=rng)
        self.kappa = math.exp(-dt / tau_out)
        self.target_rate, self.rate_reg = target_rate, rate_reg
        self.bidirectional = bidirectional
        self.detach_recurrent = False  # True: autodiff gives e-prop's gradient (no recurrent paths)
        self.readout = nn.Linear(hidden_size * len(self.layers), num_classes)
        self._rates: torch.Tensor | None = None

    def spikes(self, x: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
        """Spike trains [B,T,H] of each direction, aligned to the input's time."""
        out = [self.layers[0](x, self.detach_recurrent)]
        if self.bidirectional:
            back = self.layers[1](reverse_valid(x, lengths), self.detach_recurrent)
            out.append(reverse_valid(back, lengths))
        return out

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        trains = self.spikes(x, lengths)
        mask = step_mask(lengths.to(x.device), x.shape[1]).to(x.dtype)[..., None]
        z = torch.cat(trains, -1)
        self._rates = (z * mask).sum((0, 1)) / mask.sum().clamp(min=1)  # per neuron, over valid steps
        if self.bidirectional:
            # The backward pass reads the sequence from its end: filter in its own direction.
            fwd = leaky_filter(trains[0], self.kappa)
            bwd = reverse_valid(leaky_filter(reverse_valid(trains[1], lengths), self.kappa), lengths)
            if not self.framewise:
                return torch.cat([last_step(fwd, lengths), bwd[:, 0]], -1)
            return torch.cat([fwd, bwd], -1)
        return self.pick(leaky_filter(z, self.kappa), lengths)

    def init_state(self, batch: int, window: int | None = None, stride: int = 1) -> object:
        if self.bidirectional:  # reads the sequence from its end: only a sliding window can stream it
            return super().init_state(batch, window, stride)
        like = self.readout.weight
        return self.layers[0].initial_state(batch, like), like.new_zeros(batch, self.layers[0].hidden_size)

    def step(self, x_t: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        """One step of the neurons and of the readout's leaky trace ζ."""
        if self.bidirectional:
            return super().step(x_t, state)
        layer, (s, zeta) = self.layers[0], state
        s, _ = layer.step(x_t @ layer.w_in.T + layer.bias, s)
        zeta = self.kappa * zeta + s.z
        return self.readout(zeta), (s, zeta)

    def regularization_loss(self) -> torch.Tensor | None:
        """rate_reg · Σ_j (mean rate_j − target)², from the last forward pass."""
        if self._rates is None or self.rate_reg == 0:
            return None
        return self.rate_reg * ((self._rates - self.target_rate) ** 2).sum()


# --- LMU-derived initialisation --------------------------------------------------------------


def rate_curve(layer: SpikingLayer, currents: np.ndarray, adaptive: bool, steps: int = 400) -> np.ndarray:
    """Mean spikes per step of one neuron of ``layer`` for each constant input current (steady state)."""
    n = len(currents)
    with torch.no_grad():
        v = a = z = ref = torch.zeros(n, dtype=torch.float64)
        beta = float(layer.beta.max()) if adaptive else 0.0
        i_in = torch.tensor(currents, dtype=torch.float64)
        count = torch.zeros(n, dtype=torch.float64)
        for t in range(steps):
            v = layer.alpha * v + i_in - layer.threshold * z
            a = layer.rho * a + z
            z = ((v - layer.threshold - beta * a) > 0).double() * (ref <= 0)
            ref = torch.where(z > 0, torch.full_like(ref, layer.refractory), (ref - 1).clamp(min=0))
            if t >= steps // 2:
                count += z
    return (count / (steps - steps // 2)).numpy()


def lmu_init(layer: SpikingLayer, *, order: int, theta: float, channels: int, rng: np.random.Generator,
             max_rates: tuple[float, float] = (0.2, 0.4), intercepts: tuple[float, float] = (-0.5, 0.5),
             input_scale: float = 0.5) -> None:
    """Make the LIF neurons hold m_t = Ā m_{t-1} + B̄ P x_t (an LMU memory of u = P x) in their rates.

    The LIF population gets W_in, W_rec (among themselves) and bias currents from Nengo's recipe;
    ALIF neurons keep their random weights — adaptation would fight a memory kept by persistent
    activity — and read the memory like the readout does.
    """
    from .lmu import legendre_delay, zero_order_hold

    Ab, Bb = zero_order_hold(*legendre_delay(order, theta))
    dims = channels * order
    lif = np.flatnonzero((layer.beta == 0).numpy())
    h, f = len(lif), layer.w_in.shape[1]
    if h < 2 * dims:
        raise EchoesError(f"lsnn init=lmu needs at least 2·lmu_channels·lmu_order = {2 * dims} LIF neurons "
                          f"(hidden_size × (1 − adaptive_fraction)), got {h}")
    A_full, B_full = np.kron(np.eye(channels), Ab), np.kron(np.eye(channels), Bb[:, None])  # [D,D], [D,q]
    P = input_scale * rng.standard_normal((channels, f)) / math.sqrt(f)  # u = P x
    # Each coefficient's spread for a standardised, smooth input (AR(1), like successive MFCC frames).
    drive, m, states = 0.0, np.zeros(order), []
    for _ in range(int(10 * theta) + 50):
        drive = 0.8 * drive + 0.6 * rng.standard_normal()
        m = Ab @ m + Bb * drive * input_scale
        states.append(m)
    sigma = np.tile(np.std(states[len(states) // 5 :], axis=0), channels) + 1e-6  # [D]
    # Encoders: each neuron codes one coefficient with a sign (on/off pairs), spread evenly.
    dim = np.arange(h) % dims
    E = np.zeros((h, dims))
    E[np.arange(h), dim] = np.where((np.arange(h) // dims) % 2 == 0, 1.0, -1.0)
    # Gains and bias currents from the neuron's own rate curve (Nengo's intercepts and max rates):
    # silent below its intercept, its max rate at 2σ of its coefficient.
    grid = np.linspace(0, 20 * layer.threshold, 801)
    curve = np.maximum.accumulate(rate_curve(layer, grid, adaptive=False))
    j_max = np.interp(rng.uniform(*max_rates, size=h) / (1 + 0.5 * layer.refractory), curve, grid)
    j_th = grid[np.argmax(curve > 0)]
    radius = 2 * sigma[dim]
    intercept = rng.uniform(*intercepts, size=h) * radius
    gain = (j_max - j_th) / (radius - intercept)
    bias = j_th - gain * intercept
    # Decoders: regularised least squares from rates at sample states back to the states.
    samples = rng.normal(0, 1, (4000, dims)) * sigma
    rates = np.interp(gain * (samples @ E.T) + bias, grid, curve)
    gram = rates.T @ rates + (0.03 * rates.max()) ** 2 * len(samples) * np.eye(h)
    target = rates.T @ samples
    D = np.linalg.solve(gram, target)  # [H_lif, D]
    encoders = gain[:, None] * E
    # No self-connections: each neuron's input is decoded from the others only (leave-one-out decoders).
    w_rec = np.zeros((h, h))
    for j in range(h):
        others = np.arange(h) != j
        w_rec[j, others] = encoders[j] @ A_full @ np.linalg.solve(gram[np.ix_(others, others)], target[others]).T
    with torch.no_grad():
        idx = torch.as_tensor(lif)
        layer.w_rec[idx] = 0.0
        layer.w_rec[idx[:, None], idx[None, :]] = torch.as_tensor(w_rec, dtype=layer.w_rec.dtype)
        layer.w_in[idx] = torch.as_tensor(encoders @ B_full @ P, dtype=layer.w_in.dtype)
        layer.bias[idx] = torch.as_tensor(bias, dtype=layer.bias.dtype)
    decoders = torch.zeros(dims, layer.hidden_size)
    decoders[:, idx] = torch.as_tensor(D.T, dtype=torch.float32)
    layer.lmu_decoders = decoders  # [D, H]: memory ≈ decoders @ rates (for inspection and tests)
    layer.lmu_projection = torch.as_tensor(P, dtype=torch.float32)  # [q, F]


register_model("lsnn", options=LSNNOptions, doc="Spiking LSNN (LIF + ALIF, Bellec et al. 2020): e-prop or BPTT; "
               "init=lmu for a Legendre memory.")(LSNN)
