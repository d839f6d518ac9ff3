"""Real-time inference: a trained model on a live source, one frame at a time (``echoes stream``).

What a model reads follows what it was trained on (``config.data.source``):

- ``ucf101:`` models read video — a file, an RTSP/HTTP URL, a camera (``/dev/video0``, PyAV's v4l2
  input) or ``-``: raw RGB24 frames of ``--frame-size WxH`` back to back on stdin. Every frame is
  resized and centre-cropped as in training and put through the same frame backbone and weights
  (or kept as pixels, for end-to-end video models).
- ``timit:`` models read speech (a WAV/FLAC/SPHERE file): MFCC + Δ + ΔΔ frames every 10 ms, the
  pipeline of ``timit:``.
- any other model reads feature vectors: ``-`` gives one vector per line (whitespace- or
  comma-separated numbers; ``--stdin-format f32``: raw little-endian float32, F per step), or a
  ``.npy`` file of shape (T, F).

Each step's scores (softmax of the logits) are smoothed over the last ``average`` steps or by an
exponential moving average, and the top-k go out as one JSON line per step (or every ``every``
steps). Optional: an annotated copy of the video, a timeline of labelled segments, file reading
paced at the file's own rate with frames dropped (and counted) when inference falls behind.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .data import parse_source
from .data.video.decode import to_rgb
from .errors import EchoesError
from .model import Model
from .utils import atomic_write, check_output, require

VIDEO_SOURCES = ("ucf101",)
AUDIO_SOURCES = ("timit",)
STDIN_FORMATS = ("rgb24", "text", "f32")
OPEN_TIMEOUT = 10.0  # seconds to open a network stream or a camera


@dataclass
class StreamOptions:
    top_k: int = 3
    average: int = 1  # mean of the last N score vectors
    ema: float | None = None  # or an exponential moving average with this weight on the newest
    threshold: float = 0.0  # scores below it are not reported as a label
    every: int = 1  # a JSON line every K steps
    frame_step: int = 1  # the model steps on every Nth frame (match the spacing of training frames)
    window: int | None = None  # sliding-window models: steps re-read (default: the frames trained on)
    stride: int = 1
    sliding: bool = False  # re-read a window for every model
    realtime: bool = False  # read files at their own rate, dropping frames when behind (live sources always are)
    frame_size: tuple[int, int] | None = None  # raw RGB24 on stdin
    fps: float = 25.0  # rate of raw frames on stdin
    stdin_format: str | None = None
    camera_size: str | None = None
    camera_fps: float | None = None
    out: str | None = None  # annotated video
    timeline: str | None = None


@dataclass
class Frame:
    index: int
    time: float  # seconds from the start of the source
    data: Any  # av.VideoFrame, an RGB array [H, W, 3], or a feature vector


def input_kind(model: Model) -> str:
    """video, audio or features: what the model was trained on."""
    kind = parse_source(model.config.data.source)[0]
    return "video" if kind in VIDEO_SOURCES else "audio" if kind in AUDIO_SOURCES else "features"


# --- sources ---------------------------------------------------------------------------------------


def open_container(source: str, camera_size: str | None = None, camera_fps: float | None = None) -> Any:
    """A PyAV container for a file, a URL or a camera; one line naming the problem when it cannot open."""
    av = require("av", "video")
    camera = source.startswith("/dev/video")
    try:
        if camera:
            options = {k: str(v) for k, v in (("video_size", camera_size), ("framerate", camera_fps)) if v}
            return av.open(source, format="v4l2", options=options, timeout=OPEN_TIMEOUT)
        if "://" in source:
            options = {"rtsp_transport": "tcp"} if source.startswith("rtsp") else {}
            return av.open(source, options=options, timeout=OPEN_TIMEOUT)
        if not Path(source).is_file():
            raise EchoesError(f"{source} not found — give a video file, a URL, a camera (/dev/video0) or - for stdin")
        return av.open(source)
    except (av.FFmpegError, OSError) as e:
        what = "camera" if camera else "stream" if "://" in source else "video"
        hint = ("check that the camera exists (ls /dev/video*) and no other program holds it" if camera
                else "check the URL and that the server is up" if "://" in source
                else "the file is damaged or not a video")
        raise EchoesError(f"cannot open {what} {source} ({type(e).__name__}: {e}) — {hint}") from None


def video_frames(container: Any) -> Iterator[Frame]:
    """Decoded frames with their times; a stream that breaks mid-way raises EchoesError. Closes the container."""
    av = require("av", "video")
    if not container.streams.video:
        raise EchoesError(f"{container.name} has no video stream — give a video")
    stream = container.streams.video[0]
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    index = 0
    try:
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else index / rate
            yield Frame(index, t, frame)
            index += 1
    except av.FFmpegError as e:
        raise EchoesError(f"{container.name}: the stream broke after {index} frames ({type(e).__name__}) — "
                          "the file is damaged or the connection dropped") from None
    finally:
        container.close()  # a camera is free for other programs again
    if index == 0:
        raise EchoesError(f"{container.name}: no decodable frame — the file is damaged or not a video")


def rgb_frames(stream: IO[bytes], width: int, height: int, fps: float) -> Iterator[Frame]:
    """Raw RGB24 frames of width × height, back to back (e.g. ``ffmpeg -f rawvideo -pix_fmt rgb24 -``)."""
    size = width * height * 3
    index = 0
    while True:
        buf = stream.read(size)
        if not buf:
            return
        if len(buf) < size:
            raise EchoesError(f"stdin ended inside frame {index} ({len(buf)} of {size} bytes) — send whole "
                              f"{width}x{height} RGB24 frames")
        yield Frame(index, index / fps, np.frombuffer(buf, np.uint8).reshape(height, width, 3))
        index += 1


def vector_steps(stream: IO[bytes], size: int, fmt: str) -> Iterator[Frame]:
    """Feature vectors from stdin: text lines of ``size`` numbers, or raw float32."""
    index = 0
    if fmt == "f32":
        while buf := stream.read(4 * size):
            if len(buf) < 4 * size:
                raise EchoesError(f"stdin ended inside step {index} — send {size} float32 values per step")
            yield Frame(index, float(index), np.frombuffer(buf, "<f4"))
            index += 1
        return
    for n, line in enumerate(stream, 1):
        text = line.decode(errors="replace").replace(",", " ").split()
        if not text:
            continue
        try:
            x = np.array([float(v) for v in text], np.float32)
        except ValueError:
            raise EchoesError(f"stdin line {n} is not a list of numbers — send {size} numbers per line") from None
        if len(x) != size or not np.isfinite(x).all():
            raise EchoesError(f"stdin line {n} has {len(x)} values (or NaN/inf); this model takes {size} per step")
        yield Frame(index, float(index), x)
        index += 1


def audio_steps(path: str) -> Iterator[Frame]:
    """MFCC + Δ + ΔΔ frames of a speech file, every 10 ms (as ``timit:`` computes them)."""
    from .data.speech.mfcc import frame_centres, mfcc
    from .data.speech.sphere import read_audio

    if not Path(path).is_file():
        raise EchoesError(f"{path} not found — give a speech file (WAV, FLAC or SPHERE)")
    samples, rate = read_audio(path)
    feats = mfcc(samples, rate)
    for i, (x, centre) in enumerate(zip(feats, frame_centres(len(samples), rate), strict=False)):
        yield Frame(i, float(centre) / rate, x)


def npy_steps(path: str) -> Iterator[Frame]:
    try:
        x = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EchoesError(f"cannot read {path} ({type(e).__name__}) — give a (T, F) .npy array") from None
    if x.ndim != 2:
        raise EchoesError(f"{path} has shape {x.shape} — give a (T, F) array, one row per step")
    for i, row in enumerate(x):
        yield Frame(i, float(i), row)


class FrameFeatures:
    """A video frame → what the model's training cache stored for it (backbone features, or pixels)."""

    def __init__(self, model: Model, device: str = "cpu") -> None:
        import torch

        from .data.ucf101 import frame_settings
        from .data.video.cache import FrameEmbedder

        options = {k: v for k, v in model.config.data.options().items()
                   if k in ("features", "weights", "frames", "size", "sampling")}
        self.settings = frame_settings(**options)
        self.embed = FrameEmbedder(self.settings, torch.device(device))
        if self.embed.dim != model.input_size:
            raise EchoesError(f"the frame pipeline ({self.settings.describe()}) gives {self.embed.dim} values per "
                              f"frame but the model takes {model.input_size} — the saved config does not match")

    def __call__(self, image: Any) -> np.ndarray:
        if isinstance(image, np.ndarray):
            image = require("av", "video").VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        rgb = to_rgb(image, self.settings.size)
        return self.embed(rgb[None, None])[0, 0]


