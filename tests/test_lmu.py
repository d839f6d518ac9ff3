"""Legendre Memory Units: the delay system, its discretisation, and the stepped vs parallel memories."""

import numpy as np
import pytest
import torch
from scipy.linalg import expm
from scipy.special import eval_legendre

from echoes.errors import EchoesError
from echoes.models import create_model
from echoes.models.lmu import LegendreMemory, legendre_delay, zero_order_hold


def test_delay_system_matches_the_paper():
    A, B = legendre_delay(3, theta=1.0)
    np.testing.assert_array_equal(A, [[-1, -1, -1], [3, -3, -3], [-5, 5, -5]])
    np.testing.assert_array_equal(B, [1, -3, 5])
    A2, B2 = legendre_delay(3, theta=4.0)
    np.testing.assert_allclose(A2, A / 4)
    np.testing.assert_allclose(B2, B / 4)


def test_zero_order_hold_is_exact_for_held_inputs():
    A, B = legendre_delay(4, theta=10.0)
    Ab, Bb = zero_order_hold(A, B)
    np.testing.assert_allclose(Ab, expm(A), atol=1e-12)
    # One step from m0 under constant u equals integrating the ODE finely over that step.
    m0, u, n = np.array([0.3, -0.2, 0.1, 0.05]), 0.7, 20000
    m = m0.copy()
    for _ in range(n):
        m = m + (A @ m + B * u) / n
    np.testing.assert_allclose(Ab @ m0 + Bb * u, m, atol=1e-4)


def test_memory_holds_the_input_over_the_window():
    mem = LegendreMemory(12, theta=50.0).double()
    t = np.arange(400)
    u = np.sin(2 * np.pi * t / 120) + 0.5 * np.cos(2 * np.pi * t / 77)
    m = mem.scan(torch.tensor(u)[None, :, None])[0, :, 0].numpy()
    for r in (0.0, 0.5, 1.0):  # u(t − rθ) = Σ_i m_i P_i(2r − 1)
        delay = int(round(r * 50))
        decoded = m @ np.array([eval_legendre(i, 2 * r - 1) for i in range(12)])
        assert np.abs(decoded[200:] - u[200 - delay : 400 - delay]).max() < 0.06


def test_parallel_and_stepped_memories_agree():
    torch.manual_seed(0)
    mem = LegendreMemory(32, theta=200.0)
    u = torch.randn(3, 1000, 2)
    stepped = mem.double().scan(u.double())
    parallel = mem.float().convolve(u)  # float32 FFT against a float64 reference
    assert parallel.shape == (3, 1000, 2, 32)
    assert (parallel.double() - stepped).abs().max() < 1e-5
    assert (mem.scan(u) - parallel).abs().max() < 1e-5  # both in float32


def test_lmu_without_feedback_has_the_lmu_fft_memory():
    torch.manual_seed(0)
    fft = create_model("lmu_fft", input_size=4, num_classes=3, framewise=True, order=8, theta=20)
    cell = create_model("lmu", input_size=4, num_classes=3, framewise=True, order=8, theta=20,
                        hidden_to_memory=False, memory_to_memory=False)
    cell.e_x.weight.data.copy_(fft.e_x.weight.data)
    x = torch.randn(2, 60, 4)
    assert torch.allclose(cell.memory.scan(cell.e_x(x)), fft.memories(x), atol=1e-5)


def test_memory_is_frozen_and_counted_as_fixed_weights():
    model = create_model("lmu", input_size=3, num_classes=2, order=10, theta=5)
    assert not any("memory" in n for n, _ in model.named_parameters())
    trainable, total = model.parameter_counts()
    assert total - trainable == 10 * 10 + 10  # Ā and B̄


def test_bad_memory_settings_are_one_line_errors():
    with pytest.raises(EchoesError, match="model.theta must be a number > 0"):
        create_model("lmu", input_size=3, num_classes=2, theta=0)
