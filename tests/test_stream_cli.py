"""`echoes stream` end to end: a long generated video with known segments, stdin, errors, Ctrl-C."""

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from echoes import train
from echoes.cli import main
from echoes.data.video.make_videos import make_videos
from echoes.stream import StreamOptions, run_stream

SIDE = 64
CLIP = 32  # frames per clip; 16 sampled ones per training sequence → every 2nd frame
STEP = CLIP // 16
# The stated floor: the timeline's frame accuracy against the truth (decided one window late, as a
# 16-step window must be) — chance is 0.25 with 4 classes; the ESN's clip accuracy here is ~0.8.
FLOOR = 0.6
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small ESN on small_cnn features of a generated 4-class set, saved; and a long video of its test clips."""
    base = tmp_path_factory.mktemp("stream")
    root = base / "videos"
    made = make_videos(root, classes=4, groups=8, clips=6, min_frames=CLIP, max_frames=CLIP, width=SIDE,
                       height=SIDE, long=8)
    os.chdir(base)
    result = train(model="esn", data=f"ucf101:{root}", tracking=False,
                   **{"data.cache_dir": str(base / "cache"), "model.units": 300, "model.leak_rate": 0.5})
    model_dir = result.model.save(base / "model")
    segments = json.loads((root / "long.json").read_text())["segments"]
    truth = [s["label"] for s in segments for _ in range(s["start_frame"], s["end_frame"] + 1)]
    assert len({s["label"] for s in segments}) == 4 and all(  # a new class at every boundary
        a["label"] != b["label"] for a, b in zip(segments, segments[1:], strict=False))
    return result, model_dir, Path(made["long"]), truth


def lines_of(text: str) -> tuple[list[dict], dict]:
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return records[:-1], records[-1]["summary"]


def test_a_long_video_streams_into_its_segments(trained, tmp_path, capsys):
    _, model_dir, video, truth = trained
    timeline, out = tmp_path / "timeline.json", tmp_path / "annotated.mp4"
    # Windows of the 16 steps the model was trained on, tiling the stream: each one sees one clip.
    code = main(["stream", str(model_dir), str(video), "--frame-step", str(STEP), "--sliding", "--stride", "16",
                 "--timeline", str(timeline), "--out", str(out)])
    assert code == 0
    records, summary = lines_of(capsys.readouterr().out)
    assert summary["frames"] == len(truth) and summary["steps"] == len(truth) // STEP == len(records)
    assert [r["frame"] for r in records] == list(range(0, len(truth), STEP))
    assert all(len(r["top"]) == 3 and r["latency_ms"] > 0 for r in records)
    # every window that covers a whole segment names it (its last step), most of the time
    ends = [r for r in records if r["frame"] % CLIP == CLIP - STEP]
    segment_hits = np.mean([r["label"] == truth[r["frame"]] for r in ends])
    # the timeline, shifted back by the window it decides on, against the truth of every frame
    segments = json.loads(timeline.read_text())["segments"]
    label = np.empty(len(truth), object)
    for s in segments:
        label[s["start_frame"]:] = s["label"]
    late = CLIP - STEP  # a decision at frame f is about frames f-late .. f
    frame_accuracy = np.mean([label[f] == truth[f - late] for f in range(CLIP, len(truth))])
    print(f"segments named {segment_hits:.2f}, timeline frame accuracy {frame_accuracy:.3f}")
    assert segment_hits >= FLOOR and frame_accuracy >= FLOOR
    with av.open(str(out)) as written:  # every frame annotated, at the source's size
        frames = list(written.decode(video=0))
    assert len(frames) == len(truth) and (frames[0].width, frames[0].height) == (SIDE, SIDE)


def stdin_stream(args, data: bytes, capsys, monkeypatch) -> tuple[int, str, str]:
    """`echoes stream ... -` in this process, with ``data`` on stdin."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code = main(["stream", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_exact_streaming_of_a_feature_model_matches_its_prediction(tiny_npz, tmp_path, capsys, monkeypatch):
    """A model trained on feature vectors reads them from stdin, one per line (in a real process once);
    its last scores after the whole sequence are those of the full forward pass."""
    os.chdir(tmp_path)
    with np.load(tiny_npz) as f:  # the concatenated form: the first test sequence is the first lengths_test steps
        x = f["X_test"][: int(f["lengths_test"][0])]
    text = "\n".join(" ".join(f"{v:.9g}" for v in row) for row in x).encode()
    for name in ("esn", "gru"):
        model = train(model=name, data=f"npz:{tiny_npz}", tracking=False,
                      **{"model.hidden_size" if name == "gru" else "model.units": 16, "train.epochs": 2}).model
        folder = model.save(tmp_path / name)
        args = [str(folder), "-", "--top-k", "2"]
        if name == "esn":
            proc = subprocess.run([sys.executable, "-m", "echoes", "stream", *args], input=text,
                                  capture_output=True, env=ENV, timeout=120)
            code, out, err = proc.returncode, proc.stdout.decode(), proc.stderr.decode()
        else:
            code, out, err = stdin_stream(args, text, capsys, monkeypatch)
        assert code == 0, err
        records, summary = lines_of(out)
        assert summary["steps"] == len(x) == len(records)
        expected = model.predict_proba([x])[0]
        top = records[-1]["top"]
        assert top[0][0] == model.class_names[int(expected.argmax())]
        assert top[0][1] == pytest.approx(float(expected.max()), abs=1e-4)
    code, _, err = stdin_stream([str(folder), "-"], b"1 2 3\n1 2\n", capsys, monkeypatch)
    assert code == 2 and "stdin line 2 has 2 values" in err


