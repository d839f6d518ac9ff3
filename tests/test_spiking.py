"""The LSNN: LIF/ALIF dynamics, surrogate gradient, readout, regulariser, bidirectional, LMU initialisation."""

import math

import numpy as np
import pytest
import torch

from echoes.errors import EchoesError
from echoes.models import create_model
from echoes.models.lmu import LegendreMemory
from echoes.models.spiking import SpikeFunction, leaky_filter, rate_curve


def two_neurons(**kw):
    """Neuron 0 is ALIF, neuron 1 LIF; both see the input with weight 1 and nothing else."""
    model = create_model("lsnn", input_size=1, num_classes=2, framewise=True, hidden_size=2,
                         adaptive_fraction=0.5, tau_mem=1 / math.log(2), threshold=1.0, **kw)
    layer = model.layers[0]
    with torch.no_grad():
        layer.w_in.fill_(1.0)
        layer.w_rec.zero_()
    return model, layer


def test_lif_membrane_decay_reset_by_subtraction_and_refractory_period():
    _, layer = two_neurons(beta=0.0)  # α = 0.5: v_t = 0.5 v_{t-1} + 0.9 − z_{t-1}
    x = torch.full((1, 8, 1), 0.9)
    z = layer(x)[0, :, 1].tolist()
    assert z == [0, 1, 0, 1, 0, 1, 0, 1]
    _, layer = two_neurons(beta=0.0, refractory=2)  # no spike for 2 steps after one
    assert layer(x)[0, :, 1].tolist() == [0, 1, 0, 0, 1, 0, 0, 1]


def test_adaptive_threshold_lowers_the_rate():
    _, layer = two_neurons(beta=1.8, tau_adapt=20.0)
    z = layer(torch.full((1, 200, 1), 0.9))[0]
    alif, lif = z[:, 0].sum().item(), z[:, 1].sum().item()
    assert lif == 100 and 0 < alif < lif / 2


def test_pseudo_derivative_is_dampened_triangle():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.25, 1.5], requires_grad=True)
    SpikeFunction.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.15, 0.3, 0.225, 0.0], atol=1e-7)


def test_no_self_connections_even_after_training():
    model = create_model("lsnn", input_size=3, num_classes=2, framewise=True, hidden_size=8)
    layer = model.layers[0]
    assert torch.all(torch.diagonal(layer.w_rec) == 0)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x = torch.randn(4, 20, 3)
    for _ in range(3):
        opt.zero_grad()
        model(x, torch.full((4,), 20)).pow(2).sum().backward()
        opt.step()
    assert torch.all(torch.diagonal(layer.w_rec) == 0)


def test_leaky_readout_filters_the_spikes():
    model = create_model("lsnn", input_size=3, num_classes=2, framewise=True, hidden_size=6, tau_out=2.0)
    x, lengths = torch.randn(2, 15, 3) * 3, torch.tensor([15, 15])
    z = model.spikes(x, lengths)[0]
    kappa = math.exp(-1 / 2.0)
    zeta = torch.zeros(2, 6)
    for t in range(15):
        zeta = kappa * zeta + z[:, t]
    assert torch.allclose(model.features(x, lengths)[:, -1], zeta)
    assert torch.allclose(leaky_filter(z, kappa)[:, -1], zeta)


def test_rate_regulariser_pulls_towards_the_target():
    model = create_model("lsnn", input_size=3, num_classes=2, framewise=True, hidden_size=10,
                         target_rate=0.0, rate_reg=1.0, threshold=0.3)
    x, lengths = torch.randn(3, 25, 3) * 2, torch.tensor([25, 20, 10])
    z = model.spikes(x, lengths)[0]
    model(x, lengths)
    mask = (torch.arange(25)[None] < lengths[:, None]).float()[..., None]
    rates = (z * mask).sum((0, 1)) / mask.sum()
    assert torch.isclose(model.regularization_loss(), (rates**2).sum())
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = rates.mean()
    for _ in range(5):
        opt.zero_grad()
        model(x, lengths)
        model.regularization_loss().backward()
        opt.step()
    model(x, lengths)
    assert model._rates.mean() < before


