"""The frame-feature cache: decode and embed every clip once, memory-map it on every run.

One cache folder per source × settings holds::

    manifest.json        written last, atomically: settings, source fingerprint, shapes,
                         skipped clips, throughput. Its presence means "complete".
    train.npy, test.npy  one array per split, [clips, frames, D] float32 backbone features,
                         or uint8 pixels [clips, frames, 3·size·size] when features=frames
    train.index.json ... each split's clip paths, labels and groups (row order)
    state.json           progress of an extraction still under way (gone when complete)
    *.partial.npy        arrays still being filled

Rows are written in chunks; after each chunk the array is flushed and
``state.json`` is replaced atomically, so an interrupted extraction resumes at
the first unfinished chunk and a partial cache is never mistaken for a complete
one. A lock file lets one process extract while others sharing the folder wait.
Unreadable clips keep a row of zeros, are marked not ``ok`` and are listed with
the reason. Decoding runs in a small thread pool one chunk ahead of the backbone.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import SkippedFileWarning
from ...utils import atomic_write, file_lock, progress
from ...utils import cache_dir as cache_home
from .decode import UnreadableVideo, decode_clip, decode_frames

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Clip:
    """One sequence to extract: a whole video, or a segment of one (an EPIC-KITCHENS action)."""

    path: Path  # absolute: a video file, or a folder of extracted frames (then `segment` is required)
    rel: str  # as listed, e.g. ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi, or a narration id
    label: int  # 0-based (several label heads: their code)
    group: int
    # part of the video: (start, stop) in seconds of a video file, (first, last) frame numbers of a folder
    segment: tuple[float, float] | None = None


@dataclass(frozen=True)
class FrameSettings:
    """What a clip becomes: ``frames`` frames of ``size``² pixels through a backbone (or raw)."""

    features: str  # backbone name, or "frames" for raw uint8 pixels
    weights: str
    frames: int
    size: int
    sampling: str
    seed: int  # draws the training offsets of segment sampling

    @property
    def raw(self) -> bool:
        return self.features == "frames"

    def describe(self) -> str:
        what = "raw frames" if self.raw else f"{self.features} ({self.weights})"
        return f"{what}, {self.frames} frames of {self.size}px, {self.sampling} sampling"


@dataclass
class CachedSplit:
    x: np.ndarray  # memory-mapped [clips, frames, D]
    ok: np.ndarray  # [clips] bool: False for unreadable clips (rows of zeros)
    labels: np.ndarray
    groups: np.ndarray
    skipped: list[dict[str, str]]  # {"clip": rel, "reason": ...}


@dataclass
class CacheResult:
    folder: Path
    splits: dict[str, CachedSplit]
    reused: bool
    clips_per_second: float | None = None  # of this extraction (None when reused)


def cache_folder(kind: str, root: Path, variant: str, cache_dir: str | None = None) -> Path:
    """The cache folder of a source's copy in ``root`` with these settings (``variant``): one per dataset
    copy (its folder name and a digest of its path) and settings, under ``cache_dir`` or the user's cache."""
    resolved = root.resolve()
    dataset = f"{resolved.name}-{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"
    base = Path(cache_dir).expanduser() if cache_dir else cache_home()
    return base / kind / dataset / variant


def extract_source(kind: str, root: Path, splits: dict[str, list[Clip]], settings: FrameSettings, *,
                   prefix: str = "", item: str = "clip", cache_dir: str | None = None, device: torch.device,
                   workers: int, clip_batch: int) -> tuple[Path, CacheResult, int]:
    """A video source's features: its cache folder for these settings (``prefix`` names what else
    chose the clips, e.g. a split), extracted on first use, unreadable ``item``s warned of by name.
    Returns (folder, the cache, how many were skipped)."""
    s = settings
    variant = f"{prefix}{s.features}-{s.weights}-{s.frames}x{s.size}-{s.sampling}"
    if s.sampling == "segments":  # training offsets are drawn per seed
        variant += f"-seed{s.seed}"
    folder = cache_folder(kind, root, variant, cache_dir)
    if not (folder / "manifest.json").exists():
        total = sum(len(c) for c in splits.values())
        print(f"{kind}: caching {s.describe()} for {total} {item}s in {folder} (once; later runs reuse it)",
              file=sys.stderr)
    cache = build_cache(folder, splits, s, device=device, workers=workers, clip_batch=clip_batch)
    skipped = [x for part in cache.splits.values() for x in part.skipped]
    for x in skipped:
        warnings.warn(f"{kind}: skipped unreadable {item} {x['clip']} ({x['reason']})", SkippedFileWarning,
                      stacklevel=3)
    return folder, cache, len(skipped)


