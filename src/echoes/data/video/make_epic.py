"""A synthetic kitchen-action set in exactly the EPIC-KITCHENS-100 layout: ``echoes data make-epic ROOT``.

Writes, like the official download and annotations repository::

    ROOT/PXX/videos/PXX_YY.MP4                       one video per recording, several actions in each
    ROOT/annotations/EPIC_100_train.csv              narration_id, participant_id, video_id, ..., verb_class,
    ROOT/annotations/EPIC_100_validation.csv           noun_class, all_nouns, all_noun_classes
    ROOT/annotations/EPIC_100_{verb,noun}_classes.csv  id, key, instances, category
    ROOT/annotations/EPIC_100_unseen_participant_ids_validation.csv
    ROOT/annotations/EPIC_100_tail_{verbs,nouns}.csv

A participant is a kitchen (one background, one frame rate: 25 or 30 fps, so the
rate must be read from each file). Each video is a run of actions with idle
frames between them; an action shows one object (the **noun**: its shape and
colours) moving in one way (the **verb**: taken up, put down, pushed, pulled,
opened = growing, closed = shrinking, shaken, turned). Verbs come in time-reversed
pairs, so only the order of frames tells them apart. Two pairs of nouns look
alike — a plate and a lid, a knife and a spoon — and are used with different
verbs, so such a noun is known only together with its verb. Verb–noun pairs
follow a long tail: the verbs' and nouns' frequencies fall off as a power law
and each pair's is scaled by a random factor, so a few pairs are frequent and
many rare. The rarest classes that together make up 20% of the training actions
are the tail classes (EPIC's definition).

The first participants are seen: all but their last video train, the last one
validates. The remaining ("unseen") participants appear only in validation.
Everything is deterministic per seed; files are written to a staging folder
and moved into place at the end.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import EchoesError
from .make_videos import MIDPOINT, SCALE_RANGE, TRAVEL, TURN, ZOOM, _background, _draw, write_video

# name, category, motion: the verbs in order of frequency; time-reversed twins side by side
VERBS = [
    ("take", "retrieve", "up"), ("put", "leave", "down"),
    ("push", "move", "right"), ("pull", "move", "left"),
    ("open", "access", "grow"), ("close", "block", "shrink"),
    ("shake", "move", "shake"), ("turn", "rotate", "turn"),
]
# name, category, shape, its two colours: the nouns in order of frequency. A noun with the shape and colours
# of an earlier one is its look-alike twin: the two take turns over the verbs (the earlier one the even ones).
NOUNS = [
    ("plate", "crockery", "ellipse", ((0.92, 0.92, 0.86), (0.45, 0.5, 0.6))),
    ("lid", "cookware", "ellipse", ((0.92, 0.92, 0.86), (0.45, 0.5, 0.6))),
    ("cup", "crockery", "pentagon", ((0.85, 0.12, 0.1), (0.92, 0.92, 0.92))),
    ("knife", "cutlery", "rectangle", ((0.85, 0.85, 0.9), (0.12, 0.12, 0.12))),
    ("spoon", "cutlery", "rectangle", ((0.85, 0.85, 0.9), (0.12, 0.12, 0.12))),
    ("bowl", "crockery", "triangle", ((0.1, 0.3, 0.85), (0.92, 0.8, 0.15))),
    ("bottle", "container", "kite", ((0.1, 0.65, 0.2), (0.92, 0.92, 0.92))),
    ("pan", "cookware", "pentagon", ((0.1, 0.1, 0.1), (0.6, 0.35, 0.1))),
    ("sponge", "cleaning", "rectangle", ((0.95, 0.85, 0.1), (0.1, 0.55, 0.2))),
    ("board", "furniture", "kite", ((0.6, 0.4, 0.2), (0.9, 0.75, 0.5))),
]
FPS = (30, 25)  # by participant, in turn
VERB_TAIL, NOUN_TAIL = 0.8, 0.8  # power-law exponents of the verbs' and nouns' frequencies
PAIR_SPREAD = 1.0  # log-normal spread of each verb–noun pair's own factor
TAIL_SHARE = 0.2  # the tail: the rarest classes making up this share of the training actions
TILT = 0.3  # radians: how far an object leans at random (more would blur its shape)
SHAKE = (0.1, 0.16)  # amplitude of a shake, as a fraction of the shorter side
SHAKES = (1.5, 2.5)  # back-and-forth cycles of a shake
GAP = (4, 12)  # idle frames between actions
STAGING = ".make-epic-partial"
COLUMNS = ["narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
           "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun",
           "noun_class", "all_nouns", "all_noun_classes"]


def twin_of(n: int) -> int | None:
    """The earlier noun that noun ``n`` looks exactly like, if any."""
    look = NOUNS[n][2:]
    return next((m for m in range(n) if NOUNS[m][2:] == look), None)


def allowed_pairs(verbs: int, nouns: int) -> np.ndarray:
    """[verbs, nouns] bool: look-alike twins split the verbs (the first twin the even ones, the other the odd)."""
    ok = np.ones((verbs, nouns), dtype=bool)
    for n in range(nouns):
        m = twin_of(n)
        if m is not None:
            ok[1::2, m] = False
            ok[0::2, n] = False
    return ok


def pair_probabilities(verbs: int, nouns: int, seed: int) -> np.ndarray:
    """[verbs, nouns] probabilities of the verb–noun pairs: a long tail (see the module docstring)."""
    rng = np.random.default_rng([seed, 1])
    v = (1.0 + np.arange(verbs)) ** -VERB_TAIL
    n = (1.0 + np.arange(nouns)) ** -NOUN_TAIL
    p = np.outer(v, n) * np.exp(PAIR_SPREAD * rng.standard_normal((verbs, nouns))) * allowed_pairs(verbs, nouns)
    return p / p.sum()


def tail_classes(counts: np.ndarray, share: float = TAIL_SHARE) -> list[int]:
    """The rarest classes whose instances together make up at most ``share`` of all (at least one)."""
    order = np.argsort(counts, kind="stable")
    cum = np.cumsum(counts[order]) / max(1, counts.sum())
    return sorted(int(c) for c in order[: max(1, int((cum <= share).sum()))])


def timestamp(seconds: float) -> str:
    """EPIC's HH:MM:SS.mmm."""
    ms = round(seconds * 1000)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


