"""The Festival corpus generator, SPHERE audio, MFCC frames and the timit:ROOT source."""

import shutil
import warnings

import numpy as np
import pytest

from echoes.cli import main
from echoes.data import load_dataset
from echoes.data.speech import mfcc as mfcc_module
from echoes.data.speech.mfcc import deltas, frame_centres, mfcc
from echoes.data.speech.sphere import read_audio, write_sphere
from echoes.data.timit import CORE_SPEAKERS, DEV_SET, TIMIT_39, TIMIT_61, fold_map, read_phn
from echoes.errors import EchoesError, SkippedFileWarning


def load(root, cache, **kw):
    return load_dataset(f"timit:{root}", cache_dir=str(cache), **kw)


# --- audio and features ---------------------------------------------------------------------


def test_sphere_round_trip(tmp_path):
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)
    write_sphere(tmp_path / "a.wav", tone)
    raw = (tmp_path / "a.wav").read_bytes()
    assert raw.startswith(b"NIST_1A\n   1024\n") and len(raw) == 1024 + 2 * 8000
    audio, rate = read_audio(tmp_path / "a.wav")
    assert rate == 16000 and np.abs(audio - tone).max() < 1e-4


def test_unreadable_audio_is_a_one_line_error(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"NIST_1A\n garbage")
    with pytest.raises(EchoesError, match="NIST SPHERE"):
        read_audio(tmp_path / "bad.wav")


