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
from ..models.spiking import LSNN, SpikingLayer, pseudo_derivative
from . import EpochCallback, FitResult, register_learner
from .checkpoint import Checkpoints
from .gradient import GradientLearner

Step = tuple[torch.Tensor, int, int]  # mean loss, correct and counted predictions


def _error_signals(logits: torch.Tensor, y_t: torch.Tensor, counted: torch.Tensor, n_items: int,
                   smoothing: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂E/∂logits [B,C], summed cross-entropy) at one step, for the items that count now."""
    logp = torch.log_softmax(logits, -1)
    target = torch.nn.functional.one_hot(y_t.clamp(min=0), logits.shape[-1]).to(logits.dtype)
    target = (1 - smoothing) * target + smoothing / logits.shape[-1]
    w = counted.to(logits.dtype)[:, None]
    delta = (logp.exp() - target) * w / n_items
    return delta, -(target * logp * w).sum()


def _num_items(y: torch.Tensor, t_max: int, framewise: bool) -> int:
    """How many predictions the loss averages over: labelled frames, or sequences."""
    return max(int((y[:, :t_max] >= 0).sum()) if framewise else len(y), 1)


def _counted(y: torch.Tensor, lengths: torch.Tensor, t: int, framewise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(label at step t, which sequences are scored at step t)."""
    if framewise:
        y_t = y[:, t] if t < y.shape[1] else torch.full_like(y[:, 0], -1)
        return y_t, (y_t >= 0) & (t < lengths)
    return y, lengths - 1 == t


class LsnnTraces:
    """The eligibility traces of one LSNN layer over a batch (Bellec et al. 2020, Methods).

    Laid out [neuron j, batch, presynaptic i], so that Σ_b L_bj ē_jbi is one batched matmul.
    The input weights carry the bias as the weight of a constant input.
    """

    def __init__(self, layer: SpikingLayer, x: torch.Tensor, kappa: float) -> None:
        b, _, f = x.shape
        h, na = layer.hidden_size, int((layer.beta > 0).sum())  # ALIF neurons come first
        self.na, self.kappa = na, kappa
        self.alpha, self.rho, self.beta = layer.alpha, layer.rho, layer.beta[:na, None, None]
        # Eligibility vectors: ε_v is presynaptic (one per input), ε_a per synapse of ALIF neurons.
        self.ev_in, self.ev_rec = x.new_zeros(b, f + 1), x.new_zeros(b, h)
        self.ea_in, self.ea_rec = x.new_zeros(na, b, f + 1), x.new_zeros(na, b, h)
        self.e_in, self.e_rec = x.new_zeros(h, b, f + 1), x.new_zeros(h, b, h)
        self.eb_in, self.eb_rec = torch.zeros_like(self.e_in), torch.zeros_like(self.e_rec)  # ē: filtered by κ
        self.psi_prev = x.new_zeros(h, b, 1)

    def presynaptic(self, x_t: torch.Tensor, z_prev: torch.Tensor) -> None:
        """ε_a^t = ψ^{t-1} ε_v^{t-1} + (ρ − β ψ^{t-1}) ε_a^{t-1}, then ε_v^t = α ε_v^{t-1} + pre^t."""
        p = self.psi_prev[: self.na]
        self.ea_in.mul_(self.rho - self.beta * p).addcmul_(p, self.ev_in[None])
        self.ea_rec.mul_(self.rho - self.beta * p).addcmul_(p, self.ev_rec[None])
        self.ev_in = self.alpha * self.ev_in + x_t
        self.ev_rec = self.alpha * self.ev_rec + z_prev

    def eligibility(self, psi: torch.Tensor) -> None:
        """e^t = ψ^t (ε_v^t − β ε_a^t); ē^t = κ ē^{t-1} + e^t. ``psi`` [H,B,1]."""
        na = self.na
        torch.mul(psi, self.ev_in[None], out=self.e_in)
        torch.mul(psi, self.ev_rec[None], out=self.e_rec)
        self.e_in[:na].addcmul_(psi[:na] * self.beta, self.ea_in, value=-1)
        self.e_rec[:na].addcmul_(psi[:na] * self.beta, self.ea_rec, value=-1)
        self.eb_in.mul_(self.kappa).add_(self.e_in)
        self.eb_rec.mul_(self.kappa).add_(self.e_rec)
        self.psi_prev = psi