def _action(rng: np.random.Generator, motion: str, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An object's path over ``length`` frames: centres [T, 2] and radii [T] (fractions of the shorter side)
    and angles [T]."""
    lo, hi = SCALE_RANGE
    t = np.linspace(-0.5, 0.5, length)
    centre = rng.uniform(*MIDPOINT, 2)
    pos = np.tile(centre, (length, 1))
    radius = np.full(length, math.exp(rng.uniform(math.log(lo), math.log(hi))))
    angle = np.full(length, rng.uniform(-TILT, TILT))
    directions = {"up": (0, -1), "down": (0, 1), "right": (1, 0), "left": (-1, 0)}
    if motion in directions:
        pos = centre + np.outer(t * rng.uniform(*TRAVEL), directions[motion])
    elif motion in ("grow", "shrink"):
        ratio = math.exp(rng.uniform(math.log(ZOOM), math.log(hi / lo)))
        small = math.exp(rng.uniform(math.log(lo), math.log(hi / ratio)))
        radius = small * ratio ** ((t if motion == "grow" else -t) + 0.5)
    elif motion == "shake":
        swing = np.sin(2 * np.pi * rng.uniform(*SHAKES) * (t + 0.5)) * rng.uniform(*SHAKE)
        pos = centre + np.outer(swing, (1, 0))
    else:  # turn: clockwise on screen
        angle = angle + t * rng.uniform(*TURN) * np.pi
    return pos, radius, angle


def _video(rng: np.random.Generator, background: np.ndarray, actions: list[tuple[int, int]], min_frames: int,
           max_frames: int, noise: float) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """A recording of ``actions`` (verb, noun) with idle frames around them: uint8 [T, H, W, 3] and each
    action's frames [first, stop)."""
    h, w = background.shape[:2]
    side = min(h, w)
    left, top = (w - side) / 2, (h - side) / 2  # actions stay in the centre square (the crop)
    spans, t = [], int(rng.integers(*GAP, endpoint=True))
    for _ in actions:
        length = int(rng.integers(min_frames, max_frames, endpoint=True))
        spans.append((t, t + length))
        t += length + int(rng.integers(*GAP, endpoint=True))
    lighting = np.float32(rng.uniform(0.95, 1.05))
    video = np.empty((t, h, w, 3), dtype=np.float32)
    video[:] = background * lighting
    for (verb, noun), (a, b) in zip(actions, spans, strict=True):
        pos, radius, angle = _action(rng, VERBS[verb][2], b - a)
        colours = np.clip(np.array(NOUNS[noun][3]) + rng.normal(0, 0.04, (2, 3)), 0, 1)
        for i in range(b - a):
            _draw(video[a + i], NOUNS[noun][2], (left + pos[i, 0] * side, top + pos[i, 1] * side),
                  radius[i] * side, angle[i], colours)
    amp = max(1, round(noise * 255 * math.sqrt(3)))  # uniform grain with standard deviation `noise`
    grain = rng.integers(-amp, amp + 1, video.shape, dtype=np.int16)
    pixels = np.clip(video * 255 + 0.5, 0, 255).astype(np.int16) + grain
    return pixels.clip(0, 255).astype(np.uint8), spans


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def make_epic(
    root: str | Path,
    *,
    verbs: int = 6,
    nouns: int = 8,
    participants: int = 6,
    unseen: int = 2,
    videos: int = 4,
    segments: int = 300,
    min_frames: int = 24,
    max_frames: int = 40,
    width: int = 96,
    height: int = 64,
    noise: float = 0.03,
    seed: int = 0,
    force: bool = False,
    on_video: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write the set under ``root``; returns counts. ``participants`` seen ones (``videos`` videos each, the
    last for validation) and ``unseen`` ones (``max(1, videos // 2)`` videos each, validation only) share
    ``segments`` actions. ``on_video(actions)`` is called after each video is written."""
    if not 2 <= verbs <= len(VERBS) or not 2 <= nouns <= len(NOUNS):
        raise EchoesError(f"make-epic: verbs must be 2..{len(VERBS)} and nouns 2..{len(NOUNS)}, "
                          f"got {verbs} and {nouns}")
    if participants < 1 or unseen < 0 or videos < 2 or participants + unseen > 99:
        raise EchoesError("make-epic: need participants >= 1, unseen >= 0 (99 in all) and videos >= 2 "
                          "(one of each seen participant's videos validates)")
    unseen_videos = max(1, videos // 2)
    total_videos = participants * videos + unseen * unseen_videos
    if segments < total_videos or not 2 <= min_frames <= max_frames:
        raise EchoesError(f"make-epic: need segments >= {total_videos} (one per video) and "
                          "2 <= min_frames <= max_frames")
    if width % 2 or height % 2 or min(width, height) < 16:
        raise EchoesError(f"make-epic: width and height must be even and >= 16, got {width}x{height}")
    root = Path(root)
    people = [f"P{p:02d}" for p in range(1, participants + unseen + 1)]
    targets = [root / "annotations", *(root / p for p in people)]
    if any(p.exists() for p in targets) and not force:
        raise EchoesError(f"make-epic: {root} already holds a dataset — choose another folder or pass --force")
    stage = root / STAGING
    shutil.rmtree(stage, ignore_errors=True)  # left by an interrupted run
    (stage / "annotations").mkdir(parents=True)
    t0 = time.perf_counter()

    probs = pair_probabilities(verbs, nouns, seed).ravel()
    per_video = np.full(total_videos, segments // total_videos)
    per_video[: segments % total_videos] += 1
    rows: dict[str, list[list[Any]]] = {"train": [], "validation": []}
    k = 0
    for p, person in enumerate(people):
        seen = p < participants
        fps = FPS[p % len(FPS)]
        background = _background(np.random.default_rng([seed, 2, p]), height, width)  # the kitchen
        (stage / person / "videos").mkdir(parents=True)
        for v in range(videos if seen else unseen_videos):
            rng = np.random.default_rng([seed, 3, p, v])
            codes = rng.choice(len(probs), size=int(per_video[k]), p=probs)
            actions = [(int(c) // nouns, int(c) % nouns) for c in codes]
            k += 1
            frames, spans = _video(rng, background, actions, min_frames, max_frames, noise)
            video_id = f"{person}_{v + 1:02d}"
            write_video(stage / person / "videos" / f"{video_id}.MP4", frames, fps)
            split = "train" if seen and v < videos - 1 else "validation"
            for i, ((verb, noun), (a, b)) in enumerate(zip(actions, spans, strict=True)):
                vname, nname = VERBS[verb][0], NOUNS[noun][0]
                rows[split].append([
                    f"{video_id}_{i}", person, video_id, timestamp(max(0, a - fps // 2) / fps), timestamp(a / fps),
                    timestamp(b / fps), a + 1, b, f"{vname} {nname}", vname, verb, nname, noun,
                    f"['{nname}']", f"[{noun}]"])
            if on_video is not None:
                on_video(len(actions))

    ann = stage / "annotations"
    _write_csv(ann / "EPIC_100_train.csv", COLUMNS, rows["train"])
    _write_csv(ann / "EPIC_100_validation.csv", COLUMNS, rows["validation"])
    train = np.array([[r[10], r[12]] for r in rows["train"]], dtype=np.int64).reshape(-1, 2)
    verb_counts = np.bincount(train[:, 0], minlength=verbs)
    noun_counts = np.bincount(train[:, 1], minlength=nouns)
    _write_csv(ann / "EPIC_100_verb_classes.csv", ["id", "key", "instances", "category"],
               [[i, name, f"['{name}']", cat] for i, (name, cat, _) in enumerate(VERBS[:verbs])])
    _write_csv(ann / "EPIC_100_noun_classes.csv", ["id", "key", "instances", "category"],
               [[i, name, f"['{name}']", cat] for i, (name, cat, *_) in enumerate(NOUNS[:nouns])])
    _write_csv(ann / "EPIC_100_unseen_participant_ids_validation.csv", ["participant_id"],
               [[p] for p in people[participants:]])
    tails = {"verb": tail_classes(verb_counts), "noun": tail_classes(noun_counts)}
    _write_csv(ann / "EPIC_100_tail_verbs.csv", ["verb"], [[c] for c in tails["verb"]])
    _write_csv(ann / "EPIC_100_tail_nouns.csv", ["noun"], [[c] for c in tails["noun"]])

    for target in targets:  # move into place last: a partial dataset never looks complete
        shutil.rmtree(target, ignore_errors=True)
        (stage / target.name).rename(target)
    stage.rmdir()
    pairs = {(r[10], r[12]) for r in rows["train"]}
    return {"root": str(root), "verbs": [v[0] for v in VERBS[:verbs]], "nouns": [n[0] for n in NOUNS[:nouns]],
            "videos": total_videos, "train": len(rows["train"]), "validation": len(rows["validation"]),
            "unseen": people[participants:], "train_pairs": len(pairs), "tail": tails,
            "seconds": time.perf_counter() - t0}
