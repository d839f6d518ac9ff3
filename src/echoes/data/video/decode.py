"""Reading clips with PyAV: which frames to take, and decoding them as RGB arrays.

Sampling (:func:`sample_indices`) gives exactly ``n`` frame indices per clip:

- ``uniform``: evenly spaced from the first frame to the last.
- ``segments`` (TSN): the clip is cut into ``n`` equal segments and one frame is
  taken from each — at a random offset for training, at the centre for evaluation.

Clips shorter than ``n`` frames repeat frames. A *segment* of a long video (an
EPIC-KITCHENS action: start and stop in seconds) is sampled the same way inside
its own frames, the seconds turned into frames at the rate the file declares.
A folder of extracted frames (``frame_0000000001.jpg``...) is read by
:func:`decode_frames`. Decoding (:func:`decode_clip`) is
sequential for short clips (the wanted frames are close together, so reading on
is cheapest) and seeks to the keyframe before each wanted frame in long ones, so
a ten-minute video is not decoded whole to keep 16 frames. Kept frames are
resized (shorter side = ``size``, area interpolation) and centre-cropped square.

A truncated file gives the frames before the damage (sampled over those); a
file with no decodable frame raises :class:`UnreadableVideo`, and callers skip it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...utils import require

SAMPLING = ("uniform", "segments")
FRAME_FILE = "frame_{:010d}.jpg"  # EPIC-KITCHENS' extracted frames, numbered from 1


class UnreadableVideo(Exception):
    """A clip that cannot be decoded (corrupt, truncated to nothing, not a video)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def sample_indices(
    num_frames: int,
    n: int,
    mode: str = "uniform",
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``n`` frame indices in ``[0, num_frames)``, ascending (see the module docstring)."""
    if num_frames < 1 or n < 1:
        raise ValueError(f"need num_frames >= 1 and n >= 1, got {num_frames}, {n}")
    if mode == "uniform":
        pos = np.linspace(0, num_frames - 1, n)
        return np.round(pos).astype(np.int64)
    if mode != "segments":
        raise ValueError(f"sampling must be one of {SAMPLING}, got '{mode}'")
    edges = np.linspace(0, num_frames, n + 1)
    if train:
        if rng is None:
            raise ValueError("segment sampling for training needs an rng")
        pos = edges[:-1] + rng.random(n) * (edges[1:] - edges[:-1])
    else:
        pos = (edges[:-1] + edges[1:]) / 2
    return np.minimum(np.floor(pos), num_frames - 1).astype(np.int64)


def segment_frames(segment: tuple[float, float], rate: float) -> tuple[int, int]:
    """The frames ``[first, stop)`` (0-based) of a segment ``(start, stop)`` in seconds at ``rate`` frames/s."""
    first = max(0, round(segment[0] * rate))
    return first, max(first + 1, round(segment[1] * rate))


def to_rgb(frame, size: int) -> np.ndarray:  # noqa: ANN001 (av.VideoFrame)
    """Resize so the shorter side is ``size``, then crop the centre square."""
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = frame.reformat(width=nw, height=nh, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[top : top + size, left : left + size]


def _decoded(container, stream) -> Iterator:  # noqa: ANN001
    """Frames in order; an error after the first frame ends the clip (a truncated file)."""
    av = require("av", "video")

    count = 0
    try:
        for frame in container.decode(stream):
            count += 1
            yield frame
    except av.FFmpegError:
        if count == 0:
            raise


def _sequential(container, stream, wanted: set[int], size: int) -> tuple[dict, int]:  # noqa: ANN001
    """Decode from the start, converting only wanted frames; (frames, frames decoded)."""
    last = max(wanted)
    out: dict[int, np.ndarray] = {}
    count = 0
    for i, frame in enumerate(_decoded(container, stream)):
        count = i + 1
        if i in wanted:
            out[i] = to_rgb(frame, size)
        if i >= last:
            break
    return out, count


def _seeking(container, stream, wanted: list[int], size: int, gap: int) -> dict | None:  # noqa: ANN001
    """Seek near each wanted frame more than ``gap`` frames ahead; None if pts are missing."""
    rate = stream.average_rate or stream.guessed_rate
    tb = stream.time_base
    if not rate or not tb:
        return None
    start = stream.start_time or 0
    out: dict[int, np.ndarray] = {}
    decoder, position = None, -(10**9)
    for target in wanted:
        if decoder is None or target - position > gap:
            container.seek(start + int(target / rate / tb), stream=stream, backward=True)
            decoder = container.decode(stream)
        for frame in decoder:
            if frame.pts is None:
                return None
            position = int(round((frame.pts - start) * tb * rate))
            if position >= target:
                out[target] = to_rgb(frame, size)
                break
        else:  # ran off the end: the header over-counted
            return out
    return out


def decode_clip(
    path: str | Path,
    frames: int = 16,
    size: int = 112,
    *,
    sampling: str = "uniform",
    train: bool = False,
    rng: np.random.Generator | None = None,
    segment: tuple[float, float] | None = None,
    seek_threshold: int = 300,
    seek_gap: int = 48,
) -> np.ndarray:
    """``frames`` sampled frames of a clip as uint8 ``[frames, size, size, 3]`` RGB.

    ``segment`` (start, stop) in seconds samples inside that part of the video only.
    Frames past ``seek_threshold`` are read by seeking; a header that over-counts
    frames (truncated files) is corrected by a second pass.
    """
    av = require("av", "video")
    rate = 0.0

    def pick(total: int) -> np.ndarray:
        """The frame indices to read among a video's ``total`` frames."""
        first, stop = 0, total
        if segment is not None:
            if not rate:
                raise UnreadableVideo(path, "no frame rate in the file to place the segment by")
            first, stop = segment_frames(segment, rate)
            stop = min(stop, total)
            if first >= stop:
                raise UnreadableVideo(path, f"segment {segment[0]:.2f}-{segment[1]:.2f}s starts past the end "
                                            f"({total} frames at {rate:g} fps)")
        return first + sample_indices(stop - first, frames, sampling, train=train, rng=rng)

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UnreadableVideo(path, "no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or 0)
            total = int(stream.frames or 0)
            got: dict[int, np.ndarray] | None = None
            if total > 0:
                idx = pick(total)
                wanted = sorted(set(idx.tolist()))
                if wanted[-1] > seek_threshold:
                    got = _seeking(container, stream, wanted, size, seek_gap)
                    if got is not None and len(got) < len(wanted):
                        total, got = 0, None  # header over-counted: count for real below
                else:
                    got, decoded = _sequential(container, stream, set(wanted), size)
                    if len(got) < len(wanted):
                        total, got = decoded, None
        if got is None:  # frame count unknown or wrong: count by decoding, then read
            if total <= 0:
                with av.open(str(path)) as container:
                    total = sum(1 for _ in _decoded(container, container.streams.video[0]))
            if total <= 0:
                raise UnreadableVideo(path, "no decodable frames")
            idx = pick(total)
            with av.open(str(path)) as container:
                got, _ = _sequential(container, container.streams.video[0], set(idx.tolist()), size)
            if len(got) < len(set(idx.tolist())):
                raise UnreadableVideo(path, "frames could not be decoded consistently")
    except av.FFmpegError as e:
        raise UnreadableVideo(path, f"{type(e).__name__}: {e}") from None
    except (OSError, ValueError, EOFError, MemoryError) as e:
        raise UnreadableVideo(path, f"{type(e).__name__}: {e}") from None
    return np.stack([got[i] for i in idx.tolist()])


def decode_frames(
    folder: str | Path,
    first: int,
    last: int,
    frames: int = 16,
    size: int = 112,
    *,
    sampling: str = "uniform",
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """``frames`` sampled frames among the images numbered ``first..last`` (inclusive) of a folder of
    extracted frames, as uint8 ``[frames, size, size, 3]`` RGB; a missing or broken image raises
    :class:`UnreadableVideo`."""
    av = require("av", "video")
    image = require("PIL.Image", "video")

    if last < first:
        raise UnreadableVideo(folder, f"frames {first}..{last}: the last comes before the first")
    idx = first + sample_indices(last - first + 1, frames, sampling, train=train, rng=rng)
    got: dict[int, np.ndarray] = {}
    for n in sorted(set(idx.tolist())):
        file = Path(folder) / FRAME_FILE.format(n)
        try:
            with image.open(file) as img:
                rgb = np.asarray(img.convert("RGB"))
        except (OSError, ValueError) as e:  # missing, truncated, not an image
            raise UnreadableVideo(file, f"{type(e).__name__}: {e}") from None
        got[n] = to_rgb(av.VideoFrame.from_ndarray(rgb, format="rgb24"), size)  # resized as video frames are
    return np.stack([got[i] for i in idx.tolist()])