def test_mfcc_frames_energy_and_deltas():
    rate = 16000
    quiet, loud = 0.01 * np.ones(4000), np.sin(np.arange(4000) * 0.3)
    feats = mfcc(np.r_[quiet, loud], rate)
    assert feats.shape == (1 + (8000 - 400) // 160, 39) and feats.dtype == np.float32
    assert len(frame_centres(8000, rate)) == len(feats)
    assert feats[-5, 0] > feats[3, 0] + 5  # c0 is the log energy
    ramp = np.arange(20, dtype=float)[:, None] * 3.0
    assert np.allclose(deltas(ramp)[2:-2], 3.0)  # regression deltas recover the slope


def test_folding_61_to_39():
    to39, classes = fold_map(39)
    assert classes == TIMIT_39 and len(classes) == 39 and len(TIMIT_61) == 61
    fold = {p: (classes[to39[i]] if to39[i] >= 0 else None) for i, p in enumerate(TIMIT_61)}
    assert fold["ao"] == "aa" and fold["ix"] == "ih" and fold["zh"] == "sh" and fold["en"] == "n"
    assert {fold[p] for p in ("pcl", "tcl", "kcl", "bcl", "dcl", "gcl", "h#", "pau", "epi")} == {"sil"}
    assert fold["q"] is None and fold["iy"] == "iy"
    to61, names = fold_map(61)
    assert names == TIMIT_61 and list(to61) == list(range(61))
    with pytest.raises(EchoesError, match="39 or 61"):
        fold_map(48)


# --- the generated corpus -------------------------------------------------------------------


def test_corpus_has_timit_layout(speech_corpus):
    assert {p.parents[2].name for p in speech_corpus.glob("*/DR*/*/SA1.PHN")} == {"TRAIN", "TEST"}
    test = {p.name for p in (speech_corpus / "TEST").glob("DR*/*")}
    assert test and test <= CORE_SPEAKERS | set(DEV_SET)
    assert test & CORE_SPEAKERS and test & set(DEV_SET)
    for phn in speech_corpus.glob("TRAIN/DR1/*/*.PHN"):
        for suffix in (".WAV", ".WRD", ".TXT"):
            assert phn.with_suffix(suffix).exists()
        assert phn.with_suffix(".WAV").read_bytes()[:7] == b"NIST_1A"
        rows = [line.split() for line in phn.read_text().splitlines()]
        starts, ends = [int(r[0]) for r in rows], [int(r[1]) for r in rows]
        assert starts[0] == 0 and starts[1:] == ends[:-1]  # contiguous segments
        audio, _ = read_audio(phn.with_suffix(".WAV"))
        assert ends[-1] == len(audio)
        assert rows[0][2] == "h#" and rows[-1][2] == "h#" and all(r[2] in TIMIT_61 for r in rows)
        assert len({r[2] for r in rows}) > 5


def test_generator_resumes_and_cli_reports(speech_corpus, capsys):
    assert main(["data", "make-speech", str(speech_corpus), "--regions", "2", "--train-speakers", "2",
                 "--test-speakers", "1", "--dev-speakers", "1", "--sentences", "2"]) == 0
    out = capsys.readouterr().out
    assert "0 written now" in out and "4 training" in out


def test_generator_rejects_bad_sizes(tmp_path, capsys):
    assert main(["data", "make-speech", str(tmp_path / "x"), "--regions", "9"]) == 2
    assert "regions must be between 1 and 8" in capsys.readouterr().err


# --- the timit:ROOT source ------------------------------------------------------------------


def test_source_splits_by_speaker_and_labels_every_frame(speech_corpus, tmp_path):
    ds = load(speech_corpus, tmp_path)
    assert ds.framewise and ds.num_features == 39 and ds.class_names == TIMIT_39
    assert ds.info["test_set"] == "core" and ds.info["test_speakers"] == 2
    assert len(ds.train) == 4 * 2 and len(ds.val) == 2 * 2 and len(ds.test) == 2 * 2  # SA left out
    for split in (ds.train, ds.val, ds.test):
        for i, n in enumerate(split.lengths):
            assert (split.y[i, :n] >= 0).mean() > 0.95  # labelled frames (q would be -1)
            assert np.all(split.y[i, n:] == -1) and np.all(split.x[i, n:] == 0)
    valid = ds.train.x[np.arange(ds.train.x.shape[1])[None] < ds.train.lengths[:, None]]
    assert np.allclose(valid.mean(0), 0, atol=1e-4) and np.allclose(valid.std(0), 1, atol=1e-3)
    sil = TIMIT_39.index("sil")
    assert np.all(ds.train.y[:, 0] == sil)  # every utterance opens with h#
    full = load(speech_corpus, tmp_path, test_set="full", phones=61)
    assert full.info["test_set"] == "full" and full.num_classes == 61 and len(full.test) == 4


def test_features_are_cached(speech_corpus, tmp_path, monkeypatch):
    first = load(speech_corpus, tmp_path)
    assert list(tmp_path.glob("timit-*.npz")) and first.info["feature_cache"].startswith(str(tmp_path))

    def refuse(*a, **k):
        raise AssertionError("features recomputed although cached")

    monkeypatch.setattr("echoes.data.timit.mfcc", refuse)
    again = load(speech_corpus, tmp_path)
    assert np.array_equal(first.train.x, again.train.x)
    assert mfcc_module.mfcc is mfcc  # the module itself is untouched


def test_any_letter_case_and_nested_root(speech_corpus, tmp_path):
    lower = tmp_path / "archive" / "data"
    shutil.copytree(speech_corpus, lower)
    for p in sorted(lower.rglob("*"), key=lambda p: -len(p.parts)):
        p.rename(p.with_name(p.name.lower()))
    ds = load(tmp_path / "archive", tmp_path / "cache")
    assert len(ds.train) == 8 and ds.info["test_set"] == "core"


def test_unreadable_audio_and_malformed_phn_files_are_skipped_and_counted(speech_corpus, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(speech_corpus, broken)
    wav = next((broken / "TRAIN").glob("DR1/*/SX*.WAV"))
    wav.write_bytes(b"not audio")
    phn = next(p for p in (broken / "TRAIN").glob("DR2/*/SX*.PHN"))
    phn.write_text("0 100 h#\n100 oops zz\n")
    with pytest.raises(EchoesError, match=r"SX\d+\.PHN:2: expected 'START END PHONE'"):
        read_phn(phn)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load(broken, tmp_path / "c1")
    assert ds.info["skipped_files"] == 2 and len(ds.train) == 6
    skipped = [str(w.message) for w in caught if issubclass(w.category, SkippedFileWarning)]
    assert any(wav.name in m for m in skipped) and any(phn.name in m and "START END" in m for m in skipped)


def test_recurrent_models_and_lsnn_train_framewise_on_the_corpus(speech_corpus, tmp_path, run_dir):
    from echoes.api import train
    from echoes.config import load_config

    ds = load(speech_corpus, tmp_path)
    majority = np.bincount(ds.test.valid_labels()).max() / len(ds.test.valid_labels())
    for overrides in (["model=gru", "model.hidden_size=32", "train.epochs=8", "train.lr=0.01"],
                      ["model=lsnn", "learner=eprop", "model.hidden_size=32", "train.epochs=1"]):
        cfg = load_config(None, overrides + [f"data=timit:{speech_corpus}", "train.batch_size=4",
                                             "tracking.log_weights=false"])
        r = train(cfg, dataset=ds)
        assert r["framewise"] and r["mlflow_run_id"]
        if cfg.model.name == "gru":
            assert r["test_accuracy"] > majority + 0.05  # learns phones beyond the most frequent one
        else:
            assert 0 < r["test_accuracy"] <= 1 and r["learner"] == "eprop"
