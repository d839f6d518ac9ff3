"""The fused Triton reservoir step, run by Triton's interpreter on the CPU, against the plain step."""

import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")

SCRIPT = """
import torch
from echoes.models.reservoir_step import leaky_tanh_step
torch.manual_seed(0)
for n, b, leak in [(50, 37, 0.1), (70, 64, 1.0)]:  # sizes off and on the 32-tile grid
    w, h, s = torch.randn(n, n) / n ** 0.5, torch.randn(n, b), 3 * torch.randn(n, b)
    want = h + leak * (torch.tanh(s + w @ h) - h)
    got = leaky_tanh_step(w, h, s.clone(), leak)
    assert (got - want).abs().max() < 1e-5, (n, b, (got - want).abs().max())
print("ok")
"""


def test_fused_step_equals_product_tanh_and_leak():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
