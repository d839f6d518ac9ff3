"""TIMIT, or any folder in its layout: ``timit:ROOT`` — framewise phone classification.

Layout (any letter case): ``ROOT/TRAIN|TEST/DR1..DR8/<speaker>/<utt>.WAV`` (NIST
SPHERE, read with soundfile) with ``<utt>.PHN`` (``start end phone`` in samples,
TIMIT's 61 phones). The SA dialect sentences are left out, as usual. Every 10 ms
frame gets 13 MFCCs (c0 → log energy) + Δ + ΔΔ = 39 features and the phone under
its centre. Phones are folded 61 → 39 (Lee & Hon 1989) when loading, so models
train and are scored on 39 classes (``data.phones=61`` keeps all 61); ``q`` frames
(glottal stops, deleted by the folding) are left unlabelled.

Splits: train = TRAIN; test = the 24-speaker core test set, validation = the
50-speaker development set — both taken from TEST by speaker name. A folder
without those speakers tests on all of TEST and validates on held-out training
speakers. Features are computed once and cached (``data.cache_dir``).
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import utils
from ..errors import EchoesError, SkippedFileWarning
from ..utils import progress
from . import SourceData, register_source
from .sequences import Sequences, pad_labels, pad_sequences
from .speech.mfcc import DEFAULT_MFCC, MfccConfig, frame_centres, mfcc

TIMIT_61 = (
    "aa ae ah ao aw ax ax-h axr ay b bcl ch d dcl dh dx eh el em en eng epi er ey f g gcl h# hh hv "
    "ih ix iy jh k kcl l m n ng nx ow oy p pau pcl q r s sh t tcl th uh uw ux v w y z zh"
).split()
TIMIT_39 = (
    "iy ih eh ae ah uw uh aa ey ay oy aw ow er l r w y m n ng ch jh dh b d dx g p t k z v f th s sh "
    "hh sil"
).split()
# Lee & Hon (1989): 61 → 39; every other phone keeps its name, q is deleted.
FOLD_39 = {
    "ao": "aa", "ax": "ah", "ax-h": "ah", "axr": "er", "hv": "hh", "ix": "ih", "el": "l", "em": "m",
    "en": "n", "nx": "n", "eng": "ng", "zh": "sh", "ux": "uw", "pcl": "sil", "tcl": "sil", "kcl": "sil",
    "bcl": "sil", "dcl": "sil", "gcl": "sil", "h#": "sil", "pau": "sil", "epi": "sil", "q": None,
}

# The standard core test set (2 men and 1 woman from each dialect region) and development set.
CORE_TEST = {
    1: ["MDAB0", "MWBT0", "FELC0"], 2: ["MTAS1", "MWEW0", "FPAS0"], 3: ["MJMP0", "MLNT0", "FPKT0"],
    4: ["MLLL0", "MTLS0", "FJLM0"], 5: ["MBPM0", "MKLT0", "FNLP0"], 6: ["MCMJ0", "MJDH0", "FMGD0"],
    7: ["MGRT0", "MNJM0", "FDHC0"], 8: ["MJLN0", "MPAM0", "FMLD0"],
}
DEV_SET = (
    "FAKS0 FDAC1 FJEM0 MGWT0 MJAR0 MMDB1 MMDM2 MPDF0 FCMH0 FKMS0 MBDG0 MBWM0 MCSH0 FADG0 FDMS0 "
    "FEDW0 MGJF0 MGLB0 MRTK0 MTAA0 MTDT0 MTHC0 MWJG0 FNMR0 FREW0 FSEM0 MBNS0 MMJR0 MDLS0 MDLF0 "
    "MDVC0 MERS0 FMAH0 FDRW0 MRCS0 MRJM4 FCAL1 MMWH0 FJSJ0 MAJC0 MJSW0 MREB0 FGJD0 FJMG0 MROA0 "
    "MTEB0 MJFC0 MRJR0 FMML0 MRWS1"
).split()
CORE_SPEAKERS = {s for names in CORE_TEST.values() for s in names}

CACHE_VERSION = 1


def fold_map(phones: int) -> tuple[np.ndarray, list[str]]:
    """Index of each of the 61 phones in the chosen class list (-1: unlabelled), and that list."""
    if phones == 61:
        return np.arange(len(TIMIT_61)), list(TIMIT_61)
    if phones != 39:
        raise EchoesError(f"timit: data.phones must be 39 or 61, got {phones}")
    folded = [FOLD_39.get(p, p) for p in TIMIT_61]
    return np.array([TIMIT_39.index(f) if f else -1 for f in folded]), list(TIMIT_39)


@dataclass
class Utterance:
    split: str  # TRAIN | TEST
    speaker: str
    uid: str
    wav: Path
    phn: Path


def _child(folder: Path, name: str) -> Path | None:
    """The entry of folder called name, in any letter case."""
    for p in folder.iterdir():
        if p.name.lower() == name.lower():
            return p
    return None


def find_corpus(root: Path) -> dict[str, Path]:
    """TRAIN and TEST folders at root or up to two levels below (e.g. archive/data/TRAIN)."""
    if not root.is_dir():
        raise EchoesError(f"timit:{root}: folder not found — point it at a TIMIT-layout folder "
                          "(`echoes data make-speech ROOT` writes one)")
    candidates = [root] + [p for p in root.iterdir() if p.is_dir()]
    candidates += [q for p in candidates[1:] for q in p.iterdir() if q.is_dir()]
    for folder in candidates:
        train, test = _child(folder, "train"), _child(folder, "test")
        if train and test and train.is_dir() and test.is_dir():
            return {"TRAIN": train, "TEST": test}
    raise EchoesError(f"timit:{root}: no TRAIN and TEST folders found — expected "
                      "ROOT/TRAIN/DR1/<speaker>/<utt>.WAV + .PHN (any letter case)")


def list_utterances(root: Path) -> list[Utterance]:
    """Every non-SA utterance with a .PHN, in a stable order; its audio may be missing (skipped later)."""
    utts = []
    for split, folder in find_corpus(root).items():
        for phn in sorted(folder.rglob("*")):
            if phn.suffix.lower() != ".phn" or phn.stem.upper().startswith("SA"):
                continue
            # Kaggle's copy has SX1.WAV (SPHERE) and SX1.WAV.wav (RIFF) side by side: either will do.
            names = {phn.stem.lower() + ".wav", phn.stem.lower() + ".wav.wav"}
            wavs = sorted((p for p in phn.parent.iterdir() if p.name.lower() in names), key=lambda p: len(p.name))
            utts.append(Utterance(split, phn.parent.name.upper(), phn.stem.upper(),
                                  wavs[0] if wavs else phn.with_suffix(".WAV"), phn))
    return utts


def read_phn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(segment ends in samples, 61-phone indices) of a .PHN file."""
    ends, labels = [], []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise EchoesError(f"{path}:{n}: expected 'START END PHONE', got {line.strip()!r}")
        phone = parts[2].lower()
        if phone not in TIMIT_61:
            raise EchoesError(f"{path}:{n}: '{phone}' is not one of TIMIT's 61 phones")
        ends.append(int(parts[1]))
        labels.append(TIMIT_61.index(phone))
    if not ends:
        raise EchoesError(f"{path}: no phone segments — the .PHN file is empty")
    return np.array(ends), np.array(labels)


