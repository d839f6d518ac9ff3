"""UCF101 action recognition, or any folder in its layout: ``ucf101:ROOT``.

Layout (the official one; ``echoes data make-videos ROOT`` writes a synthetic set)::

    ROOT/UCF-101/<Class>/v_<Class>_gXX_cYY.avi
    ROOT/ucfTrainTestlist/classInd.txt             "1 ApplyEyeMakeup" (1-based, CRLF)
    ROOT/ucfTrainTestlist/trainlist0N.txt          "ApplyEyeMakeup/v_..._g08_c01.avi 1"
    ROOT/ucfTrainTestlist/testlist0N.txt           "ApplyEyeMakeup/v_..._g01_c01.avi" (no label)

A clip's class is its folder (``HandstandPushups/`` holds ``v_HandStandPushups_*``
files, so file names are never parsed for the class); its group ``gXX`` (one
actor and scene) comes from the file name and keeps the validation split honest:
a group is never split between train and validation.

Each clip becomes a sequence of ``frames`` frames (``sampling`` = uniform or
segments, see ``video/decode.py``), each a feature vector from the ``features``
backbone — ``small_cnn`` by default (built in, no weights to fetch; 16 frames of
64 px), or ``resnet18`` / ``resnet50`` / ``efficientnet_b3`` with ``weights``
``imagenet`` (their default) or ``none``. Features are extracted once into a
cache folder under ``cache_dir`` (default ``$XDG_CACHE_HOME/echoes`` or
``~/.cache/echoes``) and memory-mapped on every later run; see ``video/cache.py``.

``features=frames`` keeps the pixels instead, for end-to-end video models
(``r2plus1d_18``, ``cnn_lstm``, ``cnn_transformer``): each frame is a flat uint8
``3·size·size`` vector (channels, rows, columns; default size 112), stored in the
cache as a memory-mapped array and never standardised — the model reshapes it to
``[B, T, 3, size, size]``, normalises and augments it itself.

Unreadable clips are skipped with a warning naming each one; the count is the
run's ``skipped_files`` metric.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import EchoesError
from . import SourceData, register_source
from .sequences import Sequences
from .video.cache import CachedSplit, Clip, FrameSettings, extract_source

GROUP = re.compile(r"_g(\d+)_c(\d+)\.\w+$", re.IGNORECASE)
RAW_FRAMES_SIZE = 112


def _missing(path: Path) -> EchoesError:
    return EchoesError(f"ucf101: {path} not found — ROOT must hold UCF-101/ and ucfTrainTestlist/ "
                       "(make a synthetic set with `echoes data make-videos ROOT`)")


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise _missing(path)
    text = path.read_bytes().decode("utf-8-sig", errors="replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_classes(lists: Path) -> list[str]:
    """Class names in classInd.txt order (its indices are 1-based)."""
    path = lists / "classInd.txt"
    entries = {}
    for n, line in enumerate(_lines(path), 1):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise EchoesError(f"ucf101: {path} line {n} should be 'INDEX ClassName', got '{line}'")
        entries[int(parts[0])] = parts[1]
    if sorted(entries) != list(range(1, len(entries) + 1)):
        raise EchoesError(f"ucf101: {path} must number its classes 1..N without gaps")
    return [entries[i] for i in range(1, len(entries) + 1)]


def read_split(root: Path, split: int) -> tuple[list[str], dict[str, list[Clip]]]:
    """(class names, {"train": [Clip], "test": [Clip]}) of official split 1, 2 or 3."""
    if split not in (1, 2, 3):
        raise EchoesError(f"ucf101: data.split must be 1, 2 or 3, got {split!r}")
    videos, lists = root / "UCF-101", root / "ucfTrainTestlist"
    if not videos.is_dir():
        raise _missing(videos)
    classes = read_classes(lists)
    index = {name.lower(): i for i, name in enumerate(classes)}
    out: dict[str, list[Clip]] = {}
    for part in ("train", "test"):
        path = lists / f"{part}list0{split}.txt"
        clips = []
        for n, line in enumerate(_lines(path), 1):
            rel, *label = line.replace("\\", "/").split()
            folder = rel.split("/")[0]
            where = f"ucf101: {path.name} line {n}"
            if "/" not in rel or folder.lower() not in index:
                raise EchoesError(f"{where}: '{rel}' is not in a class folder of classInd.txt")
            cls = index[folder.lower()]
            if label and (not label[0].isdigit() or int(label[0]) != cls + 1):
                raise EchoesError(f"{where}: label {label[0]} does not match folder {folder} "
                                  f"(class {cls + 1} in classInd.txt)")
            group = GROUP.search(rel)
            if group is None:
                raise EchoesError(f"{where}: no group in '{rel}' — names end _gXX_cYY.avi")
            clips.append(Clip(videos / rel, rel, cls, int(group.group(1))))
        if not clips:
            raise EchoesError(f"ucf101: {path} lists no clips")
        out[part] = clips
    return classes, out


def _sequences(cached: CachedSplit, raw: bool) -> tuple[Sequences, np.ndarray]:
    """A cached split as Sequences (readable clips only) and their groups.

    Features are read into memory (small: 13k clips × 16 × 512 floats = 0.4 GB);
    raw frames stay memory-mapped and are read batch by batch.
    """
    lengths = np.full(len(cached.labels), cached.x.shape[1])
    seqs = Sequences(cached.x if raw else np.array(cached.x), lengths, cached.labels)
    if cached.ok.all():
        return seqs, cached.groups
    keep = np.flatnonzero(cached.ok)
    return seqs.subset(keep), cached.groups[keep]


def frame_settings(*, features: str = "small_cnn", weights: str | None = None, frames: int = 16,
                   size: int | None = None, sampling: str = "uniform", seed: int = 0,
                   source: str = "ucf101") -> FrameSettings:
    """What each frame becomes, defaults filled in and checked (also how a trained model's frames are made
    when it streams); errors name ``source``."""
    from .video.backbones import backbone_info, resolve_weights
    from .video.decode import SAMPLING

    if sampling not in SAMPLING:
        raise EchoesError(f"{source}: data.sampling must be {' or '.join(SAMPLING)}, got '{sampling}'")
    if not isinstance(frames, int) or frames < 1:
        raise EchoesError(f"{source}: data.frames must be a positive integer, got {frames!r}")
    if features == "frames":
        weights, default_size = "none", RAW_FRAMES_SIZE
    else:
        default_size = backbone_info(features).default_size
        weights = resolve_weights(features, weights)
    size = default_size if size is None else size
    if not isinstance(size, int) or size < 8:
        raise EchoesError(f"{source}: data.size must be an integer >= 8 (pixels), got {size!r}")
    segments = sampling == "segments"  # only segment sampling draws (seeded) training offsets
    return FrameSettings(features, weights, frames, size, sampling, seed if segments else 0)


@register_source("ucf101")
def ucf101(
    name: str,
    *,
    seed: int = 0,
    split: int = 1,
    features: str = "small_cnn",
    weights: str | None = None,
    frames: int = 16,
    size: int | None = None,
    sampling: str = "uniform",
    cache_dir: str | None = None,
    device: str = "auto",
    workers: int = 2,
    clip_batch: int = 16,
) -> SourceData:
    """UCF101-layout action videos (ucf101:ROOT) as per-frame CNN features, cached once.

    ``split``: the official train/test split, 1-3; ``features``: small_cnn, resnet18, resnet50,
    efficientnet_b3, or frames (raw pixels for video models); ``weights``: imagenet or none (null: the
    backbone's default); ``frames``: frames per clip; ``size``: frame side in pixels (null: the backbone's);
    ``sampling``: uniform or segments; ``cache_dir``: where features are cached (null: ~/.cache/echoes);
    ``device``: where features are extracted (auto, cpu, cuda); ``workers``: decoding processes;
    ``clip_batch``: clips per extraction batch.
    """
    from ..utils import resolve_device

    settings = frame_settings(features=features, weights=weights, frames=frames, size=size,
                              sampling=sampling, seed=seed)
    raw = settings.raw
    root = Path(name).expanduser()
    classes, splits = read_split(root, split)

    # one folder per dataset copy and settings; a changed source is re-extracted in place
    folder, cache, skipped = extract_source("ucf101", root, splits, settings, prefix=f"split{split}-",
                                            cache_dir=cache_dir, device=resolve_device(device), workers=workers,
                                            clip_batch=clip_batch)
    train, groups = _sequences(cache.splits["train"], raw)
    test, _ = _sequences(cache.splits["test"], raw)
    info = {
        "feature_cache": str(folder),
        "features": settings.describe(),
        "cache_reused": cache.reused,
        "skipped_files": skipped,
    }
    if cache.clips_per_second is not None:
        info["extraction_clips_per_second"] = cache.clips_per_second
    return SourceData(train=train, test=test, class_names=classes, train_groups=groups, info=info,
                      standardize=not raw)
