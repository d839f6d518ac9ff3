"""Bad and hostile input, as a new user would give it: one table of cases, each run through the
`echoes` command in-process, each ending with exit code 2 and at most three lines on stderr that
name the problem and the fix — never a traceback. Below the table: the cases that need more than
one line to set up (code in user files, concurrent processes, what is left on disk)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from echoes.cli import main
from echoes.data.speech.sphere import write_sphere
from echoes.data.video.make_videos import write_video
from echoes.errors import EchoesError

# --- files the cases name as {placeholders} --------------------------------------------------


def _npz(**arrays):
    def make(path):
        np.savez(path.with_suffix(".npz"), **arrays)
        return f"{path.with_suffix('.npz')}"

    return make


def _text(content, suffix=".yaml"):
    def make(path):
        path = path.with_suffix(suffix)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    return make


def _folder(path):
    path.mkdir()
    return str(path)


X = np.zeros((6, 3, 1), dtype=np.float32)
Y = np.array(["cat", "dog"] * 3)


def _object_array(n=6):
    seqs = np.empty(n, dtype=object)
    seqs[:] = [np.ones((2 + i % 3, 1)) for i in range(n)]
    return seqs


def _ucf(mislabel=False):
    """Two classes × two clips in the UCF101 layout, split 1 only."""

    def make(root):
        lists = root / "ucfTrainTestlist"
        lists.mkdir(parents=True)
        (lists / "classInd.txt").write_text("1 Left\n2 Right\n")
        clips = [f"{c}/v_{c}_g0{g}_c01.avi" for c in ("Left", "Right") for g in (1, 2)]
        video = np.random.default_rng(0).integers(0, 255, (6, 24, 32, 3), dtype=np.uint8)
        for rel in clips:
            (root / "UCF-101" / rel).parent.mkdir(parents=True, exist_ok=True)
            write_video(root / "UCF-101" / rel, video)
        (lists / "trainlist01.txt").write_text(f"{clips[1]} {2 if mislabel else 1}\n{clips[3]} 2\n")
        (lists / "testlist01.txt").write_text(f"{clips[0]}\n{clips[2]}\n")
        return str(root)

    return make


def _timit(bad_audio=(), phn="0 1600 h#\n1600 3200 aa\n"):
    """One training speaker, one core-test and one development speaker, two utterances each;
    the audio of the splits in ``bad_audio`` is not audio."""

    def make(root):
        rng = np.random.default_rng(0)
        for split, speaker in (("TRAIN", "MABC0"), ("TEST", "MDAB0"), ("TEST", "FAKS0")):
            folder = root / split / "DR1" / speaker
            folder.mkdir(parents=True)
            for utt in ("SX1", "SX2"):
                if split in bad_audio:
                    (folder / f"{utt}.WAV").write_bytes(b"not audio")
                else:
                    write_sphere(folder / f"{utt}.WAV", 0.1 * rng.standard_normal(3200))
                (folder / f"{utt}.PHN").write_text(phn)
        return str(root)

    return make


def _timit_empty(root):
    for split in ("TRAIN", "TEST"):
        (root / split).mkdir(parents=True)
    return str(root)


def _weights(content):
    """A torch hub folder holding resnet18's ImageNet weights file, with this content."""

    def make(home):
        checkpoints = home / "hub" / "checkpoints"
        checkpoints.mkdir(parents=True)
        (checkpoints / "resnet18-f37072fd.pth").write_bytes(content)
        return str(home)

    return make


def _sweep(**spec):
    def make(path):
        import yaml

        raw = {"name": "t", "base": {"model": "esn", "data": "synthetic:motion", "tracking": False},
               "trials": 2, "space": {"model.units": [10, 20]}}
        raw.update(spec)
        path = path.with_suffix(".yaml")
        path.write_text(yaml.safe_dump(raw))
        return str(path)

    return make