def test_raw_frames_on_stdin_stream_like_the_same_frames_in_process(trained):
    """A real process reading RGB24 frames from a pipe gives what the same frames give in this process."""
    _, model_dir, video, _ = trained
    with av.open(str(video)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][:40]
    raw = b"".join(f.tobytes() for f in frames)
    proc = subprocess.run([sys.executable, "-m", "echoes", "stream", str(model_dir), "-", "--frame-size",
                           f"{SIDE}x{SIDE}", "--frame-step", str(STEP)], input=raw, capture_output=True,
                          env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()
    records, summary = lines_of(proc.stdout.decode())
    assert summary["frames"] == 40 and len(records) == 40 // STEP

    from echoes import load_model

    here: list[dict] = []
    run_stream(load_model(model_dir), "-", StreamOptions(frame_size=(SIDE, SIDE), frame_step=STEP),
               emit=here.append, stdin=io.BytesIO(raw))
    assert [(r["frame"], r["top"]) for r in records] == [(r["frame"], r["top"]) for r in here]



def test_a_frame_cut_short_on_stdin_is_one_line_and_exit_2(trained, capsys, monkeypatch):
    _, model_dir, _, _ = trained
    raw = bytes(SIDE * SIDE * 3 * 2 - 5)
    code, _, err = stdin_stream([str(model_dir), "-", "--frame-size", f"{SIDE}x{SIDE}"], raw, capsys, monkeypatch)
    assert code == 2 and "ended inside frame 1" in err and len(err.strip().splitlines()) == 1
    code, _, err = stdin_stream([str(model_dir), "-"], raw, capsys, monkeypatch)
    assert code == 2 and "--frame-size" in err


@pytest.mark.parametrize("source, words", [
    ("/dev/video9", "cannot open camera /dev/video9"),
    ("rtsp://127.0.0.1:9/live", "cannot open stream rtsp://127.0.0.1:9/live"),
    ("corrupt.avi", "cannot open video corrupt.avi"),
    ("missing.avi", "missing.avi not found"),
])
def test_sources_that_cannot_be_read_are_one_line_and_exit_2(trained, tmp_path, capsys, source, words, monkeypatch):
    _, model_dir, _, _ = trained
    monkeypatch.chdir(tmp_path)
    Path("corrupt.avi").write_bytes(np.random.default_rng(0).bytes(5000))
    assert main(["stream", str(model_dir), source]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_ctrl_c_ends_cleanly_with_the_video_finalised(trained, tmp_path):
    _, model_dir, video, _ = trained
    out = tmp_path / "partial.mp4"
    # SIGINT as a terminal's: a runner started in the background (nohup ... &) ignores it, and so would the child
    proc = subprocess.Popen([sys.executable, "-m", "echoes", "stream", str(model_dir), str(video), "--realtime",
                             "--out", str(out), "--timeline", str(tmp_path / "t.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for _ in range(5):  # a few frames in (the file plays at its own 25 frames/s)
        assert proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr.decode()
    _, summary = lines_of(stdout.decode())
    assert summary["interrupted"] and 5 <= summary["frames"] < 256, summary
    assert "interrupted" in stderr.decode()
    with av.open(str(out)) as written:
        assert sum(1 for _ in written.decode(video=0)) in (summary["frames"] - 1, summary["frames"])
    assert json.loads((tmp_path / "t.json").read_text())["segments"]


def test_a_speech_file_streams_a_phone_every_10_ms(speech_corpus, tmp_path, capsys):
    """A framewise model trained on timit: streams a recording through the MFCC pipeline of timit:,
    one phone per 10 ms frame — the same phones as predicting the whole utterance at once."""
    from echoes.data.speech.mfcc import mfcc
    from echoes.data.speech.sphere import read_audio

    os.chdir(tmp_path)
    model = train(model="gru", data=f"timit:{speech_corpus}", tracking=False,
                  **{"data.cache_dir": str(tmp_path / "cache"), "model.hidden_size": 16, "train.epochs": 1}).model
    wav = sorted(Path(speech_corpus).rglob("*.WAV"))[0]
    timeline = tmp_path / "phones.json"
    assert main(["stream", str(model.save(tmp_path / "gru")), str(wav), "--top-k", "1", "--timeline",
                 str(timeline)]) == 0
    records, summary = lines_of(capsys.readouterr().out)
    samples, rate = read_audio(wav)
    expected = model.predict([mfcc(samples, rate)])[0]
    assert [r["label"] for r in records] == list(expected)
    assert records[1]["time"] - records[0]["time"] == pytest.approx(0.01)
    segments = json.loads(timeline.read_text())["segments"]
    assert sum(s["end_frame"] - s["start_frame"] + 1 for s in segments) == summary["steps"] == len(expected)


def test_a_stream_that_breaks_mid_way_is_one_line_and_keeps_what_was_written(trained, tmp_path, capsys):
    _, model_dir, video, _ = trained
    data = bytearray(video.read_bytes())
    rng = np.random.default_rng(0)
    cut = len(data) // 3
    data[cut::101] = rng.integers(0, 256, len(data[cut::101]), dtype=np.uint8).tobytes()  # garbled from a third on
    garbled = tmp_path / "garbled.avi"
    garbled.write_bytes(bytes(data))
    timeline = tmp_path / "t.json"
    assert main(["stream", str(model_dir), str(garbled), "--timeline", str(timeline)]) == 2
    out = capsys.readouterr()
    err = out.err.strip().splitlines()
    assert len(err) == 1 and "the stream broke after" in err[0]
    records = [json.loads(line) for line in out.out.splitlines()]
    assert records and json.loads(timeline.read_text())["segments"][-1]["end_frame"] == records[-1]["frame"]
