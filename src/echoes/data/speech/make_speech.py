"""``echoes data make-speech ROOT``: a small speech corpus in exactly TIMIT's layout, spoken by Festival.

Festival (Debian packages ``festival``, ``festvox-kallpc16k``; ``festvox-kdlpc16k``
and ``festvox-us-slt-hts`` add voices) synthesises each sentence and reports when
every phone ends (its Segment relation); those times become real ``.PHN``
alignments. Voices, speaking rates and pitches act as speakers::

    ROOT/TRAIN/DR1/MKAB0/SA1.WAV  SA1.PHN  SA1.WRD  SA1.TXT  SX12.WAV ...
    ROOT/TEST/DR1/MDAB0/...        (core-test and development speakers keep TIMIT's names)

Audio is 16 kHz 16-bit NIST SPHERE, labels are TIMIT symbols: Festival's phones
are already TIMIT's (radio set); pauses become ``h#`` at the ends and ``pau``
inside. Stops are one segment each (Festival has no separate closure).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import EchoesError
from ...utils import progress
from ..timit import CORE_TEST, DEV_SET, TIMIT_61
from .sphere import read_audio, write_sphere

SAMPLE_RATE = 16000

# The two dialect sentences every TIMIT speaker reads (excluded from training and tests, as usual).
SA_SENTENCES = [
    "She had your dark suit in greasy wash water all year.",
    "Don't ask me to carry an oily rag like that.",
]

# Harvard sentences (IEEE 1969, lists 1-6): phonetically balanced, public domain.
SENTENCES = [
    "The birch canoe slid on the smooth planks.", "Glue the sheet to the dark blue background.",
    "It's easy to tell the depth of a well.", "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.", "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.", "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.", "Large size in stockings is hard to sell.",
    "The boy was there when the sun rose.", "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.", "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.", "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.", "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.", "The girl at the booth sold fifty bonds.",
    "The small pup gnawed a hole in the sock.", "The fish twisted and turned on the bent hook.",
    "Press the pants and sew a button on the vest.", "The swan dive was far short of perfect.",
    "The beauty of the view stunned the young boy.", "Two blue fish swam in the tank.",
    "Her purse was full of useless trash.", "The colt reared and threw the tall rider.",
    "It snowed, rained, and hailed the same morning.", "Read verse out loud for pleasure.",
    "Hoist the load to your left shoulder.", "Take the winding path to reach the lake.",
    "Note closely the size of the gas tank.", "Wipe the grease off his dirty face.",
    "Mend the coat before you go out.", "The wrist was badly strained and hung limp.",
    "The stray cat gave birth to kittens.", "The young girl gave no clear response.",
    "The meal was cooked before the bell rang.", "What joy there is in living.",
    "A king ruled the state in the early days.", "The ship was torn apart on the sharp reef.",
    "Sickness kept him home the third week.", "The wide road shimmered in the hot sun.",
    "The lazy cow lay in the cool grass.", "Lift the square stone over the fence.",
    "The rope will bind the seven books at once.", "Hop over the fence and plunge in.",
    "The friendly gang left the drug store.", "Mesh wire keeps chicks inside.",
    "The frosty air passed through the coat.", "The crooked maze failed to fool the mouse.",
    "Adding fast leads to wrong sums.", "The show was a flop from the very start.",
    "A saw is a tool used for making boards.", "The wagon moved on well oiled wheels.",
    "March the soldiers past the next hill.", "A cup of sugar makes sweet fudge.",
    "Place a rosebush near the porch steps.", "Both lost their lives in the raging storm.",
]

# Festival voice → (sex, engine). Diphone voices change pitch by their F0 target; HTS by half-tones.
VOICES = {
    "kal_diphone": ("M", "diphone"),
    "ked_diphone": ("M", "diphone"),
    "cmu_us_slt_arctic_hts": ("F", "hts"),
}
# Festival (radio phone set) → TIMIT symbol where they differ.
FESTIVAL_TO_TIMIT = {"brth": "pau", "h#": "h#"}


@dataclass
class Speaker:
    name: str  # TIMIT style: sex letter, initials, digit
    split: str  # TRAIN | TEST
    region: int
    voice: str
    f0: float  # diphone voices: mean F0 in Hz; HTS: shift in half-tones
    stretch: float  # duration stretch: >1 is slower


def festival_voices() -> list[str]:
    """Voices this Festival knows, among those the generator can use."""
    exe = shutil.which("festival")
    if exe is None:
        raise EchoesError(
            "Festival is not installed — run `make system-deps` (or apt-get install festival "
            "festvox-kallpc16k) to generate speech"
        )
    out = subprocess.run([exe, "--pipe"], input="(format t \"%l\\n\" (voice.list))\n",
                         capture_output=True, text=True, timeout=60).stdout
    known = set(out.replace("(", " ").replace(")", " ").split())
    voices = [v for v in VOICES if v in known]
    if not voices:
        raise EchoesError(
            "Festival has no English voice the generator knows — apt-get install festvox-kallpc16k "
            f"(usable: {', '.join(VOICES)})"
        )
    return voices


def _names(rng: np.random.Generator, sex: str, taken: set[str]) -> str:
    letters = "ABCDEFGHIJKLMNOPRSTW"
    while True:
        name = sex + "".join(rng.choice(list(letters), 3)) + "0"
        if name not in taken:
            taken.add(name)
            return name


def plan_speakers(voices: list[str], *, regions: int, train_speakers: int, test_speakers: int,
                  dev_speakers: int, seed: int) -> list[Speaker]:
    """Who speaks where: TIMIT's core-test and dev names in TEST, made-up names in TRAIN."""
    if not 1 <= regions <= 8:
        raise EchoesError(f"make-speech: regions must be between 1 and 8, got {regions}")
    if not 0 <= test_speakers <= 3:
        raise EchoesError(f"make-speech: test speakers per region must be 0-3 (TIMIT's core set), got {test_speakers}")
    if train_speakers < 1 or dev_speakers < 0 or dev_speakers * regions > len(DEV_SET):
        raise EchoesError("make-speech: need >= 1 train speaker per region and at most 50 dev speakers in all")
    rng = np.random.default_rng(seed)
    by_sex = {s: [v for v in voices if VOICES[v][0] == s] or voices for s in "MF"}
    taken = set(DEV_SET) | {n for names in CORE_TEST.values() for n in names}
    dev_pool = iter(DEV_SET)
    speakers = []

    def add(name: str, split: str, region: int) -> None:
        voice = str(rng.choice(by_sex[name[0]]))
        if VOICES[voice][1] == "hts":
            f0 = float(rng.uniform(-3.0, 3.0))
        elif VOICES[voice][0] == name[0]:
            f0 = float(rng.uniform(85, 135))
        else:  # no voice of this sex installed: a higher-pitched male voice stands in
            f0 = float(rng.uniform(170, 220))
        speakers.append(Speaker(name, split, region, voice, f0, float(rng.uniform(0.85, 1.25))))

    for region in range(1, regions + 1):
        for i in range(train_speakers):
            add(_names(rng, "MF"[i % 2], taken), "TRAIN", region)
        for name in CORE_TEST[region][:test_speakers]:
            add(name, "TEST", region)
        for _ in range(dev_speakers):
            add(next(dev_pool), "TEST", region)
    return speakers


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SCHEME_HELPERS = """
(define (echoes_say voice engine f0 stretch text out)
  (eval (list voice))
  (if (string-equal engine "hts")
      (set! hts_engine_params
            (append hts_engine_params (list (list "-r" (/ 1.0 stretch)) (list "-fm" f0))))
      (begin
        (set! int_lr_params (list (list 'target_f0_mean f0) (list 'target_f0_std (/ f0 7))
                                  (list 'model_f0_mean 170) (list 'model_f0_std 34)))
        (Parameter.set 'Duration_Stretch stretch)))
  (set! utt (eval (list 'Utterance 'Text text)))
  (utt.synth utt)
  (utt.wave.resample utt 16000)
  (utt.save.wave utt (string-append out ".wav") 'riff)
  (set! fd (fopen (string-append out ".lab") "w"))
  (mapcar (lambda (s) (format fd "S %s %f\\n" (item.name s) (item.feat s "end")))
          (utt.relation.items utt 'Segment))
  (mapcar (lambda (w)
            (let ((segs (item.relation w 'SylStructure)))
              (if (and segs (item.daughter1 segs))
                  (format fd "W %s %f %f\\n" (item.name w)
                          (item.feat (item.daughter1 (item.daughter1 segs)) "segment_start")
                          (item.feat (item.daughtern (item.daughtern segs)) "end")))))
          (utt.relation.items utt 'Word))
  (fclose fd))
"""


