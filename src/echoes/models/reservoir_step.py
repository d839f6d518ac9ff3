"""One full reservoir step fused into a single CUDA kernel (Triton), for small batches on a GPU.

    s ← h + a · (tanh(s + W h) − h)        (s holds the input drive and receives the new state)

At a batch of a few hundred sequences cuBLAS runs W h in a handful of large tiles that leave
most of the GPU idle, and the activation and the leak are two more launches; this kernel tiles
the output 32 × 32 (one program per tile) and does all three at once. Imported only on CUDA.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 32


@triton.jit
def _leaky_tanh_step(w_ptr, h_ptr, s_ptr, n, b, leak, BLOCK_N: tl.constexpr, BLOCK_B: tl.constexpr,
                     BLOCK_K: tl.constexpr):
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rb = tl.program_id(1) * BLOCK_B + tl.arange(0, BLOCK_B)
    acc = tl.zeros((BLOCK_N, BLOCK_B), dtype=tl.float32)
    for k0 in range(0, n, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        w = tl.load(w_ptr + rn[:, None] * n + rk[None, :], mask=(rn[:, None] < n) & (rk[None, :] < n), other=0.0)
        h = tl.load(h_ptr + rk[:, None] * b + rb[None, :], mask=(rk[:, None] < n) & (rb[None, :] < b), other=0.0)
        acc += tl.dot(w, h, input_precision="ieee")
    off = rn[:, None] * b + rb[None, :]
    inside = (rn[:, None] < n) & (rb[None, :] < b)
    pre = acc + tl.load(s_ptr + off, mask=inside, other=0.0)
    act = 1.0 - 2.0 / (tl.exp(2.0 * pre) + 1.0)  # tanh, saturating cleanly at ±1
    prev = tl.load(h_ptr + off, mask=inside, other=0.0)
    tl.store(s_ptr + off, prev + leak * (act - prev), mask=inside)


def leaky_tanh_step(w: torch.Tensor, h: torch.Tensor, s: torch.Tensor, leak: float) -> torch.Tensor:
    """s [N, B] ← h + leak · (tanh(s + w h) − h); all float32, contiguous, on one device."""
    n, b = h.shape
    grid = (triton.cdiv(n, BLOCK), triton.cdiv(b, BLOCK))
    _leaky_tanh_step[grid](w, h, s, n, b, leak, BLOCK_N=BLOCK, BLOCK_B=BLOCK, BLOCK_K=BLOCK)
    return s
