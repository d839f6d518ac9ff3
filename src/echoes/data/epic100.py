"""EPIC-KITCHENS-100 action recognition — a verb and a noun per action: ``epic100:ROOT``.

Layout (the official one; ``echoes data make-epic ROOT`` writes a synthetic set)::

    ROOT/PXX/videos/PXX_YY.MP4                       the videos, or their extracted frames:
    ROOT/PXX/rgb_frames/PXX_YY/frame_0000000001.jpg    (numbered from 1, as start_frame / stop_frame)
    ROOT/[annotations/]EPIC_100_train.csv            the official annotations, in ROOT or ROOT/annotations
    ROOT/[annotations/]EPIC_100_validation.csv         (a clone of epic-kitchens-100-annotations)
    ROOT/[annotations/]EPIC_100_verb_classes.csv     id, key, ... (class names = keys by id)
    ROOT/[annotations/]EPIC_100_noun_classes.csv
    optional: EPIC_100_unseen_participant_ids_validation.csv, EPIC_100_tail_verbs.csv, EPIC_100_tail_nouns.csv

Every annotated action (a segment of a long video) becomes a sequence of
``frames`` frames sampled inside it — TSN segments (one frame at a seeded random
offset in each of ``frames`` equal parts) for training, the parts' centres for
evaluation. In a video the action's start and stop timestamps become frames at
the frame rate the file declares; a folder of frames is read by start_frame and
stop_frame. Each frame goes through the ``features`` backbone into the same
resumable feature cache as ``ucf101:`` (``video/cache.py``; same options).

Labels have two heads, ``verb`` and ``noun`` (the class files' keys). The test
split is the official validation set — what the run reports, with its narration
ids, the "unseen" participants' mask and the tail classes for the per-subset
metrics; validation for model selection holds out whole training participants
(``val_participants``), or is a random slice (``val_participants=0``, then
``data.val_fraction``). Unreadable videos or frames are skipped with a warning
naming each action; the count is the run's ``skipped_files`` metric.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..errors import EchoesError
from . import SourceData, register_source
from .heads import Heads
from .sequences import Sequences
from .ucf101 import frame_settings
from .video.cache import CachedSplit, Clip, extract_source

TRAIN, VALIDATION = "EPIC_100_train.csv", "EPIC_100_validation.csv"
CLASSES = {"verb": "EPIC_100_verb_classes.csv", "noun": "EPIC_100_noun_classes.csv"}
UNSEEN = "EPIC_100_unseen_participant_ids_validation.csv"
TAILS = {"verb": "EPIC_100_tail_verbs.csv", "noun": "EPIC_100_tail_nouns.csv"}
ACTION_COLUMNS = ("narration_id", "participant_id", "video_id", "start_timestamp", "stop_timestamp",
                  "start_frame", "stop_frame", "verb_class", "noun_class")
FIX = "use the official file from github.com/epic-kitchens/epic-kitchens-100-annotations"


def find_annotations(root: Path) -> Path:
    """The folder holding the annotation CSVs: ROOT or ROOT/annotations."""
    for folder in (root, root / "annotations"):
        if (folder / TRAIN).is_file():
            return folder
    raise EchoesError(f"epic100: {TRAIN} not found in {root} or {root / 'annotations'} — put the official "
                      "annotations there (github.com/epic-kitchens/epic-kitchens-100-annotations) or make a "
                      "synthetic set with `echoes data make-epic ROOT`")


def read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """The rows of a CSV file with at least ``columns``."""
    if not path.is_file():
        raise EchoesError(f"epic100: {path} not found — {FIX}")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise EchoesError(f"epic100: {path} has no column {', '.join(missing)} — {FIX}")
        return list(reader)


def _int(value: str, path: Path, line: int, column: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise EchoesError(f"epic100: {path.name} line {line}: {column} '{value}' is not a whole number — "
                          f"{FIX}") from None


def read_classes(path: Path) -> list[str]:
    """Class names (keys) in id order; ids must be 0..N-1."""
    rows = read_csv(path, ("id", "key"))
    keys = {_int(r["id"], path, n, "id"): r["key"] for n, r in enumerate(rows, 2)}
    if sorted(keys) != list(range(len(rows))) or len(rows) < 2:
        raise EchoesError(f"epic100: {path} must number two or more classes 0..N-1 without gaps — {FIX}")
    return [keys[i] for i in range(len(keys))]


def seconds(value: str, path: Path, line: int, column: str) -> float:
    """EPIC's ``HH:MM:SS.fff`` (or plain seconds) in seconds."""
    try:
        parts = [float(p) for p in value.strip().split(":")]
        if len(parts) > 3 or any(p < 0 for p in parts):
            raise ValueError
    except ValueError:
        raise EchoesError(f"epic100: {path.name} line {line}: {column} '{value}' is not a time HH:MM:SS.fff — "
                          f"{FIX}") from None
    return sum(p * 60**i for i, p in enumerate(reversed(parts)))


