"""A synthetic action dataset in exactly the UCF101 layout: ``echoes data make-videos ROOT``.

Writes ``ROOT/UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` (MPEG-4 in AVI, like the
real set) and ``ROOT/ucfTrainTestlist/{classInd,trainlist0N,testlist0N}.txt``
with CRLF line endings, 1-based class indices and unlabelled test lists.

Every clip shows one two-tone shape (triangle, rectangle, ellipse, kite,
pentagon; random colours, size and orientation) over a textured background with
a still distractor shape and pixel noise. The class is the shape's *motion*:
moving left/right/up/down, zooming in/out, rotating clockwise/counter-clockwise
(``--classes 6`` leaves out rotation, the hardest pair to see in coarse features).
Positions, orientations and scales are drawn so that any single frame looks the
same for every class, and each class has its time-reversed twin, so averaging
frames cannot tell a direction: only the order of frames does.

A group (``gXX``) of a class shares its background, as a UCF101 group shares an
actor and scene; split N tests on its own block of groups, like the official splits.
Everything is deterministic per seed. Files are written to a hidden staging
folder and moved into place at the end, so an interrupted run never leaves a
dataset that looks complete.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import EchoesError
from ...utils import require

CLASSES = [
    "MoveLeft", "MoveRight", "MoveUp", "MoveDown",
    "ZoomIn", "ZoomOut", "RotateClockwise", "RotateCounterclockwise",
]
_DIRECTIONS = {"MoveLeft": (-1, 0), "MoveRight": (1, 0), "MoveUp": (0, -1), "MoveDown": (0, 1)}
_SHAPES = {  # convex outlines in unit coordinates, vertices in angular order
    "triangle": [(0.0, 1.0), (-0.8, -0.7), (0.8, -0.7)],
    "rectangle": [(-1.0, -0.5), (1.0, -0.5), (1.0, 0.5), (-1.0, 0.5)],
    "kite": [(0.0, 1.2), (-0.6, 0.0), (0.0, -0.6), (0.6, 0.0)],
    "ellipse": [(math.cos(a), 0.55 * math.sin(a)) for a in np.arange(20) * 2 * math.pi / 20],
    "pentagon": [(math.cos(a), 0.7 * math.sin(a)) for a in np.arange(5) * 2 * math.pi / 5],
}
SCALE_RANGE = (0.15, 0.35)  # shape radius, as a fraction of the frame's shorter side
TRAVEL = (0.4, 0.6)  # distance moved, as a fraction of the shorter side
MIDPOINT = (0.35, 0.65)  # where the path's middle lies, same fraction
TURN = (0.5, 1.5)  # rotation, in half turns
ZOOM = 1.6  # least ratio between the first and last scale
BACKDROP = (0.35, 0.65)  # range of the background's base colour
TEXTURE = (0.01, 0.04)  # amplitude of the background's colour waves
GRAIN = 0.02  # the background's fixed grain
BRIGHTNESS = 0.05  # per-clip lighting change
DISTRACTORS = 1  # most still shapes per clip
STAGING = ".make-videos-partial"


def held_out_groups(groups: int, split: int) -> range:
    """1-based groups tested in ``split`` (1–3): UCF101 tests g01–07, g08–14, g15–21 of 25."""
    block = max(1, min(round(groups * 7 / 25), (groups - 1) // 3))
    return range((split - 1) * block + 1, split * block + 1)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 25, codec: str = "mpeg4",
                bit_rate: int = 600_000) -> None:
    """Encode uint8 RGB frames ``[T, H, W, 3]`` (even H, W) into a video file."""
    av = require("av", "video")

    with av.open(str(path), "w", format=Path(path).suffix.lstrip(".").lower() or None) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = bit_rate
        stream.codec_context.thread_count = 1  # the same bytes on every machine
        for img in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A smooth colour field with a fine grain: one per group, like a scene."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.ones((h, w, 3)) * rng.uniform(*BACKDROP, 3)
    for _ in range(4):
        fx, fy = rng.uniform(-5, 5, 2)
        wave = np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
        img += wave[..., None] * rng.uniform(*TEXTURE, 3)
    img += rng.normal(0, GRAIN, (h, w, 1))
    return np.clip(img, 0, 1).astype(np.float32)


def _colours(rng: np.random.Generator) -> np.ndarray:
    """Two strong colours (each channel near 0 or 1), so shapes stand out from the scene."""
    return np.clip(rng.choice([0.1, 0.9], (2, 3)) + rng.normal(0, 0.05, (2, 3)), 0, 1)


def _draw(img: np.ndarray, shape: str, centre: tuple[float, float], radius: float, angle: float,
          colours: np.ndarray) -> None:
    """Paint a two-tone convex shape in place (pixel coordinates)."""
    h, w = img.shape[:2]
    c, s = math.cos(angle), math.sin(angle)
    pts = np.array([(centre[0] + radius * (c * x - s * y), centre[1] + radius * (s * x + c * y))
                    for x, y in _SHAPES[shape]])
    x0, y0 = np.floor(pts.min(0)).astype(int)
    x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    nxt = np.roll(pts, -1, axis=0)
    cross = ((nxt[:, 0] - pts[:, 0])[:, None, None] * (yy - pts[:, 1, None, None])
             - (nxt[:, 1] - pts[:, 1])[:, None, None] * (xx - pts[:, 0, None, None]))
    inside = (cross >= 0).all(0) | (cross <= 0).all(0)
    upper = (-(s) * (xx - centre[0]) + c * (yy - centre[1])) > 0  # which half: shows orientation
    region = img[y0:y1, x0:x1]
    region[inside & upper] = colours[0]
    region[inside & ~upper] = colours[1]


def _clip(rng: np.random.Generator, action: str, background: np.ndarray, length: int,
          noise: float) -> np.ndarray:
    h, w = background.shape[:2]
    side = min(h, w)
    left, top = (w - side) / 2, (h - side) / 2  # motion stays in the centre square (the crop)
    lo, hi = SCALE_RANGE
    t = np.linspace(-0.5, 0.5, length)
    centre = rng.uniform(*MIDPOINT, 2)
    angle = np.full(length, rng.uniform(0, 2 * np.pi))
    radius = np.full(length, math.exp(rng.uniform(math.log(lo), math.log(hi))))
    pos = np.tile(centre, (length, 1))
    if action in _DIRECTIONS:
        pos = centre + np.outer(t * rng.uniform(*TRAVEL), _DIRECTIONS[action])
    elif action.startswith("Rotate"):  # y points down: a positive turn is clockwise on screen
        turn = rng.uniform(*TURN) * np.pi * (1 if action == "RotateClockwise" else -1)
        angle = angle + t * turn
    else:  # zoom between two scales at least ZOOM times apart
        ratio = math.exp(rng.uniform(math.log(ZOOM), math.log(hi / lo)))
        small = math.exp(rng.uniform(math.log(lo), math.log(hi / ratio)))
        grow = t if action == "ZoomIn" else -t
        radius = small * ratio ** (grow + 0.5)
    shape = str(rng.choice(list(_SHAPES)))
    colours = _colours(rng)
    still = background * np.float32(rng.uniform(1 - BRIGHTNESS, 1 + BRIGHTNESS))
    for _ in range(int(rng.integers(0, DISTRACTORS + 1))):  # only the moving shape matters
        spot = (left + rng.uniform(0.1, 0.9) * side, top + rng.uniform(0.1, 0.9) * side)
        _draw(still, str(rng.choice(list(_SHAPES))), spot, rng.uniform(lo, hi) * side,
              rng.uniform(0, 2 * np.pi), _colours(rng))
    video = np.empty((length, h, w, 3), dtype=np.float32)
    for i in range(length):
        video[i] = still
        _draw(video[i], shape, (left + pos[i, 0] * side, top + pos[i, 1] * side), radius[i] * side,
              angle[i], colours)
    # uniform pixel noise with standard deviation `noise` (integer draws: 4x cheaper than Gaussian)
    amp = max(1, round(noise * 255 * math.sqrt(3)))
    grain = rng.integers(-amp, amp + 1, video.shape, dtype=np.int16)
    pixels = np.clip(video * 255 + 0.5, 0, 255).astype(np.int16) + grain
    return pixels.clip(0, 255).astype(np.uint8)


def make_videos(
    root: str | Path,
    *,
    classes: int = 8,
    groups: int = 10,
    clips: int = 8,
    min_frames: int = 36,
    max_frames: int = 60,
    width: int = 128,
    height: int = 96,
    fps: int = 25,
    noise: float = 0.03,
    seed: int = 0,
    force: bool = False,
    long: int = 0,
    on_clip: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Write the dataset under ``root``; returns counts. See the module docstring."""
    if not 2 <= classes <= len(CLASSES):
        raise EchoesError(f"make-videos: classes must be 2..{len(CLASSES)}, got {classes}")
    if groups < 4:
        raise EchoesError(f"make-videos: need at least 4 groups (3 test blocks + train), got {groups}")
    if clips < 1 or not 2 <= min_frames <= max_frames:
        raise EchoesError("make-videos: need clips >= 1 and 2 <= min_frames <= max_frames")
    if width % 2 or height % 2 or min(width, height) < 16:
        raise EchoesError(f"make-videos: width and height must be even and >= 16, "
                          f"got {width}x{height}")
    root = Path(root)
    targets = [root / "UCF-101", root / "ucfTrainTestlist"]
    if any(p.exists() for p in targets) and not force:
        raise EchoesError(f"make-videos: {root} already holds a dataset — "
                          "choose another folder or pass --force")
    stage = root / STAGING
    shutil.rmtree(stage, ignore_errors=True)  # left by an interrupted run
    (stage / "ucfTrainTestlist").mkdir(parents=True)
    t0 = time.perf_counter()
    names = CLASSES[:classes]
    files: dict[str, list[tuple[str, int, int]]] = {}  # class → (relative path, group, label)
    for label, action in enumerate(names, 1):
        (stage / "UCF-101" / action).mkdir(parents=True)
        for g in range(1, groups + 1):  # a group is one scene of one class, as in UCF101
            background = _background(np.random.default_rng([seed, 0, label, g]), height, width)
            for c in range(1, clips + 1):
                rng = np.random.default_rng([seed, label, g, c])
                length = int(rng.integers(min_frames, max_frames + 1))
                rel = f"{action}/v_{action}_g{g:02d}_c{c:02d}.avi"
                video = _clip(rng, action, background, length, noise)
                write_video(stage / "UCF-101" / rel, video, fps)
                files.setdefault(action, []).append((rel, g, label))
                if on_clip is not None:
                    on_clip()
    lists = stage / "ucfTrainTestlist"
    lists.joinpath("classInd.txt").write_bytes(
        "".join(f"{i} {n}\r\n" for i, n in enumerate(names, 1)).encode())
    counts = {}
    for split in (1, 2, 3):
        tested = set(held_out_groups(groups, split))
        entries = [e for action in names for e in files[action]]
        train = "".join(f"{rel} {label}\r\n" for rel, g, label in entries if g not in tested)
        test = "".join(f"{rel}\r\n" for rel, g, _ in entries if g in tested)
        lists.joinpath(f"trainlist0{split}.txt").write_bytes(train.encode())
        lists.joinpath(f"testlist0{split}.txt").write_bytes(test.encode())
        counts[split] = (train.count("\n"), test.count("\n"))
    for target in targets:  # move into place last: a partial dataset never looks complete
        shutil.rmtree(target, ignore_errors=True)
        (stage / target.name).rename(target)
    stage.rmdir()
    out = {"root": str(root), "classes": names, "clips": classes * groups * clips,
           "splits": counts, "seconds": time.perf_counter() - t0}
    if long:
        out["long"] = str(write_long_video(root, files, names, held_out_groups(groups, 1), long, fps))
    return out


def write_long_video(root: Path, files: dict[str, list[tuple[str, int, int]]], names: list[str],
                     tested: range, segments: int, fps: int) -> Path:
    """``ROOT/long.avi``: ``segments`` test clips (split 1) back to back, the class changing at every
    boundary, and ``ROOT/long.json``: each segment's label, first and last frame (the truth for
    ``echoes stream --timeline``)."""
    av = require("av", "video")
    pool = {a: [rel for rel, g, _ in files[a] if g in tested] for a in names}
    frames, truth = [], []
    for n in range(segments):
        action = names[n % len(names)]  # the classes in turn: a different one at every boundary
        rel = pool[action][(n // len(names)) % len(pool[action])]
        with av.open(str(root / "UCF-101" / rel)) as clip:
            part = [f.to_ndarray(format="rgb24") for f in clip.decode(video=0)]
        truth.append({"label": action, "clip": rel, "start_frame": len(frames),
                      "end_frame": len(frames) + len(part) - 1})
        frames += part
    write_video(root / "long.avi", np.stack(frames), fps)
    (root / "long.json").write_text(json.dumps({"fps": fps, "segments": truth}, indent=1))
    return root / "long.avi"