def test_bidirectional_sees_the_future_and_unidirectional_does_not():
    torch.manual_seed(0)
    x, lengths = torch.randn(1, 20, 4) * 3, torch.tensor([20])
    later = x.clone()
    later[0, 15:] = -x[0, 15:]
    for bidirectional, sees_future in ((False, False), (True, True)):
        model = create_model("lsnn", input_size=4, num_classes=3, framewise=True, hidden_size=16,
                             bidirectional=bidirectional, threshold=0.3)
        changed = not torch.equal(model(x, lengths)[0, :10], model(later, lengths)[0, :10])
        assert changed == sees_future


def test_bptt_trains_through_the_surrogate_gradient():
    torch.manual_seed(0)
    x = torch.randn(16, 30, 2)
    y = (x[..., 0] > 0).long()  # framewise: the sign of the current input
    model = create_model("lsnn", input_size=2, num_classes=2, framewise=True, hidden_size=24, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    lengths = torch.full((16,), 30)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x, lengths).reshape(-1, 2), y.reshape(-1))
        (loss + model.regularization_loss()).backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


# --- LMU-derived initialisation ---------------------------------------------------------------


def smooth_input(batch: int, steps: int, features: int) -> torch.Tensor:
    torch.manual_seed(0)
    return leaky_filter(torch.randn(batch, steps, features), 0.8) * 0.6  # unit-ish variance, like MFCCs


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


def test_lmu_init_linearised_dynamics_implement_the_memory():
    model = create_model("lsnn", input_size=39, num_classes=5, framewise=True, hidden_size=100,
                         init="lmu", lmu_order=6, lmu_theta=20, seed=0)
    layer = model.layers[0]
    x = smooth_input(2, 400, 39)
    true = LegendreMemory(6, 20.0).scan(x @ layer.lmu_projection.T).flatten(2)  # [B,T,6]
    # Rate (linearised) dynamics of the network's own weights: r_t = f(W_in x_t + W_rec r_{t-1} + b).
    grid = np.linspace(0, 20 * layer.threshold, 801)
    curve = np.maximum.accumulate(rate_curve(layer, grid, adaptive=False))
    with torch.no_grad():
        r, decoded = torch.zeros(2, 100), []
        for t in range(400):
            current = x[:, t] @ layer.w_in.T + r @ layer.w_rec.T + layer.bias
            r = torch.tensor(np.interp(current.numpy(), grid, curve), dtype=torch.float32)
            r[:, layer.adaptive] = 0.0  # the memory lives in the LIF neurons
            decoded.append(r @ layer.lmu_decoders.T)
    decoded = torch.stack(decoded, 1)
    for i in range(3):
        assert corr(decoded[:, 50:, i], true[:, 50:, i]) > 0.9
    # The spiking network follows the same memory, more noisily (filtered spikes vs filtered memory).
    with torch.no_grad():
        spikes = layer(x)
    k = 0.8
    spiking = leaky_filter(spikes @ layer.lmu_decoders.T, k)
    assert corr(spiking[:, 50:, 0], leaky_filter(true, k)[:, 50:, 0]) > 0.5


def test_lmu_init_differs_from_random_and_keeps_alif_random():
    rand = create_model("lsnn", input_size=10, num_classes=3, hidden_size=40, seed=3)
    lmu = create_model("lsnn", input_size=10, num_classes=3, hidden_size=40, seed=3, init="lmu", lmu_order=4)
    lif = ~lmu.layers[0].adaptive
    assert not torch.allclose(rand.layers[0].w_rec[lif], lmu.layers[0].w_rec[lif])
    assert torch.equal(rand.layers[0].w_in[~lif], lmu.layers[0].w_in[~lif])
    assert torch.all(torch.diagonal(lmu.layers[0].w_rec) == 0)


def test_bad_options_are_one_line_errors():
    with pytest.raises(EchoesError, match="LIF neurons"):
        create_model("lsnn", input_size=3, num_classes=2, hidden_size=10, init="lmu", lmu_order=6)
    with pytest.raises(EchoesError, match="init must be"):
        create_model("lsnn", input_size=3, num_classes=2, init="nengo")
    with pytest.raises(EchoesError, match="adaptive_fraction"):
        create_model("lsnn", input_size=3, num_classes=2, adaptive_fraction=1.5)