def _synthesize(jobs: list[tuple[Speaker, str, Path]]) -> None:
    """Run one Festival process over many utterances; each writes OUT.wav and OUT.lab."""
    lines = [_SCHEME_HELPERS]
    for spk, text, out in jobs:
        engine = VOICES[spk.voice][1]
        lines.append(f"(echoes_say 'voice_{spk.voice} \"{engine}\" {spk.f0:.3f} {spk.stretch:.3f} "
                     f"{_scheme_string(text)} {_scheme_string(str(out))})")
    proc = subprocess.run(["festival", "--pipe"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=600)
    missing = [out for _, _, out in jobs if not out.with_suffix(".lab").exists()]
    if missing:
        raise EchoesError(f"Festival failed on {missing[0].name}: {proc.stderr.strip()[-300:]} — "
                          "check the Festival installation (`festival --version`)")


def _timit_files(lab: Path, text: str, num_samples: int) -> tuple[str, str, str]:
    """.PHN, .WRD and .TXT contents from Festival's segment and word times."""
    segs, words = [], []
    for line in lab.read_text().splitlines():
        kind, name, *times = line.split()
        (segs if kind == "S" else words).append((name, [float(t) for t in times]))

    def sample(t: float) -> int:
        return min(int(round(t * SAMPLE_RATE)), num_samples)

    phn, start = [], 0
    for i, (name, (end,)) in enumerate(segs):
        symbol = FESTIVAL_TO_TIMIT.get(name, name)
        if symbol == "pau" and i in (0, len(segs) - 1):
            symbol = "h#"
        if symbol not in TIMIT_61:
            raise EchoesError(f"Festival produced phone '{name}' with no TIMIT symbol — add it to FESTIVAL_TO_TIMIT")
        stop = num_samples if i == len(segs) - 1 else sample(end)
        if stop > start:
            phn.append(f"{start} {stop} {symbol}")
            start = stop
    wrd = [f"{sample(a)} {sample(b)} {w.lower()}" for w, (a, b) in words]
    return "\n".join(phn) + "\n", "\n".join(wrd) + "\n", f"0 {num_samples} {text}\n"


def make_speech(root: str | Path, *, regions: int = 4, train_speakers: int = 4, test_speakers: int = 3,
                dev_speakers: int = 2, sentences: int = 8, seed: int = 0, batch: int = 12,
                workers: int | None = None) -> dict:
    """Write the corpus under ``root``; returns counts. Existing utterances are kept (resumable)."""
    root = Path(root)
    voices = festival_voices()
    if not 1 <= sentences <= len(SENTENCES):
        raise EchoesError(f"make-speech: sentences per speaker must be 1-{len(SENTENCES)}, got {sentences}")
    speakers = plan_speakers(voices, regions=regions, train_speakers=train_speakers,
                             test_speakers=test_speakers, dev_speakers=dev_speakers, seed=seed)
    rng = np.random.default_rng(seed + 1)
    todo = []  # (speaker, utterance id, text, folder)
    for spk in speakers:
        folder = root / spk.split / f"DR{spk.region}" / spk.name
        picks = rng.choice(len(SENTENCES), sentences, replace=False)
        utts = [(f"SA{i + 1}", t) for i, t in enumerate(SA_SENTENCES)]
        utts += [(f"SX{int(k) + 1}", SENTENCES[int(k)]) for k in picks]
        for uid, text in utts:
            if not (folder / f"{uid}.PHN").exists():
                todo.append((spk, uid, text, folder))
    with tempfile.TemporaryDirectory(prefix="echoes-speech-") as tmp:
        chunks = [todo[i : i + batch] for i in range(0, len(todo), batch)]

        def run(n: int) -> int:
            chunk = chunks[n]
            jobs = [(spk, text, Path(tmp) / f"{n}_{i}") for i, (spk, _, text, _) in enumerate(chunk)]
            _synthesize(jobs)
            for (_, uid, text, folder), (_, _, out) in zip(chunk, jobs, strict=True):
                audio, rate = read_audio(out.with_suffix(".wav"))
                if rate != SAMPLE_RATE:
                    raise EchoesError(f"Festival wrote {rate} Hz audio, expected {SAMPLE_RATE}")
                phn, wrd, txt = _timit_files(out.with_suffix(".lab"), text, len(audio))
                folder.mkdir(parents=True, exist_ok=True)
                write_sphere(folder / f"{uid}.WAV", audio)
                for suffix, content in ((".WRD", wrd), (".TXT", txt), (".PHN", phn)):  # .PHN last: marks done
                    tmp_file = folder / f".{uid}{suffix}.tmp"
                    tmp_file.write_text(content)
                    tmp_file.replace(folder / f"{uid}{suffix}")
            return len(chunk)

        # Festival is single-threaded: one process per core.
        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            for _ in progress(pool.map(run, range(len(chunks))), total=len(chunks), desc="festival",
                              unit="batch"):
                pass
    per_split = {s: sum(1 for p in speakers if p.split == s) for s in ("TRAIN", "TEST")}
    return {"root": str(root), "speakers": per_split, "voices": voices,
            "utterances": len(speakers) * (sentences + 2), "written": len(todo)}
