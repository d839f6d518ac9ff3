"""Small shared mechanics: seeding, device choice, progress bars."""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import EchoesError

T = TypeVar("T")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EchoesError(f"unknown device '{name}' — use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EchoesError(f"device '{name}' asked for but CUDA is not available — use train.device=cpu")
    return device


def progress(iterable: Iterable[T], **kwargs: Any) -> Iterable[T]:
    """A tqdm bar that stays quiet when stderr/stdout is not a terminal (logs, CI)."""
    return tqdm(iterable, disable=not (sys.stdout.isatty() and sys.stderr.isatty()), leave=False,
                dynamic_ncols=True, **kwargs)