def _rate_gradient(model: LSNN, spikes: torch.Tensor, n_steps: torch.Tensor, se_in: torch.Tensor,
                   se_rec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """E_reg = c Σ_j (f̄_j − f*)²: its gradient through the eligibility traces summed over valid steps."""
    n = n_steps.clamp(min=1)
    scale = (2 * model.rate_reg * (spikes / n - model.target_rate) / n)[:, None]
    return scale * se_in, scale * se_rec


@torch.no_grad()
def lsnn_eprop(model: LSNN, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
               feedback: torch.Tensor | None = None, smoothing: float = 0.0) -> Step:
    """Set e-prop gradients on an LSNN's parameters for one batch.

    ``feedback`` [C,H] is B (default: W_out, i.e. symmetric e-prop).
    """
    layer = model.layers[0]
    b, t_max, f = x.shape
    h = layer.hidden_size
    W_out, fb = model.readout.weight, model.readout.weight if feedback is None else feedback
    w_in = torch.cat([layer.w_in, layer.bias[:, None]], 1)  # the bias is the weight of a constant input
    one = x.new_ones(b, 1)
    lengths = lengths.to(x.device)
    n_items = _num_items(y, t_max, model.framewise)
    s = layer.initial_state(b, x)
    tr = LsnnTraces(layer, x, model.kappa)
    se_in, se_rec = torch.zeros_like(w_in), torch.zeros_like(layer.w_rec)  # Σ e over valid steps
    g_in, g_rec = torch.zeros_like(w_in), torch.zeros_like(layer.w_rec)
    g_out, g_b = torch.zeros_like(W_out), torch.zeros_like(model.readout.bias)
    zeta = x.new_zeros(b, h)
    spikes, n_steps, loss, correct = x.new_zeros(h), x.new_zeros(()), x.new_zeros(()), x.new_zeros(())
    for t in range(t_max):
        x_t = torch.cat([x[:, t], one], 1)
        tr.presynaptic(x_t, s.z)
        s, v_scaled = layer.step(x_t @ w_in.T, s)
        tr.eligibility((pseudo_derivative(v_scaled) / layer.threshold).T[:, :, None])
        zeta = model.kappa * zeta + s.z
        logits = model.readout(zeta)
        y_t, counted = _counted(y, lengths, t, model.framewise)
        delta, step_loss = _error_signals(logits, y_t, counted, n_items, smoothing)
        loss += step_loss
        correct += ((logits.argmax(1) == y_t) & counted).sum()
        L = (delta @ fb).T[:, None, :]  # learning signal [H,1,B]
        g_in += torch.bmm(L, tr.eb_in)[:, 0]
        g_rec += torch.bmm(L, tr.eb_rec)[:, 0]
        g_out += delta.T @ zeta
        g_b += delta.sum(0)
        valid = (t < lengths).to(x.dtype)
        se_in += torch.bmm(valid.expand(h, 1, b), tr.e_in)[:, 0]
        se_rec += torch.bmm(valid.expand(h, 1, b), tr.e_rec)[:, 0]
        spikes += valid @ s.z
        n_steps += valid.sum()
    if model.rate_reg:
        r_in, r_rec = _rate_gradient(model, spikes, n_steps, se_in, se_rec)
        g_in += r_in
        g_rec += r_rec
    layer.w_in.grad, layer.bias.grad = g_in[:, :f].clone(), g_in[:, f].clone()
    layer.w_rec.grad = g_rec * layer.rec_mask
    model.readout.weight.grad, model.readout.bias.grad = g_out, g_b
    return loss / n_items, int(correct), n_items


@torch.no_grad()
def lstm_eprop(model: Recurrent, x: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor,
               feedback: torch.Tensor | None = None, smoothing: float = 0.0) -> Step:
    """Set e-prop gradients on a one-layer LSTM for one batch (Bellec et al. 2020, Methods)."""
    rnn = model.rnn
    b, t_max, f = x.shape
    h = rnn.hidden_size
    W = torch.cat([rnn.weight_ih_l0, rnn.weight_hh_l0, (rnn.bias_ih_l0 + rnn.bias_hh_l0)[:, None]], 1)
    W_out, fb = model.readout.weight, model.readout.weight if feedback is None else feedback
    lengths = lengths.to(x.device)
    n_items = _num_items(y, t_max, model.framewise)
    hs, c, one = x.new_zeros(b, h), x.new_zeros(b, h), x.new_ones(b, 1)
    eps = x.new_zeros(3, h, b, W.shape[1])  # ∂c/∂W through the cell state, gates i, f, g: [gate, j, b, i]
    g_W = torch.zeros_like(W)
    g_out, g_b = torch.zeros_like(W_out), torch.zeros_like(model.readout.bias)
    loss, correct = x.new_zeros(()), x.new_zeros(())
    for t in range(t_max):
        xh = torch.cat([x[:, t], hs, one], 1)  # the recurrent input counts as an input
        gi, gf, gg, go = (xh @ W.T).chunk(4, 1)
        i, fg, g, o = torch.sigmoid(gi), torch.sigmoid(gf), torch.tanh(gg), torch.sigmoid(go)
        c_prev, c = c, fg * c + i * g
        tc = torch.tanh(c)
        hs = o * tc
        local = torch.stack([g * i * (1 - i), c_prev * fg * (1 - fg), i * (1 - g * g)])  # ∂c/∂gate input
        eps.mul_(fg.T[None, :, :, None]).addcmul_(local.transpose(1, 2)[..., None], xh[None, None])
        logits = model.readout(hs)
        y_t, counted = _counted(y, lengths, t, model.framewise)
        delta, step_loss = _error_signals(logits, y_t, counted, n_items, smoothing)
        loss += step_loss
        correct += ((logits.argmax(1) == y_t) & counted).sum()
        L = delta @ fb
        Lc = (L * o * (1 - tc * tc)).T[:, None, :]  # through h = o·tanh(c): [H,1,B]
        grads = [torch.bmm(Lc, eps[k])[:, 0] for k in range(3)]
        grads.append((L * tc * o * (1 - o)).T @ xh)  # the output gate needs no trace
        g_W += torch.cat(grads, 0)
        g_out += delta.T @ hs
        g_b += delta.sum(0)
    rnn.weight_ih_l0.grad, rnn.weight_hh_l0.grad = g_W[:, :f].clone(), g_W[:, f : f + h].clone()
    rnn.bias_ih_l0.grad, rnn.bias_hh_l0.grad = g_W[:, -1].clone(), g_W[:, -1].clone()
    model.readout.weight.grad, model.readout.bias.grad = g_out, g_b
    return loss / n_items, int(correct), n_items


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
