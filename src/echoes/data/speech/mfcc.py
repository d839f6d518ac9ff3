"""MFCC + Δ + ΔΔ frames, as used for TIMIT phone classification (HTK-style, in NumPy).

Per 25 ms Hamming window every 10 ms: pre-emphasis 0.97, power spectrum, 26
triangular mel filters, log, DCT-II → 13 cepstra with c0 replaced by the frame's
log energy; deltas by linear regression over ±2 frames, delta-deltas likewise:
39 features per frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class MfccConfig:
    window_ms: float = 25.0
    hop_ms: float = 10.0
    num_filters: int = 26
    num_cepstra: int = 13
    preemphasis: float = 0.97
    delta_window: int = 2

    def frame_sizes(self, sample_rate: int) -> tuple[int, int]:
        """(window, hop) in samples."""
        return round(sample_rate * self.window_ms / 1000), round(sample_rate * self.hop_ms / 1000)

    def as_dict(self) -> dict:
        return asdict(self)


DEFAULT_MFCC = MfccConfig()


def frame_centres(num_samples: int, sample_rate: int, cfg: MfccConfig = DEFAULT_MFCC) -> np.ndarray:
    """Sample index at the centre of every frame :func:`mfcc` returns."""
    win, hop = cfg.frame_sizes(sample_rate)
    n = 1 + max(num_samples - win, 0) // hop
    return np.arange(n) * hop + win // 2


def _mel(f: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log1p(f / 700.0)


def mel_filterbank(num_filters: int, nfft: int, sample_rate: int) -> np.ndarray:
    """[num_filters, nfft//2+1] triangular filters equally spaced on the mel scale."""
    edges_mel = np.linspace(0.0, _mel(np.array(sample_rate / 2)), num_filters + 2)
    bins_mel = _mel(np.linspace(0.0, sample_rate / 2, nfft // 2 + 1))
    lo, mid, hi = edges_mel[:-2, None], edges_mel[1:-1, None], edges_mel[2:, None]
    up = (bins_mel[None] - lo) / (mid - lo)
    down = (hi - bins_mel[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down))


def deltas(feat: np.ndarray, window: int = 2) -> np.ndarray:
    """Regression deltas over ±window frames (edges repeated), as HTK computes them."""
    padded = np.pad(feat, ((window, window), (0, 0)), mode="edge")
    n = len(feat)
    num = sum(k * (padded[window + k : window + k + n] - padded[window - k : window - k + n])
              for k in range(1, window + 1))
    return num / (2 * sum(k * k for k in range(1, window + 1)))


def mfcc(samples: np.ndarray, sample_rate: int, cfg: MfccConfig = DEFAULT_MFCC) -> np.ndarray:
    """[frames, 3 * num_cepstra] float32: MFCCs (c0 → log energy), Δ and ΔΔ."""
    win, hop = cfg.frame_sizes(sample_rate)
    x = np.asarray(samples, dtype=np.float64)
    if len(x) < win:
        x = np.pad(x, (0, win - len(x)))
    x = np.append(x[0], x[1:] - cfg.preemphasis * x[:-1])
    n = 1 + (len(x) - win) // hop
    idx = np.arange(win)[None, :] + hop * np.arange(n)[:, None]
    frames = x[idx] * np.hamming(win)[None, :]
    nfft = 1 << (win - 1).bit_length()
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    eps = np.finfo(np.float64).tiny
    log_mel = np.log(power @ mel_filterbank(cfg.num_filters, nfft, sample_rate).T + eps)
    k = np.arange(cfg.num_filters)
    dct = np.cos(np.pi / cfg.num_filters * (k[None, :] + 0.5) * np.arange(cfg.num_cepstra)[:, None])
    cep = log_mel @ (dct.T * np.sqrt(2.0 / cfg.num_filters))
    cep[:, 0] = np.log((frames**2).sum(axis=1) + eps)  # c0 → log energy
    d1 = deltas(cep, cfg.delta_window)
    d2 = deltas(d1, cfg.delta_window)
    return np.concatenate([cep, d1, d2], axis=1).astype(np.float32)