def _media(root: Path, participant: str, video: str) -> tuple[Path, bool]:
    """(the video file, or its folder of extracted frames; whether it exists)."""
    videos = root / participant / "videos"
    for name in (f"{video}.MP4", f"{video}.mp4"):
        if (videos / name).is_file():
            return videos / name, True
    frames = root / participant / "rgb_frames" / video
    return (frames, True) if frames.is_dir() else (videos / f"{video}.MP4", False)


def read_actions(root: Path, path: Path, heads: Heads, people: dict[str, int]) -> list[Clip]:
    """One :class:`Clip` per annotated action: its segment, narration id, label code and participant (its
    number in ``people``, which grows as new participants come)."""
    rows = read_csv(path, ACTION_COLUMNS)
    if not rows:
        raise EchoesError(f"epic100: {path} lists no actions — {FIX}")
    media: dict[str, tuple[Path, bool]] = {}
    clips = []
    for n, r in enumerate(rows, 2):  # line 1 is the header
        labels = []
        for head, size in zip(heads.names, heads.sizes, strict=True):
            c = _int(r[f"{head}_class"], path, n, f"{head}_class")
            if not 0 <= c < size:
                raise EchoesError(f"epic100: {path.name} line {n}: {head}_class {c} is not a class of "
                                  f"{CLASSES[head]} (0..{size - 1}) — use the class files that came with "
                                  "these annotations")
            labels.append(c)
        video = r["video_id"]
        if video not in media:
            media[video] = _media(root, r["participant_id"], video)
        file, _ = media[video]
        if file.is_dir():  # extracted frames: by number
            segment = (float(_int(r["start_frame"], path, n, "start_frame")),
                       float(_int(r["stop_frame"], path, n, "stop_frame")))
        else:  # a video: by time, placed at the file's own frame rate
            segment = (seconds(r["start_timestamp"], path, n, "start_timestamp"),
                       seconds(r["stop_timestamp"], path, n, "stop_timestamp"))
        group = people.setdefault(r["participant_id"], len(people))
        clips.append(Clip(file, r["narration_id"], int(heads.encode(np.array([labels]))[0]), group, segment))
    if not any(found for _, found in media.values()):
        first = next(iter(media.values()))[0]
        raise EchoesError(f"epic100: no video of {path.name} found (e.g. {first}) — ROOT must hold "
                          "PXX/videos/PXX_YY.MP4 or PXX/rgb_frames/PXX_YY/frame_0000000001.jpg")
    return clips


