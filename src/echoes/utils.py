"""Small shared mechanics: seeding, device choice, progress bars, atomic files, config lookup."""

from __future__ import annotations

import importlib
import os
import random
import subprocess
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
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


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write a file so that readers see the old or the new content, never half of it.

    The temporary file sits beside the target (same file system, so the rename is atomic)
    and is removed if writing fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) across processes sharing a folder.
    Not POSIX: no lock, so one process at a time is up to the user."""
    with open(path, "a") as lock:
        try:
            import fcntl
        except ImportError:
            yield
            return
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def cache_dir() -> Path:
    """Where derived data (feature caches) lives: ``$XDG_CACHE_HOME/echoes`` or ``~/.cache/echoes``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "echoes"


def check_output(path: str | Path, suffixes: tuple[str, ...] = ()) -> Path:
    """Fail now, not after the work, when an output file cannot be written where asked."""
    p = Path(path)
    if p.is_dir():
        raise EchoesError(f"output '{path}' is a directory — give a file name")
    if suffixes and p.suffix not in suffixes:
        raise EchoesError(f"output '{path}' must end in {' or '.join(suffixes)}")
    folder = next((d for d in (p.parent, *p.parent.parents) if d.exists()), Path("."))
    if not folder.is_dir():
        raise EchoesError(f"output '{path}' cannot be written: {folder} is a file, not a folder — choose another path")
    if not os.access(folder, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise EchoesError(f"output '{path}' is not writable — choose another path")
    return p


CONFIG_KINDS = ("suites", "sweeps", "launch")
PACKAGED_CONFIGS = Path(__file__).parent / "configs"


def find_config(kind: str, name: str) -> Path:
    """A suite or sweep file: a path as given, else ``NAME`` in ``./configs/<kind>/``, else the one
    shipped inside the package (``echoes/configs/<kind>/NAME.yaml``). Returns the given path when
    nothing matches, so the caller's "not found" names what the user typed."""
    given = Path(name)
    if given.exists() or given.suffix:
        return given
    for folder in (Path("configs") / kind, PACKAGED_CONFIGS / kind):
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    return given


def packaged_configs(kind: str) -> list[str]:
    """Names of the suites or sweeps that ship with echoes."""
    return sorted(p.stem for p in (PACKAGED_CONFIGS / kind).glob("*.yaml"))


def git_commit() -> str | None:
    """The commit of the echoes code that is running (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


# What each extra of `pip install echoes[...]` is for (pyproject.toml's optional-dependencies).
EXTRAS = {
    "video": "video data and models",
    "speech": "speech (timit:) data",
    "uea": "UEA/UCR datasets (uea:)",
    "report": "the HTML/PNG report",
    "sweep": "sweeps",
    "tensorboard": "TensorBoard logging",
}


class MissingExtra(EchoesError):
    """An optional package is not installed; the message names the extra that installs it."""


def require(module: str, extra: str) -> ModuleType:
    """Import an optional package, or fail with one line naming the extra that installs it
    (``require("aeon", "uea")`` → ``pip install 'echoes[uea]'``)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        top = module.split(".")[0]
        if e.name is not None and e.name.split(".")[0] != top:  # installed, but one of its own imports failed
            why = f"'{top}' is installed but does not import ({type(e).__name__}: {e})"
        else:
            why = f"'{top}' is not installed"
        raise MissingExtra(f"{EXTRAS[extra]}: {why} — pip install 'echoes[{extra}]'") from None