FILES = {
    "dir": _folder,
    "cache": lambda p: str(p),
    "good": _npz(X_train=X, y_train=Y, X_test=X[:2], y_test=Y[:2]),
    # npz
    "junk_npz": _text("not numpy", ".npz"),
    "no_test": _npz(X_train=X, y_train=Y),
    "flat": _npz(X_train=np.zeros((6, 3)), y_train=Y, X_test=X[:2], y_test=Y[:2]),
    "too_long": _npz(X_train=X, lengths_train=np.array([1, 2, 3, 4, 3, 2]), y_train=Y, X_test=X[:2],
                     y_test=Y[:2]),
    "zero_length": _npz(X_train=X, lengths_train=np.array([3, 0, 3, 3, 3, 3]), y_train=Y, X_test=X[:2],
                        y_test=Y[:2]),
    "negative_length": _npz(X_train=X, lengths_train=np.array([3, -1, 3, 3, 3, 3]), y_train=Y, X_test=X[:2],
                            y_test=Y[:2]),
    "float_lengths": _npz(X_train=X, lengths_train=np.full(6, 2.0), y_train=Y, X_test=X[:2], y_test=Y[:2]),
    "sum_mismatch": _npz(X_train=np.zeros((10, 1)), lengths_train=np.array([2, 2, 2, 2, 2, 1]), y_train=Y,
                         X_test=X[:2], y_test=Y[:2]),
    "nan": _npz(X_train=np.full((6, 3, 1), np.nan), y_train=Y, X_test=X[:2], y_test=Y[:2]),
    "label_count": _npz(X_train=X, y_train=Y[:5], X_test=X[:2], y_test=Y[:2]),
    "labels_2d": _npz(X_train=X, y_train=np.zeros((6, 3)), X_test=X[:2], y_test=Y[:2]),
    "two_heads": _npz(X_train=X, y_train=np.stack([Y, Y[::-1]], 1), X_test=X[:2], y_test=np.stack([Y[:2], Y[:2]], 1),
                      head_names=np.array(["verb", "noun"])),
    "heads_unnamed": _npz(X_train=X, y_train=np.stack([Y, Y], 1), X_test=X[:2], y_test=np.stack([Y[:2], Y[:2]], 1)),
    "object_x": _npz(X_train=_object_array(), y_train=Y, X_test=X[:2], y_test=Y[:2]),
    "object_y": _npz(X_train=X, y_train=np.array(list(Y), dtype=object), X_test=X[:2], y_test=Y[:2]),
    "no_sequences": _npz(X_train=np.zeros((0, 3, 1)), y_train=np.array([]), X_test=X[:2], y_test=Y[:2]),
    "no_steps": _npz(X_train=np.zeros((6, 0, 1)), y_train=Y, X_test=X[:2], y_test=Y[:2]),
    "no_features": _npz(X_train=np.zeros((6, 3, 0)), y_train=Y, X_test=X[:2], y_test=Y[:2]),
    "empty_all": _npz(X_train=np.zeros((0, 1)), lengths_train=np.zeros(0, int), y_train=np.array([]),
                      X_test=X[:2], y_test=Y[:2]),
    "x_val_only": _npz(X_train=X, y_train=Y, X_test=X[:2], y_test=Y[:2], X_val=X[:2]),
    "y_val_only": _npz(X_train=X, y_train=Y, X_test=X[:2], y_test=Y[:2], y_val=Y[:2]),
    "unseen_label": _npz(X_train=X, y_train=Y, X_test=X[:3], y_test=np.array(["cat", "cow", "emu"])),
    "unseen_val_label": _npz(X_train=X, y_train=Y, X_test=X[:2], y_test=Y[:2], X_val=X[:2],
                             y_val=np.array(["cat", "cow"])),
    "one_class": _npz(X_train=X, y_train=np.array(["cat"] * 6), X_test=X[:2], y_test=np.array(["cat"] * 2)),
    "strings_x": _npz(X_train=np.full((6, 3, 1), "a"), y_train=Y, X_test=X[:2], y_test=Y[:2]),
    "feature_mismatch": _npz(X_train=X, y_train=Y, X_test=np.zeros((2, 3, 2)), y_test=Y[:2]),
    # config files
    "invalid_yaml": _text("model: [unclosed\n"),
    "tab_yaml": _text("model:\n\tname: lstm\n"),
    "list_yaml": _text("- model\n- lstm\n"),
    "scalar_yaml": _text("just some words\n"),
    "binary_yaml": _text(b"\x89PNG\r\n\x1a\n\x00\xff\xfe binary"),
    "dup_top": _text("model: lstm\ntrain: {epochs: 2}\nmodel: gru\n"),
    "dup_nested": _text("train:\n  epochs: 2\n  lr: 0.1\n  epochs: 3\n"),
    "unknown_key_yaml": _text("trian: {epochs: 2}\n"),
    "wrong_type_yaml": _text("train: {epochs: many}\n"),
    # suites
    "suite_typo": _text("modles: [lstm]\ndatasets: [synthetic:motion]\n"),
    "suite_dup": _text("models: [lstm]\ndatasets: [synthetic:motion]\nmodels: [gru]\n"),
    "suite_model": _text("models: [lstn]\ndatasets: [synthetic:motion]\n"),
    "suite_seeds": _text("models: [lstm]\ndatasets: [synthetic:motion]\nseeds: [zero]\n"),
    "suite_empty": _text("name: nothing\n"),
    "suite_entry": _text("models: [{hidden_size: 4}]\ndatasets: [synthetic:motion]\n"),
    "suite_dataset": _text("models: [lstm]\ndatasets: [5]\n"),
    "suite_base": _text("models: [lstm]\ndatasets: [synthetic:motion]\nbase: {train: {epoch: 2}}\n"),
    "suite_source": _text("models: [lstm]\ndatasets: [uea]\n"),
    # sweeps
    "sweep_typo": _sweep(trails=5),
    "sweep_sampler": _sweep(sampler="tpee"),
    "sweep_space": _sweep(space={"model.units": "many"}),
    "sweep_key": _sweep(space={"model.unit": [10, 20]}),
    "sweep_dup": _text("name: t\ntrials: 2\ntrials: 3\n"),
    # ucf101
    "ucf": _ucf(),
    "ucf_mislabel": _ucf(mislabel=True),
    "damaged_weights": _weights(b"damaged"),
    "foreign_weights": _weights(b""),  # replaced below: a valid torch file with other keys
    # timit
    "timit": _timit(),
    "timit_empty": _timit_empty,
    "timit_bad_audio": _timit(bad_audio=("TRAIN", "TEST")),
    "timit_bad_test": _timit(bad_audio=("TEST",)),
    "timit_bad_phn": _timit(phn="0 1600 h#\n1600 oops aa\n"),
    # tracking
    "not_a_db": _text(b"SQLite? no.", ".db"),
}