def fingerprint(splits: dict[str, list[Clip]]) -> str:
    """A digest of every listed clip: split, path, label, group and file size."""
    h = hashlib.sha256()
    for split, clips in splits.items():
        for c in clips:
            try:
                size = os.stat(c.path).st_size
            except OSError:
                size = -1
            part = "" if c.segment is None else f"\t{c.segment[0]}\t{c.segment[1]}"  # whole clips: as before
            h.update(f"{split}\t{c.rel}\t{c.label}\t{c.group}\t{size}{part}\n".encode())
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=1))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class FrameEmbedder:
    """uint8 clips ``[B, T, S, S, 3]`` → what the cache stores for them."""

    def __init__(self, settings: FrameSettings, device: torch.device,
                 frame_batch: int = 256, seed: int | None = None) -> None:
        self.settings = settings
        self.device = device
        self.frame_batch = frame_batch
        self.backbone = None
        if not settings.raw:
            from .backbones import create_backbone

            self.backbone = create_backbone(settings.features, settings.weights, seed).to(device).eval()

    @property
    def dim(self) -> int:
        s = self.settings
        return 3 * s.size * s.size if s.raw else self.backbone.dim

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self.settings.raw else np.dtype(np.float32)

    @torch.no_grad()
    def __call__(self, clips: np.ndarray) -> np.ndarray:
        b, t = clips.shape[:2]
        chw = torch.from_numpy(clips).permute(0, 1, 4, 2, 3)  # [B, T, 3, S, S]
        if self.settings.raw:
            return chw.reshape(b, t, -1).numpy()
        frames = chw.reshape(b * t, *chw.shape[2:])
        out = [self.backbone(chunk.to(self.device).float().div_(255)).float().cpu()
               for chunk in frames.split(self.frame_batch)]
        return torch.cat(out).reshape(b, t, -1).numpy()


def load_cache(folder: Path, settings: FrameSettings, fp: str) -> CacheResult | None:
    """The complete cache in ``folder`` for these settings and source, or None."""
    manifest = _read_json(folder / "manifest.json")
    if not manifest or manifest.get("version") != FORMAT_VERSION:
        return None
    if manifest.get("settings") != asdict(settings) or manifest.get("fingerprint") != fp:
        return None
    splits = {}
    for name, meta in manifest["splits"].items():
        index = _read_json(folder / f"{name}.index.json")
        path = folder / f"{name}.npy"
        if index is None or not path.exists():
            return None
        x = np.load(path, mmap_mode="r")
        if list(x.shape) != meta["shape"]:
            return None
        skipped = meta["skipped"]
        ok = np.ones(len(x), dtype=bool)
        ok[[s["row"] for s in skipped]] = False
        labels, groups = np.array(index["labels"]), np.array(index["groups"])
        splits[name] = CachedSplit(x, ok, labels, groups, skipped)
    return CacheResult(folder, splits, reused=True)


def build_cache(
    folder: str | Path,
    splits: dict[str, list[Clip]],
    settings: FrameSettings,
    *,
    device: torch.device | str = "cpu",
    clip_batch: int = 16,
    workers: int = 2,
    on_chunk: Callable[[str, int, int], None] | None = None,
) -> CacheResult:
    """Reuse the complete cache in ``folder``, or extract (resuming any unfinished run).

    ``on_chunk(split, done, total)`` is called after each chunk is safely on disk.
    """
    folder = Path(folder)
    fp = fingerprint(splits)
    done = load_cache(folder, settings, fp)
    if done is not None:
        return done
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".lock"):  # sweep workers sharing a cache: one extracts, the others then reuse
        done = load_cache(folder, settings, fp)
        if done is not None:
            return done
        return _extract(folder, splits, settings, fp, torch.device(device), clip_batch, workers,
                        on_chunk)


def _extract(folder: Path, splits: dict[str, list[Clip]], settings: FrameSettings, fp: str,
             device: torch.device, clip_batch: int, workers: int,
             on_chunk: Callable[[str, int, int], None] | None) -> CacheResult:
    # Random (weights=none) networks are drawn from the source's fingerprint: a rerun or a resumed
    # extraction embeds with the same network.
    embedder = FrameEmbedder(settings, device, seed=int(fp[:8], 16))
    state = _resume_state(folder, splits, settings, fp)
    remaining = sum(len(c) - state["done"][n] for n, c in splits.items())
    bar = progress(None, total=remaining, unit="clip", desc=f"features {settings.features}")
    pool = ThreadPoolExecutor(max_workers=max(1, workers))

    def chunk_done(name: str, done: int, total: int, rows: int) -> None:
        bar.update(rows)
        if on_chunk is not None:
            on_chunk(name, done, total)

    try:
        for name, clips in splits.items():
            _extract_split(folder, name, clips, settings, embedder, state, pool, clip_batch, chunk_done)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    _write_json(folder / "manifest.json", _manifest(splits, settings, fp, embedder, state))  # a complete cache
    (folder / "state.json").unlink(missing_ok=True)
    result = load_cache(folder, settings, fp)
    assert result is not None
    result.reused = False
    result.clips_per_second = state["clips"] / state["seconds"] if state["seconds"] > 0 else None
    return result


