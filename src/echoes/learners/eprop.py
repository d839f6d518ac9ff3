"""e-prop: online eligibility propagation (Bellec et al., Nat. Commun. 2020) for LSNNs and LSTMs.

The gradient of a recurrent weight is factorised into a learning signal and an
eligibility trace, both available at each step, so training runs forward in time
with memory that does not grow with sequence length:

    ∂E/∂W_ji ≈ Σ_t L_j^t ē_ji^t,        L_j^t = Σ_k B_jk (π_k^t − π*_k^t)

where e_ji^t = ∂z_j^t/∂W_ji through neuron j's own state (eligibility vectors
ε_v, ε_a for ALIF; the cell state for LSTM), ē is e filtered like the readout
(κ for the LSNN's leaky readout), and B is the feedback matrix: ``symmetric``
(Bᵀ = W_out, exactly autodiff with the recurrent spikes detached), ``random``
(fixed), or ``adaptive`` (starts random, receives W_out's updates and weight decay).
The readout's own gradient is exact. The LSNN's firing-rate regulariser uses the
same traces. Everything else (optimizer, clipping, early stopping) is the gradient
learner's.

The rules advance a chunk of steps at a time (``LSNN_CHUNK``, ``LSTM_CHUNK``), still forward only:
the network steps one at a time, but every trace is a linear recurrence, so a chunk's share
of Σ_t L^t ē^t is a few matrix products over (batch × steps) instead of per-step updates of
per-synapse traces (see ``reverse_scan``). Only the traces at a chunk's end are kept, so
memory grows with the chunk, not with T; the gradients are those of the step-by-step rule
(up to rounding).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from ..config import TrainConfig
from ..data import Dataset
from ..data.heads import HeadsLoss
from ..errors import EchoesError
from ..models import SequenceModel
from ..models.recurrent import Recurrent
from ..models.spiking import LSNN, pseudo_derivative
from . import EpochCallback, FitResult, register_learner
from .checkpoint import Checkpoints
from .gradient import GradientLearner

Step = tuple[torch.Tensor, int, int]  # mean loss, correct and counted predictions

# Steps per chunk, by default. Longer chunks mean fewer, larger products; the work memory grows with the
# chunk (not with T). Measured by benchmarks/eprop_speed.py: the LSNN is as fast with 64 as with 128 and needs
# ~2/3 the memory (its ALIF traces weigh 4 × [B, K, ALIF neurons]); the LSTM is faster with 128 (up to
# T = 128 no trace is carried at all) for ~1/4 more memory.
LSNN_CHUNK, LSTM_CHUNK = 64, 128


def leaky(k: int, rate: float, like: torch.Tensor) -> torch.Tensor:
    """The filter S_t = r S_{t-1} + D_t over K steps as a matrix [K, K+1]: S = M @ (D_{-1}, D_0, …, D_{K-1}).

    D_{-1} is the state carried into the chunk; M[t, s+1] = r^{t-s} for s ≤ t, else 0.
    """
    lag = torch.arange(k, device=like.device)[:, None] - torch.arange(-1, k, device=like.device)[None, :]
    return torch.where(lag >= 0, like.new_tensor(rate) ** lag.clamp(min=0), like.new_zeros(()))


def scan(c: torch.Tensor, d: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """S_{-1} = ``start``, S_0 … S_{K-1} of S_t = c_t S_{t-1} + d_t along dim 1: [B,K+1,...]. One small op per step."""
    out, s = [start], start
    for t in range(d.shape[1]):
        s = torch.addcmul(d[:, t], c[:, t], s)
        out.append(s)
    return torch.stack(out, 1)


def reverse_scan(c: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """u_s = Σ_{t≥s} w_t Π_{q=s+1..t} c_q for s = −1 … K−1 (w_{-1} = 0), along dim 1: [B,K+1,...].

    For S_t = c_t S_{t-1} + D_t over a chunk, Σ_t w_t S_t = Σ_s u_s D_s with D_{-1} the state
    carried in: a weighted sum of the chunk's states without building them (they can be
    per-synapse eligibility traces). One small op per step, on [B,...] only.
    """
    acc = w[:, -1]
    out = [acc]
    for s in range(w.shape[1] - 2, -1, -1):
        acc = torch.addcmul(w[:, s], c[:, s + 1], acc)
        out.append(acc)
    out.append(c[:, 0] * acc)
    return torch.stack(out[::-1], 1)


def _with_start(start: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
    """[B,K,...] preceded by the carried state [B,...]: D_{-1}, D_0, …, D_{K-1}."""
    return torch.cat([start[:, None], seq], 1)


def _last_step_weight(like: torch.Tensor) -> torch.Tensor:
    """Weight 1 on a chunk's last step (dim 1): with reverse_scan, the carried trace at the chunk's end."""
    w = torch.zeros_like(like)
    w[:, -1] = 1
    return w


def _error_signals(logits: torch.Tensor, y_t: torch.Tensor, counted: torch.Tensor, n_items: int,
                   smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂E/∂logits [...,C], summed cross-entropy), for the predictions that count."""
    logp = torch.log_softmax(logits, -1)
    target = torch.nn.functional.one_hot(y_t.clamp(min=0), logits.shape[-1]).to(logits.dtype)
    target = (1 - smoothing) * target + smoothing / logits.shape[-1]
    w = counted.to(logits.dtype)[..., None]
    delta = (logp.exp() - target) * w / n_items
    return delta, -(target * logp * w).sum()