def _foreign_weights(home):
    import torch

    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"not_a_layer.weight": torch.zeros(2)}, checkpoints / "resnet18-f37072fd.pth")
    return str(home)


FILES["foreign_weights"] = _foreign_weights


def _foreign_db(path):
    import sqlite3

    with sqlite3.connect(path) as db:  # a SQLite file, but not an MLflow store
        db.execute("create table experiments (x int)")
    return str(path)


FILES["foreign_db"] = _foreign_db


def T(*args):
    """`echoes train ... tracking=false`."""
    return ["train", *args, "tracking=false"]


UCF = ("data=ucf101:{ucf}", "data.cache_dir={cache}", "data.frames=2", "model=esn", "model.units=10")
TIMIT = ("data.cache_dir={cache}", "model=esn", "model.units=10")
ESN = ("model=esn", "model.units=10", "data=npz:{good}")

CASES = [
    # --- the command line -----------------------------------------------------------------
    ("cli-unknown-model", T("model=lstn"), "unknown model 'lstn' — did you mean 'lstm'"),
    ("cli-unknown-section", T("trian.epochs=3"), "unknown config key 'trian' — did you mean 'train'"),
    ("cli-unknown-train-key", T("train.epoch=3"), "unknown config key 'train.epoch' — did you mean 'epochs'"),
    ("cli-epochs-text", T("train.epochs=ten"), r"'train.epochs': input should be a valid integer.*'ten'"),
    ("cli-epochs-zero", T("train.epochs=0"), "'train.epochs': input should be greater than or equal to 1"),
    ("cli-lr-negative", T("train.lr=-1"), "'train.lr': input should be greater than 0"),
    ("cli-schedule", T("train.schedule=linear"), "'train.schedule': input should be 'constant' or 'cosine'"),
    ("cli-val-fraction", T("data.val_fraction=1.5"), "'data.val_fraction': input should be less than 1"),
    ("cli-seed-text", T("seed=abc"), "'seed': input should be a valid integer"),
    ("cli-tracking-flag", ["train", "tracking.enabled=maybe"], "'tracking.enabled': input should be a valid boolean"),
    ("cli-no-equals", T("train.epochs"), "must look like KEY=VALUE, e.g. train.epochs=50"),
    ("cli-empty-key", T("=3"), "empty key — write KEY=VALUE"),
    ("cli-source-no-kind", T("data=BasicMotions"), "must look like KIND:NAME, e.g. uea:BasicMotions"),
    ("cli-source-kind", T("data=synthetc:motion"), "unknown data source 'synthetc' — did you mean 'synthetic'"),
    ("cli-synthetic-task", T("data=synthetic:motoin"), "did you mean 'motion'"),
    ("cli-uea-unknown", T("data=uea:NoSuchDataset"), "uea:NoSuchDataset: it is not bundled .*; bundled: ACSF1"),
    ("cli-learner", T("learner=ridgee"), "unknown learner 'ridgee' — did you mean 'ridge'"),
    ("cli-device", T(*ESN, "train.device=tpu"), "unknown device 'tpu' — use auto, cpu, cuda or cuda:N"),
    ("cli-data-option", T("data=synthetic:motion", "data.n_trian=5"), "no option 'n_trian' — did you mean 'n_train'"),
    ("cli-model-option", T(*ESN, "model.unitz=5"), "no option 'unitz' — did you mean 'units'"),
    ("cli-json-directory", T(*ESN, "--json", "{dir}"), "output '.*' is a directory — give a file name"),
    ("cli-json-under-a-file", T(*ESN, "--json", "{good}/out.json"),
     "good.npz is a file, not a folder — choose another path"),
    ("cli-unknown-option", T(*ESN, "--jsn", "out.json"), "unrecognized arguments: --jsn"),
    ("cli-features-no-cache", ["features", "synthetic:motion"], "keeps no feature cache — `echoes features` is for"),
    ("cli-make-videos-size", ["data", "make-videos", "{dir}", "--size", "12"], "--size must look like 128x96"),
    ("cli-units-text", T(*ESN, "model.units=abc"),
     "model.units must be an integer >= 1, got 'abc' \\(model 'esn'\\) — e.g. model.units=500"),
    ("cli-units-empty", T(*ESN, "model.units="), "model.units must be an integer >= 1, got an empty value"),
    ("cli-units-fraction", T(*ESN, "model.units=10.5"), "model.units must be an integer >= 1, got 10.5"),
    ("cli-hidden-text", T("model=lstm", "model.hidden_size=abc"), "model.hidden_size must be an integer >= 1"),
    ("cli-hidden-negative", T("model=lstm", "model.hidden_size=-4"), "model.hidden_size must be .* got -4"),
    ("cli-forget-bias-text", T("model=lstm", "model.forget_bias=abc"),
     "model.forget_bias must be a number, got 'abc' \\(model 'lstm'\\) — e.g. model.forget_bias=1.0"),
    ("cli-forget-bias-gru", T("model=gru", "model.forget_bias=1"), "model 'gru' has no option 'forget_bias'"),
    ("cli-radius-text", T(*ESN, "model.spectral_radius=abc"), "spectral_radius must be a number or one of auto"),
    ("cli-alpha-text", T(*ESN, "learner.alpha=abc"), "learner.alpha must be a number or null, got 'abc'"),
    # --- config files ---------------------------------------------------------------------
    ("config-missing", T("--config", "nope.yaml"), "config file 'nope.yaml' not found — check the path"),
    ("config-directory", T("--config", "{dir}"), "is a directory — give the YAML file inside it"),
    ("config-invalid", T("--config", "{invalid_yaml}"), "is not valid YAML at line 2 — fix its syntax"),
    ("config-tabs", T("--config", "{tab_yaml}"), "is not valid YAML at line 2 — fix its syntax"),
    ("config-list", T("--config", "{list_yaml}"), "must hold a mapping of keys to values"),
    ("config-scalar", T("--config", "{scalar_yaml}"), "must hold a mapping of keys to values"),
    ("config-binary", T("--config", "{binary_yaml}"), "is not a text file \\(not UTF-8\\) — give a YAML file"),
    ("config-duplicate", T("--config", "{dup_top}"), "key 'model' is given twice \\(line 3\\) — keep one"),
    ("config-duplicate-nested", T("--config", "{dup_nested}"), "key 'epochs' is given twice \\(line 4\\)"),
    ("config-unknown-key", T("--config", "{unknown_key_yaml}"), "unknown config key 'trian' — did you mean"),
    ("config-wrong-type", T("--config", "{wrong_type_yaml}"), "'train.epochs': input should be a valid integer"),
    # --- suites ---------------------------------------------------------------------------
    ("suite-missing", ["compare", "nosuchsuite"], "suite 'nosuchsuite' not found — give a YAML path or one of"),
    ("suite-unknown-key", ["compare", "{suite_typo}"], "unknown key 'modles' — did you mean 'models'"),
    ("suite-duplicate", ["compare", "{suite_dup}"], "key 'models' is given twice"),
    ("suite-unknown-model", ["compare", "{suite_model}"], "unknown model 'lstn' — did you mean 'lstm'"),
    ("suite-seeds", ["compare", "{suite_seeds}"], "seeds must be a list of integers"),
    ("suite-no-runs", ["compare", "{suite_empty}"], "the suite has no runs — list models, datasets and seeds"),
    ("suite-model-entry", ["compare", "{suite_entry}"], "must be a name or a mapping with 'name'"),
    ("suite-dataset-entry", ["compare", "{suite_dataset}"], "must be a source like uea:BasicMotions"),
    ("suite-base-key", ["compare", "{suite_base}"], "unknown config key 'train.epoch' — did you mean 'epochs'"),
    ("suite-source", ["compare", "{suite_source}"], "must look like KIND:NAME"),
    ("suite-override", ["compare", "{suite_model}", "train.epoch=2"], "did you mean 'epochs'"),
    # --- sweeps ---------------------------------------------------------------------------
    ("sweep-missing", ["sweep", "nosuchsweep"], "not found"),
    ("sweep-unknown-key", ["sweep", "{sweep_typo}"], "did you mean 'trials'"),
    ("sweep-sampler", ["sweep", "{sweep_sampler}"], "did you mean 'tpe'"),
    ("sweep-space", ["sweep", "{sweep_space}"], "must be a list of values or a mapping"),
    ("sweep-space-key", ["sweep", "{sweep_key}"], "did you mean 'units'"),
    ("sweep-duplicate", ["sweep", "{sweep_dup}"], "key 'trials' is given twice"),
    # --- npz ------------------------------------------------------------------------------
    ("npz-missing", T("data=npz:missing.npz"), "npz:missing.npz: file not found — check the path"),
    ("npz-not-a-zip", T("data=npz:{junk_npz}"), "not a readable .npz file — save it with numpy.savez"),
    ("npz-missing-keys", T("data=npz:{no_test}"), "missing key\\(s\\) X_test, y_test — the file needs"),
    ("npz-2d-without-lengths", T("data=npz:{flat}"), r"expected \(N, T, F\) padded, or \(ΣT, F\) concatenated"),
    ("npz-length-beyond-t", T("data=npz:{too_long}"), "lengths_train must lie between 1 and T=3"),
    ("npz-zero-length", T("data=npz:{zero_length}"), r"lengths_train\[1\] is 0 — every sequence needs at least"),
    ("npz-negative-length", T("data=npz:{negative_length}"), r"lengths_train\[1\] is -1 — every sequence needs"),
    ("npz-float-lengths", T("data=npz:{float_lengths}"), "store integer step counts"),
    ("npz-lengths-sum", T("data=npz:{sum_mismatch}"), "adds up to 11 steps but X_train has 10 rows"),
    ("npz-nan", T("data=npz:{nan}"), "NaN or inf values — clean or impute them"),
    ("npz-label-count", T("data=npz:{label_count}"),
     "y_train has \\(5,\\) labels for 6 sequences in X_train — give one label"),
    ("npz-labels-2d", T("data=npz:{labels_2d}"), "different shapes .* give one label per sequence"),
    ("npz-heads-unnamed", T("data=npz:{heads_unnamed}"), "several labels per sequence — add head_names"),
    ("npz-object-x", T("data=npz:{object_x}"), "X_train is an object array.*data.allow_pickle=true"),
    ("npz-object-y", T("data=npz:{object_y}"), "y_train is an object array.*numeric or string array"),
    ("npz-allow-pickle-flag", T("data=npz:{good}", "data.allow_pickle=maybe"), "data.allow_pickle must be .*'maybe'"),
    ("npz-no-sequences", T("data=npz:{no_sequences}"), "X_train holds no sequences — every split needs"),
    ("npz-no-steps", T("data=npz:{no_steps}"), "sequence 0 has no steps .* needs at least one step"),
    ("npz-no-features", T("data=npz:{no_features}"), "0 features per step — store at least one"),
    ("npz-empty-concatenated", T("data=npz:{empty_all}"), "X_train holds no sequences"),
    ("npz-x-val-only", T("data=npz:{x_val_only}"), "X_val given without y_val — add y_val or drop X_val"),
    ("npz-y-val-only", T("data=npz:{y_val_only}"), "y_val given without X_val — add X_val or drop y_val"),
    ("npz-unseen-test-label", T("data=npz:{unseen_label}"), "test label\\(s\\) 'cow', 'emu' never appear in"),
    ("npz-unseen-val-label", T("data=npz:{unseen_val_label}"), "validation label\\(s\\) 'cow' never appear"),
    ("npz-single-class", T("data=npz:{one_class}"), "single class \\('cat'\\) — a classifier needs"),
    ("npz-text-features", T("data=npz:{strings_x}"), "has dtype <U1 — store a float array"),
    ("npz-feature-mismatch", T("data=npz:{feature_mismatch}"), r"different feature counts \[1, 2\] — use the same"),
    # --- several label heads, EPIC-KITCHENS ---------------------------------------------------
    ("heads-weights", T("model=mean_pool", "data=npz:{two_heads}", "train.head_weights=[1.0]", "train.epochs=1"),
     "train.head_weights has 1 values for 2 label heads \\(verb, noun\\) — give one weight per head"),
    ("heads-eprop", T("model=lstm", "model.pooling=last", "learner=eprop", "data=npz:{two_heads}", "train.epochs=1"),
     "learner=eprop trains one label head.* — use learner=gradient"),
    ("eprop-pooled-lstm", T("model=lstm", "learner=eprop", "data=synthetic:motion", "train.epochs=1"),
     "e-prop reads the LSTM out at its last step, not pooling=last_mean — set model.pooling=last"),
    ("epic-missing", T("data=epic100:{dir}/nowhere"), "EPIC_100_train.csv not found .* `echoes data make-epic ROOT`"),
    ("cli-make-epic-size", ["data", "make-epic", "{dir}", "--size", "12"], "--size must look like 96x64"),
    ("cli-make-epic-verbs", ["data", "make-epic", "{dir}", "--verbs", "1"], "verbs must be 2..8"),
    # --- ucf101 ---------------------------------------------------------------------------
    ("ucf-missing", T("data=ucf101:{dir}/nowhere"), "make-videos"),
    ("ucf-split", T(*UCF, "data.split=4"), "split must be 1, 2 or 3"),
    ("ucf-split-file", T(*UCF, "data.split=2"), "trainlist02.txt not found"),
    ("ucf-label", T("data=ucf101:{ucf_mislabel}", "data.cache_dir={cache}"),
     r"label 2 does not match folder Left \(class 1 in classInd.txt\)"),
    ("ucf-backbone", T(*UCF, "data.features=resnet19"), "did you mean 'resnet18'"),
    ("ucf-sampling", T(*UCF, "data.sampling=random"), "sampling must be uniform or segments"),
    ("ucf-weights", T(*UCF, "data.weights=imagenet"), "small_cnn has no pretrained weights — use weights=none"),
    ("ucf-frames", T(*UCF, "data.frames=0"), "data.frames must be a positive integer"),
    ("ucf-size", T(*UCF, "data.size=4"), "data.size must be an integer >= 8"),
    ("ucf-damaged-weights", T(*UCF, "data.features=resnet18", "data.weights=imagenet", "data.size=32"),
     "resnet18-f37072fd.pth is not a valid weights file .* delete it and download",
     {"TORCH_HOME": "{damaged_weights}"}),
    ("ucf-foreign-weights", T(*UCF, "data.features=resnet18", "data.weights=imagenet", "data.size=32"),
     "resnet18-f37072fd.pth is not a valid weights file", {"TORCH_HOME": "{foreign_weights}"}),
    # --- timit ----------------------------------------------------------------------------
    ("timit-missing", T("data=timit:{dir}/nowhere", *TIMIT), "folder not found — point it at a TIMIT-layout"),
    ("timit-no-splits", T("data=timit:{dir}", *TIMIT), "no TRAIN and TEST folders found — expected"),
    ("timit-no-phn", T("data=timit:{timit_empty}", *TIMIT), "no .PHN files outside the SA sentences"),
    ("timit-phones", T("data=timit:{timit}", "data.phones=40", *TIMIT), "data.phones must be 39 or 61"),
    ("timit-test-set", T("data=timit:{timit}", "data.test_set=half", *TIMIT), "test_set must be core or full"),
    ("timit-no-audio", T("data=timit:{timit_bad_audio}", *TIMIT), "no readable utterance — cannot read audio"),
    ("timit-no-test", T("data=timit:{timit_bad_test}", *TIMIT), "need utterances in both TRAIN and TEST"),
    ("timit-all-phn-bad", T("data=timit:{timit_bad_phn}", *TIMIT), "no readable utterance .*expected 'START END"),
    # --- tracking -------------------------------------------------------------------------
    ("tracking-env-missing-folder", ["train", *ESN], "/missing/dir is not an existing folder — create it, or fix "
     "MLFLOW_TRACKING_URI", {"MLFLOW_TRACKING_URI": "sqlite:////missing/dir/x.db"}),
    ("tracking-uri-under-a-file", ["train", *ESN, "tracking.uri=sqlite:///{good}/x.db"],
     "is not an existing folder — create it, or fix tracking.uri"),
    ("tracking-results-dir-is-a-file", ["train", *ESN, "tracking.results_dir={good}"],
     "cannot create the MLflow store's folder .*good.npz: File exists — set tracking.results_dir"),
    ("tracking-not-a-database", ["train", *ESN, "tracking.uri=sqlite:///{not_a_db}"],
     "file is not a database — check tracking.uri"),
    ("tracking-foreign-database", ["train", *ESN, "tracking.uri=sqlite:///{foreign_db}"],
     "no such column: experiments.experiment_id — check tracking.uri"),
    ("tracking-unknown-scheme", ["train", *ESN, "tracking.uri=bogus://x"], "unsupported URI 'bogus://x'"),
    ("tracking-report-missing-folder", ["report", "--uri", "sqlite:////missing/dir/x.db"],
     "no MLflow store at sqlite:////missing/dir/x.db — run `echoes train` or `echoes compare` first"),
    ("tracking-suite-missing-folder", ["compare", "{suite_model}", "models=[esn]",
                                       "tracking.uri=sqlite:////missing/x/y.db"], "is not an existing folder"),
]
def _fill(text, tmp_path, made):
    def one(match):
        name = match.group(1)
        if name not in made:
            made[name] = FILES[name](tmp_path / name)
        return made[name]

    return re.sub(r"\{(\w+)\}", one, text)