# --- scores, timeline, annotated video -------------------------------------------------------------


class Smoother:
    """Mean of the last ``average`` score vectors, or an exponential moving average."""

    def __init__(self, average: int = 1, ema: float | None = None) -> None:
        if average < 1 or (ema is not None and not 0 < ema <= 1):
            raise EchoesError("--average must be >= 1 and --ema in (0, 1]")
        self.recent: deque[np.ndarray] = deque(maxlen=average)
        self.ema, self.value = ema, None

    def __call__(self, p: np.ndarray) -> np.ndarray:
        if self.ema is not None:
            self.value = p if self.value is None else self.ema * p + (1 - self.ema) * self.value
            return self.value
        self.recent.append(p)
        return np.mean(self.recent, axis=0)


class Timeline:
    """Consecutive steps with the same label merged into segments ``{label, start, end, ...}``."""

    def __init__(self) -> None:
        self.segments: list[dict[str, Any]] = []
        self.step_seconds: list[float] = []

    def add(self, frame: Frame, label: str | None, score: float) -> None:
        last = self.segments[-1] if self.segments else None
        if last is not None:
            self.step_seconds.append(frame.time - last["_time"])
        if last is not None and last["label"] == label:
            last.update(end_frame=frame.index, _time=frame.time, _sum=last["_sum"] + score, _n=last["_n"] + 1)
            return
        if last is not None:
            last["end"] = frame.time
        self.segments.append({"label": label, "start": frame.time, "start_frame": frame.index,
                              "end_frame": frame.index, "_time": frame.time, "_sum": score, "_n": 1})

    def result(self) -> list[dict[str, Any]]:
        """Segments with ``end`` (seconds, exclusive) and the mean score; unlabelled stretches have label None."""
        step = float(np.median(self.step_seconds)) if self.step_seconds else 0.0
        out = []
        for s in self.segments:
            end = s.get("end", s["_time"] + step)
            out.append({"label": s["label"], "start": round(s["start"], 4), "end": round(end, 4),
                        "start_frame": s["start_frame"], "end_frame": s["end_frame"],
                        "score": round(s["_sum"] / s["_n"], 4)})
        return out