def _resume_state(folder: Path, splits: dict[str, list[Clip]], s: FrameSettings, fp: str) -> dict[str, Any]:
    """The saved progress of an interrupted extraction with these settings, or a fresh start (stale files gone)."""
    state = _read_json(folder / "state.json")
    if state and state.get("settings") == asdict(s) and state.get("fingerprint") == fp:
        return state
    (folder / "manifest.json").unlink(missing_ok=True)
    for name, clips in splits.items():
        for stale in (f"{name}.npy", f"{name}.partial.npy"):
            (folder / stale).unlink(missing_ok=True)
        _write_json(folder / f"{name}.index.json", {
            "paths": [c.rel for c in clips], "labels": [c.label for c in clips],
            "groups": [c.group for c in clips]})
    state = {"settings": asdict(s), "fingerprint": fp, "done": {n: 0 for n in splits},
             "skipped": {n: [] for n in splits}, "seconds": 0.0, "clips": 0}
    _write_json(folder / "state.json", state)
    return state


def _extract_split(folder: Path, name: str, clips: list[Clip], s: FrameSettings, embedder: FrameEmbedder,
                   state: dict[str, Any], pool: ThreadPoolExecutor, clip_batch: int,
                   on_chunk: Callable[[str, int, int, int], Any]) -> None:
    """Embed one split's clips in chunks, decoding the next chunk while this one is embedded; the state is
    saved after each chunk's rows are on disk, so an interruption resumes at the next chunk."""
    final, partial = folder / f"{name}.npy", folder / f"{name}.partial.npy"
    start = state["done"][name]
    if start >= len(clips) and final.exists():
        return
    if start > 0 and partial.exists():
        x = np.load(partial, mmap_mode="r+")
    else:
        start, state["skipped"][name] = 0, []
        x = np.lib.format.open_memmap(partial, mode="w+", dtype=embedder.dtype,
                                      shape=(len(clips), s.frames, embedder.dim))

    def decode(row: int) -> np.ndarray | str:
        rng = np.random.default_rng([s.seed, row])  # fixed per clip: resuming gives the same frames
        try:
            return read_clip(clips[row], s, train=name == "train", rng=rng)
        except UnreadableVideo as e:
            return e.reason

    chunks = [range(i, min(i + clip_batch, len(clips))) for i in range(start, len(clips), clip_batch)]
    ahead: list[Future] | None = None
    for k, rows in enumerate(chunks):
        t0 = time.perf_counter()
        futures = ahead or [pool.submit(decode, r) for r in rows]
        if k + 1 < len(chunks):
            ahead = [pool.submit(decode, r) for r in chunks[k + 1]]
        decoded = [f.result() for f in futures]
        good = [i for i, d in enumerate(decoded) if not isinstance(d, str)]
        if good:
            x[[rows[i] for i in good]] = embedder(np.stack([decoded[i] for i in good]))
        for i, d in enumerate(decoded):
            if isinstance(d, str):
                x[rows[i]] = 0
                state["skipped"][name].append({"row": rows[i], "clip": clips[rows[i]].rel, "reason": d})
        x.flush()
        state["done"][name] = rows[-1] + 1
        state["clips"] += len(rows)
        state["seconds"] += time.perf_counter() - t0
        _write_json(folder / "state.json", state)  # only after the rows are on disk
        on_chunk(name, rows[-1] + 1, len(clips), len(rows))
    del x
    partial.replace(final)


def read_clip(clip: Clip, s: FrameSettings, *, train: bool, rng: np.random.Generator) -> np.ndarray:
    """A clip's sampled frames ``[frames, size, size, 3]``, from a video file or a folder of frames."""
    if clip.path.is_dir():
        if clip.segment is None:
            raise UnreadableVideo(clip.path, "a folder of frames needs the first and last frame numbers")
        first, last = (int(v) for v in clip.segment)
        return decode_frames(clip.path, first, last, s.frames, s.size, sampling=s.sampling, train=train, rng=rng)
    return decode_clip(clip.path, s.frames, s.size, sampling=s.sampling, train=train, rng=rng,
                       segment=clip.segment)


def _manifest(splits: dict[str, list[Clip]], s: FrameSettings, fp: str, embedder: FrameEmbedder,
              state: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": FORMAT_VERSION,
        "settings": asdict(s),
        "description": s.describe(),
        "fingerprint": fp,
        "splits": {n: {"shape": [len(c), s.frames, embedder.dim], "dtype": str(embedder.dtype),
                       "skipped": state["skipped"][n]} for n, c in splits.items()},
        "extraction_seconds": state["seconds"],
        "clips_per_second": state["clips"] / state["seconds"] if state["seconds"] > 0 else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