@pytest.mark.parametrize("argv, message, env", [pytest.param(c[1], c[2], c[3] if len(c) > 3 else {}, id=c[0])
                                                for c in CASES])
def test_bad_input_is_one_line_exit_2(run_dir, capsys, monkeypatch, argv, message, env):
    made = {}
    for key, value in env.items():
        monkeypatch.setenv(key, _fill(value, run_dir, made))
    argv = [_fill(a, run_dir, made) for a in argv]
    code = _run(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert "Traceback" not in err and 1 <= len(lines) <= 3, err
    assert re.search(message, lines[-1]), lines[-1]


def _run(argv):
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


def test_the_table_covers_every_kind_of_input():
    kinds = {c[0].split("-")[0] for c in CASES}
    assert kinds >= {"cli", "config", "suite", "sweep", "npz", "ucf", "timit", "tracking"}
    assert len(CASES) >= 60


# --- code in user files is never run ---------------------------------------------------------


class RunsACommand:
    """Pickles to a call of os.system: unpickling it runs the command."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_crafted_npz_runs_nothing(run_dir, capsys):
    marker = run_dir / "ran"
    hostile = np.empty(6, dtype=object)
    hostile[:] = [RunsACommand(f"touch {marker}")] * 6
    np.savez(run_dir / "evil.npz", X_train=hostile, y_train=Y, X_test=X[:2], y_test=Y[:2])
    assert _run(T("data=npz:evil.npz")) == 2
    assert "data.allow_pickle=true" in capsys.readouterr().err
    assert not marker.exists()


def test_a_crafted_weights_file_runs_nothing(tmp_path, monkeypatch):
    import torch

    from echoes.data.video.backbones import create_backbone

    marker = tmp_path / "ran"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    planted = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    planted.parent.mkdir(parents=True)
    torch.save({"conv1.weight": RunsACommand(f"touch {marker}")}, planted)
    with pytest.raises(EchoesError, match="resnet18-f37072fd.pth is not a valid weights file") as e:
        create_backbone("resnet18", "imagenet")
    assert "\n" not in str(e.value)
    assert not marker.exists()


# --- what is left on disk --------------------------------------------------------------------


def test_overrides_after_an_option_and_no_temporary_files(run_dir):
    np.savez(run_dir / "good.npz", X_train=X, y_train=Y, X_test=X[:2], y_test=Y[:2])
    assert main(["train", "model=esn", "--json", "out/r.json", "model.units=10", "data=npz:good.npz",
                 "tracking=false"]) == 0
    assert json.loads((run_dir / "out" / "r.json").read_text())["model"] == "esn"
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


def test_a_malformed_phn_file_is_skipped_and_counted_in_one_line(tmp_path):
    root = _timit()(tmp_path / "timit")
    bad = tmp_path / "timit" / "TRAIN" / "DR1" / "MABC0" / "SX2.PHN"
    bad.write_text("0 1600 h#\n1600 3200 zz\n")
    p = subprocess.run([sys.executable, "-m", "echoes", "features", f"timit:{root}", f"cache_dir={tmp_path}"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "skipped_files: 1" in p.stdout
    assert p.stderr.strip().splitlines() == [
        f"echoes: warning: timit: skipped {bad}:2: 'zz' is not one of TIMIT's 61 phones"]


# --- concurrency -----------------------------------------------------------------------------


def test_four_processes_create_one_store_together(run_dir):
    np.savez(run_dir / "good.npz", X_train=X, y_train=Y, X_test=X[:2], y_test=Y[:2])
    cmd = [sys.executable, "-m", "echoes", "train", "model=esn", "model.units=10", "data=npz:good.npz",
           "tracking.log_weights=false"]
    procs = [subprocess.Popen(cmd, cwd=run_dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in results]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run_dir / 'echoes-runs' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("echoes").experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