def frame_labels(ends: np.ndarray, labels: np.ndarray, num_samples: int, rate: int,
                 cfg: MfccConfig) -> np.ndarray:
    """The phone under each frame's centre sample."""
    seg = np.searchsorted(ends, frame_centres(num_samples, rate, cfg), side="right")
    return labels[np.minimum(seg, len(labels) - 1)]


def _cache_key(utts: list[Utterance], cfg: MfccConfig) -> str:
    h = hashlib.sha1(json.dumps({"v": CACHE_VERSION, "mfcc": cfg.as_dict()}).encode())
    for u in utts:
        for p in (u.wav, u.phn):
            st = p.stat() if p.exists() else None
            h.update(f"{p}|{st.st_size if st else -1}|{st.st_mtime_ns if st else -1}\n".encode())
    return h.hexdigest()[:16]


def load_features(root: Path, cache_dir: Path, cfg: MfccConfig = DEFAULT_MFCC) -> dict[str, np.ndarray]:
    """Features and 61-phone frame labels of every utterance, from the cache or computed once."""
    from .speech.sphere import read_audio

    utts = list_utterances(root)
    if not utts:
        raise EchoesError(f"timit:{root}: no .PHN files outside the SA sentences — is this a TIMIT-layout folder?")
    path = cache_dir / f"timit-{_cache_key(utts, cfg)}.npz"
    if path.exists():
        try:
            with np.load(path) as z:
                return {**{k: z[k] for k in z.files}, "cache": np.array(str(path))}
        except (OSError, ValueError, EOFError):
            pass  # a damaged cache is recomputed below
    feats, labels, keep, skipped = [], [], [], []
    for u in progress(utts, desc="MFCC", unit="utt"):
        if not u.wav.exists():
            skipped.append(f"{u.phn}: no audio file beside it")
            continue
        try:  # a file that cannot be read is skipped and counted, audio or phone labels alike
            audio, rate = read_audio(u.wav)
            ends, phones = read_phn(u.phn)
        except EchoesError as e:
            skipped.append(str(e))
            continue
        f = mfcc(audio, rate, cfg)
        feats.append(f)
        labels.append(frame_labels(ends, phones, len(audio), rate, cfg))
        keep.append(u)
    if not keep:
        raise EchoesError(f"timit:{root}: no readable utterance — {skipped[0]}")
    out = {
        "x": np.concatenate(feats), "y61": np.concatenate(labels).astype(np.int16),
        "offsets": np.cumsum([0] + [len(f) for f in feats]),
        "split": np.array([u.split for u in keep]), "speaker": np.array([u.speaker for u in keep]),
        "uid": np.array([u.uid for u in keep]), "skipped": np.array(skipped, dtype=str),
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **out)
    utils.atomic_write(path, buffer.getvalue())
    out["cache"] = np.array(str(path))
    return out


