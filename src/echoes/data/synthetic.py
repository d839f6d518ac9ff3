"""Generated tasks that need temporal memory; deterministic per seed, no downloads.

- ``synthetic:motion`` — a bump travels across 8 channels (up, down, up-then-down,
  down-then-up) under heavy noise. Any single frame shows a bump somewhere; only
  the order of frames tells the class.
- ``synthetic:recall`` — a cue (one of 4 symbols) is shown for 3 steps at the
  start, then a long stretch of noise and weaker distractor symbols; the label is
  the cue, so the model must remember it to the end.
"""

from __future__ import annotations

import numpy as np

from ..errors import EchoesError
from . import SourceData, register_source
from .sequences import Sequences, pad_sequences

TASKS = ("motion", "recall")


def _motion(rng: np.random.Generator, n: int, lo: int, hi: int, noise: float):
    channels = 8
    names = ["up", "down", "up_down", "down_up"]
    xs, ys = [], rng.integers(0, len(names), n)
    grid = np.arange(channels)
    for label in ys:
        t = int(rng.integers(lo, hi + 1))
        phase = np.linspace(0, 1, t)
        start = rng.uniform(0, 0.3)
        span = rng.uniform(0.6, 1.0)
        if label == 0:
            pos = start + span * phase
        elif label == 1:
            pos = 1 - start - span * phase
        elif label == 2:
            pos = start + span * (1 - np.abs(2 * phase - 1))
        else:
            pos = 1 - start - span * (1 - np.abs(2 * phase - 1))
        centre = pos * (channels - 1)
        width = rng.uniform(0.7, 1.3)
        x = np.exp(-0.5 * ((grid[None, :] - centre[:, None]) / width) ** 2)
        x += noise * rng.standard_normal((t, channels))
        xs.append(x.astype(np.float32))
    return xs, ys, names


def _recall(rng: np.random.Generator, n: int, lo: int, hi: int, noise: float):
    symbols = 4
    names = [f"cue_{i}" for i in range(symbols)]
    xs, ys = [], rng.integers(0, symbols, n)
    for label in ys:
        t = int(rng.integers(lo, hi + 1))
        x = noise * rng.standard_normal((t, symbols)).astype(np.float32)
        x[:3, label] += 1.0
        for step in rng.choice(np.arange(4, t), size=min(3, t - 4), replace=False):
            x[step, rng.integers(symbols)] += 0.5  # weaker distractors
        xs.append(x.astype(np.float32))
    return xs, ys, names


def _list_tasks() -> list[str]:
    return list(TASKS)


@register_source("synthetic", examples=_list_tasks)
def synthetic(
    name: str,
    *,
    seed: int = 0,
    n_train: int = 400,
    n_test: int = 200,
    min_length: int = 30,
    max_length: int = 60,
    noise: float = 0.6,
) -> SourceData:
    """Built-in generated tasks: motion (direction of a bump in noise), recall (remember a cue).

    ``n_train``: training sequences; ``n_test``: test sequences; ``min_length``: shortest sequence in
    steps; ``max_length``: longest sequence in steps; ``noise``: standard deviation of the noise.
    """
    makers = {"motion": _motion, "recall": _recall}
    if name not in makers:
        from ..errors import unknown

        raise unknown("synthetic task", name, makers)
    if not 5 <= min_length <= max_length:
        raise EchoesError(f"synthetic: need 5 <= min_length <= max_length, got {min_length}, {max_length}")
    rng = np.random.default_rng(seed)
    xs, ys, names = makers[name](rng, n_train + n_test, min_length, max_length, noise)
    x, lengths = pad_sequences(xs)
    all_seqs = Sequences(x, lengths, ys)
    return SourceData(
        train=all_seqs.subset(np.arange(n_train)),
        test=all_seqs.subset(np.arange(n_train, n_train + n_test)),
        class_names=names,
    )