def participant_split(groups: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) holding out ``fraction`` of the participants, each one whole."""
    people = np.unique(groups)
    np.random.default_rng(seed).shuffle(people)
    n_val = min(max(1, round(len(people) * fraction)), len(people) - 1)
    val = np.isin(groups, people[:n_val])
    return np.flatnonzero(~val), np.flatnonzero(val)


def _readable(cached: CachedSplit, raw: bool) -> tuple[Sequences, np.ndarray]:
    """A cached split's readable actions as Sequences, and their rows. Features are read into memory;
    raw pixels stay memory-mapped."""
    keep = np.flatnonzero(cached.ok)
    x = cached.x if raw else np.asarray(cached.x)
    seqs = Sequences(x, np.full(len(cached.labels), cached.x.shape[1]), cached.labels)
    return (seqs if len(keep) == len(cached.ok) else seqs.subset(keep)), keep


@register_source("epic100")
def epic100(
    name: str,
    *,
    seed: int = 0,
    features: str = "small_cnn",
    weights: str | None = None,
    frames: int = 16,
    size: int | None = None,
    sampling: str = "segments",
    val_participants: float = 0.2,
    cache_dir: str | None = None,
    device: str = "auto",
    workers: int = 2,
    clip_batch: int = 16,
) -> SourceData:
    """EPIC-KITCHENS-100 actions (epic100:ROOT) as per-frame CNN features with verb and noun labels, cached once.

    ``features``: small_cnn, resnet18, resnet50, efficientnet_b3, or frames (raw pixels for video models);
    ``weights``: imagenet or none (null: the backbone's default); ``frames``: frames per action; ``size``: frame
    side in pixels (null: the backbone's); ``sampling``: segments (TSN) or uniform; ``val_participants``: share
    of the training participants held out whole for validation (0: a random slice of data.val_fraction);
    ``cache_dir``: where features are cached (null: ~/.cache/echoes); ``device``: where features are extracted
    (auto, cpu, cuda); ``workers``: decoding threads; ``clip_batch``: actions per extraction batch.
    """
    from ..utils import resolve_device

    if not 0 <= val_participants < 1:
        raise EchoesError(f"epic100: data.val_participants must be in [0, 1), got {val_participants}")
    settings = frame_settings(features=features, weights=weights, frames=frames, size=size, sampling=sampling,
                              seed=seed, source="epic100")
    root = Path(name).expanduser()
    ann = find_annotations(root)
    heads = Heads.of({head: read_classes(ann / file) for head, file in CLASSES.items()})
    people: dict[str, int] = {}
    splits = {"train": read_actions(root, ann / TRAIN, heads, people),
              "test": read_actions(root, ann / VALIDATION, heads, people)}

    folder, cache, skipped = extract_source("epic100", root, splits, settings, item="action", cache_dir=cache_dir,
                                            device=resolve_device(device), workers=workers, clip_batch=clip_batch)
    train, train_rows = _readable(cache.splits["train"], settings.raw)
    test, test_rows = _readable(cache.splits["test"], settings.raw)
    tested = [splits["test"][i] for i in test_rows]
    who = list(people)  # participant ids by group number
    info = {
        "feature_cache": str(folder),
        "features": settings.describe(),
        "cache_reused": cache.reused,
        "skipped_files": skipped,
        "test_ids": [c.rel for c in tested],
    }
    if cache.clips_per_second is not None:
        info["extraction_clips_per_second"] = cache.clips_per_second
    if (ann / UNSEEN).is_file():
        unseen = {r["participant_id"] for r in read_csv(ann / UNSEEN, ("participant_id",))}
        info["test_subsets"] = {"unseen": np.array([who[c.group] in unseen for c in tested], dtype=bool)}
    tails = {}
    for head, file in TAILS.items():
        if (ann / file).is_file():
            keys = {k: i for i, k in enumerate(heads.classes[heads.names.index(head)])}
            tails[head] = sorted({_tail_class(r[head], keys, ann / file, n)
                                  for n, r in enumerate(read_csv(ann / file, (head,)), 2)})
    if tails:
        info["tail_classes"] = tails

    val = None
    groups = np.array([splits["train"][i].group for i in train_rows])
    if val_participants > 0 and len(np.unique(groups)) > 1:
        tr, va = participant_split(groups, val_participants, seed)
        info["val_participants"] = ",".join(sorted({who[g] for g in groups[va]}))
        train, val = train.subset(tr), train.subset(va)
    return SourceData(train=train, test=test, class_names=heads.output_names, val=val, heads=heads, info=info,
                      standardize=not settings.raw)


def _tail_class(value: str, keys: dict[str, int], path: Path, line: int) -> int:
    """A tail class by id or by key."""
    value = value.strip()
    if value.isdigit() and int(value) < len(keys):
        return int(value)
    if value in keys:
        return keys[value]
    raise EchoesError(f"epic100: {path.name} line {line}: '{value}' is not a class id or key — use the tail "
                      "file that came with these annotations")
