"""NIST SPHERE audio, the format of TIMIT's .WAV files: written here, read with soundfile."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import EchoesError
from ...utils import atomic_write, require

HEADER_BYTES = 1024


def write_sphere(path: str | Path, samples: np.ndarray, sample_rate: int = 16000) -> None:
    """Write 16-bit mono PCM as NIST SPHERE (little-endian, 1024-byte header, like TIMIT).

    ``samples`` are int16, or floats in [-1, 1]. Written to a temporary name and renamed.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise EchoesError(f"write_sphere: expected mono samples (N,), got shape {samples.shape}")
    if samples.dtype.kind == "f":
        samples = np.round(np.clip(samples, -1.0, 1.0) * 32767)
    pcm = samples.astype("<i2")
    fields = [
        "database_id -s5 TIMIT",
        f"sample_count -i {len(pcm)}",
        f"sample_rate -i {int(sample_rate)}",
        "channel_count -i 1",
        "sample_byte_format -s2 01",
        "sample_n_bytes -i 2",
        "sample_sig_bits -i 16",
        "sample_coding -s3 pcm",
        f"sample_min -i {int(pcm.min(initial=0))}",
        f"sample_max -i {int(pcm.max(initial=0))}",
        "end_head",
    ]
    header = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\n").encode("ascii")
    header = header.ljust(HEADER_BYTES, b" ")
    atomic_write(path, header + pcm.tobytes())


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and the sample rate of a SPHERE (or any libsndfile) file."""
    sf = require("soundfile", "speech")

    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise EchoesError(
            f"cannot read audio {path}: {e} — it must be NIST SPHERE or WAV PCM "
            "(shorten-compressed SPHERE must be decompressed first, e.g. with sph2pipe)"
        ) from None
    if data.shape[0] == 0:
        raise EchoesError(f"audio file {path} has no samples — replace or remove it")
    return data.mean(axis=1), int(rate)