@register_source("timit")
def timit(name: str, *, seed: int = 0, phones: int = 39, test_set: str = "core",  # noqa: ARG001
          cache_dir: str | None = None) -> SourceData:
    """TIMIT-layout speech (timit:ROOT): framewise 39-phone labels on MFCC+Δ+ΔΔ frames.

    ``phones``: 39 (folded, Lee & Hon) or 61 classes; ``test_set``: core or full; ``cache_dir``: where
    MFCC features are cached (null: ~/.cache/echoes).
    """
    if test_set not in ("core", "full"):
        raise EchoesError(f"timit: data.test_set must be core or full, got '{test_set}'")
    root = Path(name).expanduser()
    data = load_features(root, Path(cache_dir) if cache_dir else utils.cache_dir())
    to_class, classes = fold_map(phones)
    x, y, off = data["x"], to_class[data["y61"].astype(np.int64)], data["offsets"]
    split, speaker = data["split"], data["speaker"]

    def sequences(idx: np.ndarray) -> Sequences:
        frames = [x[off[i] : off[i + 1]] for i in idx]
        xs, lengths = pad_sequences(frames)
        return Sequences(xs, lengths, pad_labels([y[off[i] : off[i + 1]] for i in idx], xs.shape[1]))

    train = np.flatnonzero(split == "TRAIN")
    in_test = split == "TEST"
    dev = np.flatnonzero(in_test & np.isin(speaker, DEV_SET))
    core = np.flatnonzero(in_test & np.isin(speaker, list(CORE_SPEAKERS)))
    used_set = test_set
    if test_set == "full" or len(core) == 0:
        core, used_set = np.flatnonzero(in_test & ~np.isin(speaker, DEV_SET)), "full"
    if len(train) == 0 or len(core) == 0:
        raise EchoesError(f"timit:{name}: need utterances in both TRAIN and TEST (outside the dev set), "
                          f"found {len(train)} and {len(core)}")
    for reason in data["skipped"]:
        warnings.warn(f"timit: skipped {reason}", SkippedFileWarning, stacklevel=2)
    info = {"test_set": used_set, "phones": phones, "skipped_files": len(data["skipped"]),
            "train_speakers": len(set(speaker[train])), "test_speakers": len(set(speaker[core]))}
    if "cache" in data:
        info["feature_cache"] = str(data["cache"])
    return SourceData(
        train=sequences(train), test=sequences(core), val=sequences(dev) if len(dev) else None,
        class_names=classes, train_groups=speaker[train], info=info,
    )
