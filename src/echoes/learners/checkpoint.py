"""Checkpoints of iterative learners: everything an epoch loop needs to continue bit for bit.

A checkpoint holds the learner's stateful parts (model, optimizer, scheduler, AMP
scaler, anything with a ``state_dict`` or a bare tensor), every random number
generator (Python, NumPy, torch CPU and CUDA, the shuffling generator) and the
loop's own state (epoch, history, early stopping, best weights). It is written with
``torch.save`` as tensors and plain containers only, so it loads with
``torch.load(weights_only=True)``, and atomically (temporary file, then rename): a
process killed while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import EchoesError
from ..utils import atomic_write

FORMAT = 1


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Every generator's state, as tensors and plain containers."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "shuffle": generator.get_state(),
    }


def set_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    generator.set_state(state["shuffle"])


def _state_of(part: Any) -> Any:
    return part.detach().clone() if isinstance(part, torch.Tensor) else part.state_dict()


def _restore(part: Any, saved: Any) -> None:
    if isinstance(part, torch.Tensor):
        with torch.no_grad():
            part.copy_(saved)
    elif saved:  # a disabled GradScaler saves {} and cannot load it
        part.load_state_dict(saved)


class Checkpoints:
    """The checkpoint folder of one run: ``epoch-NNNN.pt`` files, the latest ``keep`` kept.

    ``every`` epochs (and at the loop's end) :meth:`save` writes one (``"auto"``: the learner sets
    ``every`` when its fit starts); :meth:`load` reads the latest into :attr:`state`, which a learner's
    ``fit`` resumes from. ``meta`` (e.g. the MLflow run id) goes into every file."""

    def __init__(self, folder: str | Path, every: int | str = 1, keep: int = 1) -> None:
        self.folder = Path(folder)
        self.every, self.keep = every, max(keep, 1)
        self.meta: dict[str, Any] = {}
        self.state: dict[str, Any] | None = None

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("epoch-*.pt"))

    def load(self) -> dict[str, Any] | None:
        """Read the latest checkpoint into :attr:`state` (None when there is none)."""
        files = self.files()
        if not files:
            return None
        try:
            state = torch.load(files[-1], map_location="cpu", weights_only=True)
        except Exception as e:  # damaged, or written by something else
            raise EchoesError(f"checkpoint '{files[-1]}' cannot be read ({str(e).splitlines()[0][:120]}) — "
                              "delete it to start this run again") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise EchoesError(f"checkpoint '{files[-1]}' is not an echoes checkpoint of format {FORMAT} — "
                              "delete it to start this run again")
        self.state = state
        self.meta = dict(state["meta"])
        return state

    def due(self, epoch: int, last: bool) -> bool:
        return self.every > 0 and (last or epoch % self.every == 0)

    def save(self, epoch: int, parts: dict[str, Any], generator: torch.Generator, loop: dict[str, Any]) -> Path:
        """Write the checkpoint of a finished epoch, then drop all but the latest ``keep``."""
        state = {
            "format": FORMAT, "epoch": epoch, "meta": dict(self.meta),
            "parts": {name: _state_of(p) for name, p in parts.items() if p is not None},
            "rng": rng_state(generator), "loop": loop,
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        self.folder.mkdir(parents=True, exist_ok=True)
        path = atomic_write(self.folder / f"epoch-{epoch:04d}.pt", buf.getvalue())
        for old in self.files()[: -self.keep]:
            old.unlink(missing_ok=True)
        return path

    def restore(self, parts: dict[str, Any], generator: torch.Generator) -> dict[str, Any] | None:
        """Load the parts and generators from :attr:`state`; return its loop state (None: start afresh)."""
        if self.state is None:
            return None
        saved = self.state["parts"]
        missing = [n for n, p in parts.items() if p is not None and n not in saved]
        if missing:
            raise EchoesError(f"checkpoint in '{self.folder}' holds no {', '.join(missing)} — it was written "
                              "by another learner; delete the folder to start this run again")
        for name, part in parts.items():
            if part is not None:
                _restore(part, saved[name])
        set_rng_state(self.state["rng"], generator)
        return {**self.state["loop"], "epoch": self.state["epoch"]}

    def clear(self) -> None:
        """Remove the folder: the run finished, or starts again from scratch."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.state, self.meta = None, {}