def _num_items(y: torch.Tensor, t_max: int, framewise: bool) -> int:
    """How many predictions the loss averages over: labelled frames, or sequences."""
    return max(int((y[:, :t_max] >= 0).sum()) if framewise else len(y), 1)


def _chunk_labels(y: torch.Tensor, lengths: torch.Tensor, t0: int, t1: int,
                  framewise: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(labels [B,K], which predictions are scored [B,K], which steps are valid [B,K]) for steps t0..t1-1."""
    steps = torch.arange(t0, t1, device=y.device)[None]
    valid = steps < lengths[:, None]
    if not framewise:  # scored at the sequence's last step
        return y[:, None].expand(-1, t1 - t0), lengths[:, None] - 1 == steps, valid
    y_c = y[:, t0:t1]
    if y_c.shape[1] < t1 - t0:  # labels shorter than the input: the rest is unlabelled
        y_c = torch.nn.functional.pad(y_c, (0, t1 - t0 - y_c.shape[1]), value=-1)
    return y_c, (y_c >= 0) & valid, valid


def _score(model_framewise: bool, logits: torch.Tensor, y: torch.Tensor, lengths: torch.Tensor, t0: int,
           t1: int, n_items: int, smoothing: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(δ [B,K,C], summed loss, correct predictions, valid steps [B,K]) of one chunk's logits."""
    y_c, counted, valid = _chunk_labels(y, lengths, t0, t1, model_framewise)
    delta, loss = _error_signals(logits, y_c, counted, n_items, smoothing)
    return delta, loss, ((logits.argmax(-1) == y_c) & counted).sum(), valid.to(logits.dtype)


@torch.no_grad()
def lsnn_eprop(model: LSNN, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
               feedback: torch.Tensor | None = None, smoothing: float = 0.0, chunk: int | None = None) -> Step:
    """Set e-prop gradients on an LSNN's parameters for one batch.

    ``feedback`` [C,H] is B (default: W_out, i.e. symmetric e-prop). The neurons step one
    at a time; the eligibility traces (Bellec et al. 2020, Methods) advance ``chunk`` steps
    at once: within a chunk every trace is a linear recurrence (see ``reverse_scan``), so Σ_t L^t ē^t
    becomes a few matrix products over (batch × steps), and only the traces at the chunk's
    end are kept — memory grows with the chunk, not with T. Layout: [batch, neuron j,
    presynaptic i], where the inputs, a constant 1 (the bias) and the recurrent spikes are
    the presynaptic signals.
    """
    layer = model.layers[0]
    b, t_max, f = x.shape
    h, na = layer.hidden_size, int((layer.beta > 0).sum())  # ALIF neurons come first
    alpha, rho, kappa, thr = layer.alpha, layer.rho, model.kappa, layer.threshold
    beta = layer.beta[:na].to(x.dtype)
    fb = model.readout.weight if feedback is None else feedback
    w_in = torch.cat([layer.w_in, layer.bias[:, None]], 1)  # the bias is the weight of a constant input
    n_in = f + 1 + h  # presynaptic signals: inputs, 1, recurrent spikes
    lengths = lengths.to(x.device)
    n_items = _num_items(y, t_max, model.framewise)
    k_max = min(chunk or LSNN_CHUNK, t_max)
    s, w_rec = layer.initial_state(b, x), layer.recurrent_weight()
    ev, psi = x.new_zeros(b, n_in), x.new_zeros(b, h)  # ε_v (presynaptic) and ψ at the last step
    # ε_a [B,na,I] of ALIF synapses and ē [B,H,I] = κ-filtered e: carried between chunks, so only from the first one.
    ea = eb = torch.empty(0)
    zeta = x.new_zeros(b, h)
    g, se = x.new_zeros(h, n_in), x.new_zeros(h, n_in)  # Σ L ē, and Σ e over valid steps (rate regulariser)
    g_out, g_b = torch.zeros_like(model.readout.weight), torch.zeros_like(model.readout.bias)
    spikes, n_steps, loss, correct = x.new_zeros(h), x.new_zeros(()), x.new_zeros(()), x.new_zeros(())
    for t0 in range(0, t_max, k_max):
        t1 = min(t0 + k_max, t_max)
        k = t1 - t0
        xa = torch.cat([x[:, t0:t1], x.new_ones(b, k, 1)], -1)
        i_in, z_start = xa @ w_in.T, s.z
        zs, vs = [], []
        for t in range(k):  # the network itself: one step at a time
            s, v_scaled = layer.step(i_in[:, t], s, w_rec=w_rec)
            zs.append(s.z)
            vs.append(v_scaled)
        z, psi_c = torch.stack(zs, 1), pseudo_derivative(torch.stack(vs, 1)) / thr  # [B,K,H]
        a_k, k_k = leaky(k, alpha, x), leaky(k, kappa, x)
        ev_c = a_k @ _with_start(ev, torch.cat([xa, _with_start(z_start, z[:, :-1])], -1))  # ε_v [B,K,I]
        psi_prev, ev_prev = _with_start(psi, psi_c[:, :-1]), _with_start(ev, ev_c[:, :-1])
        zeta_c = k_k @ _with_start(zeta, z)
        logits = model.readout(zeta_c)
        delta, step_loss, step_correct, valid = _score(model.framewise, logits, y, lengths, t0, t1, n_items,
                                                       smoothing)
        loss += step_loss
        correct += step_correct
        g_out += delta.flatten(0, 1).T @ zeta_c.flatten(0, 1)
        g_b += delta.sum((0, 1))
        # Σ_t L^t ē^t = (Σ_t κ^{t-t0+1} L^t) ē^{t0-1} + Σ_s L̃^s e^s, with L̃^s = Σ_{t≥s} κ^{t-s} L^t.
        lt = k_k.T @ (delta @ fb)  # [B,K+1,H]
        carry = t1 < t_max  # the last chunk's traces are not needed
        if t0:
            g += torch.einsum("bj,bji->ji", lt[:, 0], eb)
        # The ψ ε_v part of e^s = ψ^s (ε_v^s − β ε_a^s): weights on it for g, for se and for ē's carry.
        w_g, w_s, w_e = lt[:, 1:] * psi_c, valid[..., None] * psi_c, k_k[-1, 1:, None] * psi_c
        g += w_g.flatten(0, 1).T @ ev_c.flatten(0, 1)
        se += w_s.flatten(0, 1).T @ ev_c.flatten(0, 1)
        if carry:
            eb = w_e.transpose(1, 2) @ ev_c + (k_k[-1, 0] * eb if t0 else 0)
        if na:  # the β ψ ε_a part: ε_a^t = (ρ − β ψ^{t-1}) ε_a^{t-1} + ψ^{t-1} ε_v^{t-1}
            alif = [w_g[..., :na], w_s[..., :na]] + ([w_e[..., :na], _last_step_weight(w_g[..., :na])] if carry else [])
            w = torch.stack(alif, -1)
            u = reverse_scan((rho - beta * psi_prev[..., :na])[..., None], w)  # [B,K+1,na,2 or 4]
            u_steps = u[:, 1:] * psi_prev[..., :na, None]  # D_s = ψ^{s-1} ε_v^{s-1}
            summed = torch.einsum("njw,ni->wji", u_steps[..., :2].flatten(0, 1), ev_prev.flatten(0, 1))
            if t0:
                summed += torch.einsum("bjw,bji->wji", u[:, 0, :, :2], ea)
            g[:na] -= beta[:, None] * summed[0]
            se[:na] -= beta[:, None] * summed[1]
            if carry:  # per sequence: ē's ALIF rows and ε_a at the chunk's end
                parts = torch.einsum("bsjw,bsi->bjwi", u_steps[..., 2:], ev_prev)
                if t0:
                    parts += u[:, 0, :, 2:, None] * ea[:, :, None]
                eb[:, :na] -= beta[:, None] * parts[:, :, 0]
                ea = parts[:, :, 1]
        ev, psi, zeta = ev_c[:, -1], psi_c[:, -1], zeta_c[:, -1]
        spikes += torch.einsum("bk,bkh->h", valid, z)
        n_steps += valid.sum()
    if model.rate_reg:  # E_reg = c Σ_j (f̄_j − f*)²: its gradient through the traces summed over valid steps
        n = n_steps.clamp(min=1)
        g += (2 * model.rate_reg * (spikes / n - model.target_rate) / n)[:, None] * se
    layer.w_in.grad, layer.bias.grad = g[:, :f].clone(), g[:, f].clone()
    layer.w_rec.grad = g[:, f + 1 :] * layer.rec_mask
    model.readout.weight.grad, model.readout.bias.grad = g_out, g_b
    return loss / n_items, int(correct), n_items


@torch.no_grad()
def lstm_eprop(model: Recurrent, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
               feedback: torch.Tensor | None = None, smoothing: float = 0.0, chunk: int | None = None) -> Step:
    """Set e-prop gradients on a one-layer LSTM for one batch (Bellec et al. 2020, Methods).

    The LSTM runs ``chunk`` steps at a time in torch's own kernel; the cell state and the
    eligibility traces ε = ∂c/∂W (gates i, f, g) are linear recurrences in the forget gate,
    so a chunk's share of the gradient is a few matrix products (see ``reverse_scan``) and only
    the traces at the chunk's end are kept. Layout: [batch, gate·j, presynaptic i].
    """
    rnn = model.rnn
    b, t_max, f = x.shape
    h = rnn.hidden_size
    W = torch.cat([rnn.weight_ih_l0, rnn.weight_hh_l0, (rnn.bias_ih_l0 + rnn.bias_hh_l0)[:, None]], 1)
    W2 = W.clone()
    W2[2 * h : 3 * h] *= 2  # the cell input's rows doubled: see tanh below
    fb = model.readout.weight if feedback is None else feedback
    lengths = lengths.to(x.device)
    n_items = _num_items(y, t_max, model.framewise)
    k_max = min(chunk or LSTM_CHUNK, t_max)
    hs, c = x.new_zeros(b, h), x.new_zeros(b, h)
    buffers: dict[str, torch.Tensor] = {}

    def buffer(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """Work memory reused by every chunk: fresh memory costs a page fault per page, each time."""
        if name not in buffers or buffers[name].shape != shape:
            buffers[name] = x.new_empty(shape)
        return buffers[name]

    eps = torch.empty(0)  # ∂c/∂W through the cell state, gates i, f, g: [B,3H,I], carried from the first chunk on
    # One label per sequence: the learning signal is zero until a sequence's last step, so a chunk where
    # none ends only carries the traces forward (no readout, no share of the gradient), and one where
    # some end reads out only those (``_lstm_last_steps``).
    ends = None if model.framewise else lengths.cpu()
    g_W = torch.zeros_like(W)
    g_out, g_b = torch.zeros_like(model.readout.weight), torch.zeros_like(model.readout.bias)
    loss, correct = x.new_zeros(()), x.new_zeros(())
    for t0 in range(0, t_max, k_max):
        t1 = min(t0 + k_max, t_max)
        k = t1 - t0
        out, (h_n, c_n) = rnn(x[:, t0:t1], (hs[None], c[None]))
        xh = torch.cat([x[:, t0:t1], _with_start(hs, out[:, :-1]), x.new_ones(b, k, 1)], -1,
                       out=buffer("xh", (b, k, W.shape[1])))  # [B,K,I]
        gates = torch.matmul(xh, W2.T, out=buffer("gates", (b, k, 4 * h))).sigmoid_()
        gates[..., 2 * h : 3 * h].mul_(2).sub_(1)  # tanh(z) = 2σ(2z) − 1: one activation for all gates
        i, fg, gt, o = gates.chunk(4, -1)
        c_ext = scan(fg, i * gt, c)  # [B,K+1,H]: the cell state from the one carried in
        c_prev, tc = c_ext[:, :-1], torch.tanh(c_ext[:, 1:], out=buffer("tc", (b, k, h)))
        local = buffer("local", (b, k, 4, h))  # ∂c/∂(gate input) of gates i, f, g (then the gradient's weights)
        tmp = buffer("tmp", (b, k, h))
        torch.mul(gt, torch.addcmul(i, i, i, value=-1, out=tmp), out=local[:, :, 0])  # σ' = σ − σ²
        torch.mul(c_prev, torch.addcmul(fg, fg, fg, value=-1, out=tmp), out=local[:, :, 1])
        torch.mul(i, torch.mul(gt, gt, out=tmp).neg_().add_(1), out=local[:, :, 2])
        if ends is not None:  # one label per sequence: only the last steps of those ending here count
            rows = torch.nonzero((ends > t0) & (ends <= t1)).flatten()
            if len(rows):
                last = (ends[rows] - 1 - t0).to(x.device)
                rows = rows.to(x.device)
                grads, step_loss, step_correct = _lstm_last_steps(
                    model, rows, last, out, xh, local, (fg, o, tc), eps if t0 else None, y, fb, n_items, smoothing)
                for total, part in zip((g_W, g_out, g_b), grads, strict=True):
                    total += part
                loss += step_loss
                correct += step_correct
            if t1 < t_max:
                eps = _carry_lstm_traces(local, fg, xh, eps, t0)
            hs, c = h_n[0], c_n[0]
            continue
        logits = model.readout(out)
        delta, step_loss, step_correct, _ = _score(model.framewise, logits, y, lengths, t0, t1, n_items, smoothing)
        loss += step_loss
        correct += step_correct
        lo = (delta @ fb) * o  # the learning signal times ∂h/∂tanh(c), h = o·tanh(c)
        lc = torch.addcmul(lo, lo * tc, tc, value=-1)  # through c: L o (1 − tanh²c)
        # ε^t = f^t ε^{t-1} + local^t ⊗ xh^t: u weighs the carried ε and each step's local ⊗ xh.
        u = reverse_scan(fg, lc)  # [B,K+1,H]
        if t0:
            g_W[: 3 * h] += torch.einsum("bj,bji->ji", u[:, 0].repeat(1, 3), eps)
        if t1 < t_max:  # ε at the chunk's end (the last chunk's is not needed)
            eps = _carry_lstm_traces(local, fg, xh, eps, t0)
        local[:, :, :3] *= u[:, 1:, None]
        torch.mul(lo, torch.addcmul(tc, tc, o, value=-1, out=tmp), out=local[:, :, 3])  # the output gate: no trace
        g_W += local.flatten(2).flatten(0, 1).T @ xh.flatten(0, 1)
        g_out += delta.flatten(0, 1).T @ out.flatten(0, 1)
        g_b += delta.sum((0, 1))
        hs, c = h_n[0], c_n[0]
    rnn.weight_ih_l0.grad, rnn.weight_hh_l0.grad = g_W[:, :f].clone(), g_W[:, f : f + h].clone()
    rnn.bias_ih_l0.grad, rnn.bias_hh_l0.grad = g_W[:, -1].clone(), g_W[:, -1].clone()
    model.readout.weight.grad, model.readout.bias.grad = g_out, g_b
    return loss / n_items, int(correct), n_items


def _lstm_last_steps(model: Recurrent, rows: torch.Tensor, last: torch.Tensor, out: torch.Tensor,
                     xh: torch.Tensor, local: torch.Tensor, gates: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                     eps: torch.Tensor | None, y: torch.Tensor, fb: torch.Tensor, n_items: int, smoothing: float
                     ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor, torch.Tensor]:
    """The share of the gradient (of W, the readout's weight and bias) of the sequences ``rows`` that end
    in this chunk, at chunk step ``last`` (one label per sequence), with their summed loss and correct
    predictions. The learning signal exists at that step alone, so the reverse scan is a product of
    forget gates and only those rows enter the products. ``gates``: the forget gate, output gate and
    tanh(c) of every step; ``eps``: the traces carried into the chunk (None in the first)."""
    fg, o, tc = gates
    h = fg.shape[-1]
    out_r = out[rows, last]
    logits = model.readout(out_r)
    delta, loss = _error_signals(logits, y[rows], torch.ones_like(rows, dtype=torch.bool), n_items, smoothing)
    o_r, tc_r = o[rows, last], tc[rows, last]
    lo = (delta @ fb) * o_r  # the learning signal times ∂h/∂tanh(c)
    lc = lo - lo * tc_r * tc_r  # through c
    # u_s = lc · Π_{q=s+1..last} f_q for s ≤ last (else 0): weights of the chunk's ε contributions
    before = (torch.arange(fg.shape[1], device=fg.device)[None, :] <= last[:, None])[..., None]  # [R,K,1]
    f_r = torch.where(before, fg[rows], 1.0)
    tail = torch.cat([f_r[:, 1:].flip(1).cumprod(1).flip(1), torch.ones_like(f_r[:, :1])], 1)
    g_W = torch.empty(4 * h, xh.shape[-1], dtype=xh.dtype, device=xh.device)
    part = local[rows, :, :3] * (lc[:, None] * tail * before)[:, :, None]  # [R,K,3,H]
    g_W[: 3 * h] = part.flatten(2).flatten(0, 1).T @ xh[rows].flatten(0, 1)
    if eps is not None:  # the ε carried in, weighted by the product of every forget gate up to the last step
        g_W[: 3 * h] += torch.einsum("bj,bji->ji", (lc * f_r.prod(1)).repeat(1, 3), eps[rows])
    g_W[3 * h :] = (lo * tc_r * (1 - o_r)).T @ xh[rows, last]  # the output gate: no trace
    return (g_W, delta.T @ out_r, delta.sum(0)), loss, (logits.argmax(-1) == y[rows]).sum()


def _carry_lstm_traces(local: torch.Tensor, fg: torch.Tensor, xh: torch.Tensor, eps: torch.Tensor,
                       t0: int) -> torch.Tensor:
    """ε = ∂c/∂W (gates i, f, g) at a chunk's end from the one carried in: products of forget gates."""
    to_end = torch.cat([fg[:, 1:].flip(1).cumprod(1).flip(1), torch.ones_like(fg[:, :1])], 1)
    return ((local[:, :, :3] * to_end[:, :, None]).flatten(2).transpose(1, 2) @ xh
            + (fg.prod(1).repeat(1, 3)[..., None] * eps if t0 else 0))


Rule = Callable[..., Step]
# The online rule of each model class, with the check that the instance suits it. Another
# package adds one with `EPROP_RULES[MyModel] = (my_rule, my_check)`; subclasses inherit it.
EPROP_RULES: dict[type[SequenceModel], tuple[Rule, Callable[[SequenceModel], None]]] = {}


def _check_lsnn(model: LSNN) -> None:
    if model.bidirectional:
        raise EchoesError("e-prop runs forward in time: use learner=gradient for a bidirectional lsnn")


def _check_lstm(model: Recurrent) -> None:
    if not isinstance(model.rnn, nn.LSTM):
        raise EchoesError(f"e-prop supports the LSTM of the recurrent family, not '{model.name}' — "
                          "use learner=gradient")
    if model.rnn.num_layers != 1 or model.rnn.bidirectional:
        raise EchoesError("e-prop supports one-layer, one-directional LSTMs (model.num_layers=1) "
                          "— use learner=gradient for deeper ones")
    if model.pooling != "last":  # its learning signal at step t is the readout's error at t
        raise EchoesError(f"e-prop reads the LSTM out at its last step, not pooling={model.pooling} "
                          "— set model.pooling=last")


EPROP_RULES[LSNN] = (lsnn_eprop, _check_lsnn)
EPROP_RULES[Recurrent] = (lstm_eprop, _check_lstm)


def eprop_rule(model: SequenceModel) -> Rule:
    """The online rule for this model, or a one-line error naming what e-prop supports."""
    for cls in type(model).__mro__:
        if cls in EPROP_RULES:
            rule, check = EPROP_RULES[cls]
            check(model)
            return rule
    raise EchoesError(f"learner eprop supports lsnn and lstm models, not '{model.name}' — "
                      "use learner=gradient")


@register_learner("eprop")
class EpropLearner(GradientLearner):
    """e-prop (online, memory independent of sequence length) for lsnn and lstm.

    ``feedback``: how the learning signal reaches the neurons (symmetric = W_out, random, adaptive).
    ``optimizer``: adamw or sgd. ``betas``: AdamW's (β1, β2).
    """

    data_parallel = False  # its hand-computed gradients would bypass DDP's averaging (check_experiment refuses)

    def __init__(self, feedback: Literal["symmetric", "random", "adaptive"] = "symmetric",
                 optimizer: Literal["adamw", "sgd"] = "adamw", betas: tuple[float, float] = (0.9, 0.999)) -> None:
        super().__init__(optimizer, betas)
        self.feedback = feedback
        self.B: nn.Parameter | None = None

    def make_optimizer(self, model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
        opt = super().make_optimizer(model, train)
        if self.feedback == "adaptive":
            opt.add_param_group({"params": [self.B]})  # moves like W_out, with the same weight decay
        return opt

    def backward(self, model: SequenceModel, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
                 loss_fn: HeadsLoss, scaler: torch.amp.GradScaler) -> Step:
        smoothing = loss_fn.label_smoothing
        feedback = None if self.B is None else self.B.detach()
        step = eprop_rule(model)(model, x, lengths, y, feedback, smoothing)
        if self.feedback == "adaptive":
            self.B.grad = model.readout.weight.grad.clone()
        return step

    def checkpoint_parts(self) -> dict[str, nn.Module | torch.Tensor]:
        return {} if self.B is None else {"feedback": self.B}

    def fit(self, model: SequenceModel, data: Dataset, train: TrainConfig, *, device: torch.device, seed: int,
            on_epoch: EpochCallback | None = None, checkpoint: Checkpoints | None = None) -> FitResult:
        eprop_rule(model)  # fails early on models e-prop cannot train
        if data.heads.multi:  # its learning signals are one softmax's errors, step by step
            raise EchoesError(f"learner=eprop trains one label head, and {data.name} has "
                              f"{len(data.heads.names)} ({', '.join(data.heads.names)}) — use learner=gradient")
        model.to(device)
        self.B = None
        if self.feedback != "symmetric":
            g = torch.Generator().manual_seed(seed + 7919)
            w = model.readout.weight
            self.B = nn.Parameter((torch.randn(w.shape, generator=g) / math.sqrt(w.shape[1])).to(device))
        return super().fit(model, data, train.model_copy(update={"amp": False}), device=device, seed=seed,
                           on_epoch=on_epoch, checkpoint=checkpoint)