class AnnotatedVideo:
    """Frames with the label, its score and the measured rate drawn on them (Pillow), encoded by PyAV."""

    def __init__(self, path: str, fps: float) -> None:
        self.path, self.fps = Path(path), fps
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.container: Any = None
        self.stream: Any = None
        self.font: Any = None

    def write(self, rgb: np.ndarray, text: str) -> None:
        av = require("av", "video")
        pil = require("PIL.ImageDraw", "video")  # Pillow, which torchvision brings too
        from PIL import Image, ImageFont

        h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2  # even sizes for yuv420p
        if self.container is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.container = av.open(str(self.tmp), "w", format=self.path.suffix.lstrip(".") or None)
            codec = "libx264" if self.path.suffix == ".mp4" and "libx264" in av.codecs_available else "mpeg4"
            self.stream = self.container.add_stream(codec, rate=round(self.fps) or 25)
            self.stream.width, self.stream.height, self.stream.pix_fmt = w, h, "yuv420p"
            self.font = ImageFont.load_default(size=max(10, h // 18))
        img = Image.fromarray(np.ascontiguousarray(rgb[:h, :w]))
        draw = pil.Draw(img)
        box = draw.textbbox((4, 2), text, font=self.font)
        draw.rectangle((0, 0, w, box[3] + 3), fill=(0, 0, 0))
        draw.text((4, 2), text, fill=(255, 255, 255), font=self.font)
        for packet in self.stream.encode(av.VideoFrame.from_image(img)):
            self.container.mux(packet)

    def close(self) -> Path | None:
        """Flush the encoder and move the file into place (also after an interruption)."""
        if self.container is None:
            return None
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()
        self.tmp.replace(self.path)
        return self.path


# --- the loop ---------------------------------------------------------------------------------------


class Feed:
    """The iterable :meth:`Model.stream` pulls from: each ``next`` gives the step just put in."""

    item: np.ndarray

    def __iter__(self) -> Feed:
        return self

    def __next__(self) -> np.ndarray:
        return self.item


def frames_of(model: Model, source: str, opts: StreamOptions, stdin: IO[bytes]) -> tuple[Iterator[Frame], float, bool]:
    """(frames, their rate, whether they are video images) for this model and source."""
    kind = input_kind(model)
    if kind == "video":
        if source == "-":
            if opts.frame_size is None:
                raise EchoesError("raw frames on stdin need --frame-size WxH (RGB24 frames, as ffmpeg -f rawvideo "
                                  "-pix_fmt rgb24 - writes them)")
            return rgb_frames(stdin, *opts.frame_size, opts.fps), opts.fps, True
        container = open_container(source, opts.camera_size, opts.camera_fps)
        v = container.streams.video[0] if container.streams.video else None
        rate = float(v.average_rate or v.guessed_rate or 25) if v is not None else 25.0
        return video_frames(container), rate, True
    if kind == "audio":
        if source == "-":
            raise EchoesError("speech models stream from a file (WAV, FLAC, SPHERE), not stdin — give its path")
        return audio_steps(source), 100.0, False
    if source == "-":
        fmt = opts.stdin_format or "text"
        if fmt not in ("text", "f32"):
            raise EchoesError(f"--stdin-format {fmt} is for video models; feature models read text or f32")
        return vector_steps(stdin, model.input_size, fmt), 1.0, False
    if source.endswith(".npy"):
        return npy_steps(source), 1.0, False
    raise EchoesError(f"this model was trained on {model.config.data.source} (feature vectors) — stream it "
                      "from - (one vector per line) or a (T, F) .npy file")


def run_stream(model: Model, source: str, opts: StreamOptions, *, emit: Callable[[dict], None] | None = None,
               stdin: IO[bytes] | None = None, device: str = "cpu") -> dict[str, Any]:
    """Stream ``source`` through ``model``; ``emit`` gets one record per reported step. Returns the summary.

    Ctrl-C ends the stream early: the annotated video and the timeline are still finalised."""
    if opts.out:
        check_output(opts.out, (".mp4", ".avi", ".mkv", ".mov"))
    if opts.timeline:
        check_output(opts.timeline, (".json",))
    if min(opts.every, opts.frame_step, opts.stride, opts.top_k) < 1:
        raise EchoesError("--every, --frame-step, --stride and --top-k must be >= 1")
    emit = emit or (lambda rec: print(json.dumps(rec), flush=True))
    frames, rate, images = frames_of(model, source, opts, stdin or sys.stdin.buffer)
    if opts.out and not images:
        raise EchoesError("--out draws on video frames — this model does not read video")
    model.module.to(device)
    to_vector = FrameFeatures(model, device) if images else None
    if to_vector is not None and to_vector.settings.weights == "none" and to_vector.settings.features != "small_cnn":
        raise EchoesError(f"{to_vector.settings.features} with weights=none is a random network drawn for the "
                          "training cache, and the saved model does not hold it — stream models trained on small_cnn "
                          "or imagenet features")
    smoother = Smoother(opts.average, opts.ema)
    timeline = Timeline()
    writer = AnnotatedVideo(opts.out, rate) if opts.out else None
    names = model.heads.label_names  # with several heads: every "verb/noun", scored jointly
    k = min(opts.top_k, len(names))
    feed = Feed()
    logits_of = model.stream(feed, window=opts.window, stride=opts.stride, sliding=opts.sliding)
    latencies: list[float] = []
    decoded = steps = dropped = 0
    label, score, shown_rate = None, 0.0, 0.0
    interrupted = False
    start = time.perf_counter()
    # Cameras and network streams arrive at their own rate, and so does a file read with --realtime:
    # a frame more than one frame late is dropped (counted), so latency cannot pile up.
    paced = opts.realtime or source.startswith("/dev/video") or "://" in source
    first: tuple[float, float] | None = None  # (wall clock, source time) at the first frame
    try:
        for frame in frames:
            decoded += 1
            first = first or (time.perf_counter(), frame.time)
            late = (time.perf_counter() - first[0]) - (frame.time - first[1])
            if opts.realtime and late < 0:
                time.sleep(-late)
            behind = paced and late > 1.0 / rate
            if frame.index % opts.frame_step == 0 and behind:
                dropped += 1
            elif frame.index % opts.frame_step == 0:
                t0 = time.perf_counter()
                feed.item = to_vector(frame.data) if to_vector else frame.data
                p = smoother(model.heads.probabilities(next(logits_of)))
                latency = time.perf_counter() - t0
                latencies.append(latency)
                steps += 1
                order = np.argsort(-p)[:k]
                top = [[names[j], round(float(p[j]), 4)] for j in order if p[j] >= opts.threshold]
                label, score = (top[0][0], float(p[order[0]])) if top else (None, float(p[order[0]]))
                timeline.add(frame, label, score)
                elapsed = time.perf_counter() - start
                shown_rate = decoded / elapsed if elapsed > 0 else 0.0  # frames read (and stepped) per second
                if (steps - 1) % opts.every == 0:
                    emit({"frame": frame.index, "time": round(frame.time, 4), "label": label, "top": top,
                          "latency_ms": round(latency * 1e3, 3)})
            if writer is not None:
                rgb = frame.data if isinstance(frame.data, np.ndarray) else frame.data.to_ndarray(format="rgb24")
                text = f"{label} {score:.2f}" if label else "-"
                writer.write(rgb, f"{text}   {shown_rate:.1f} fps")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        written = writer.close() if writer is not None else None
        if opts.timeline:
            atomic_write(opts.timeline, json.dumps({"source": source, "segments": timeline.result()}, indent=1))
    wall = time.perf_counter() - start
    lat = np.array(latencies) * 1e3
    summary = {
        "frames": decoded, "steps": steps, "dropped": dropped, "seconds": round(wall, 3),
        "steps_per_second": round(steps / wall, 2) if wall > 0 else None,
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
        "segments": len(timeline.segments), "interrupted": interrupted,
    }
    if written is not None:
        summary["video"] = str(written)
    if opts.timeline:
        summary["timeline"] = str(opts.timeline)
    return summary


def parse_size(text: str | None, what: str) -> tuple[int, int] | None:
    """'WxH' → (W, H)."""
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise EchoesError(f"{what} must look like 640x480, got '{text}'") from None
    if w < 1 or h < 1 or math.prod((w, h)) > 1 << 28:
        raise EchoesError(f"{what} must be positive and sensible, got '{text}'")
    return w, h
