"""A fitted model you can use: predict on raw arrays, save, load, score.

:class:`Model` bundles what a prediction needs — the trained module, its config, the class
names, the training standardisation and the input size — so that raw inputs go in and class
names come out. A saved model is a folder of two files that execute nothing on load:

``echoes-model.json``  config, class names, input size, standardisation, echoes version, git commit
``weights.pt``         the state dict (tensors only; read with ``torch.load(weights_only=True)``)
"""

from __future__ import annotations

import json
import pickle  # only for its error type: torch.load(weights_only=True) raises it on foreign files
import re
from collections.abc import Iterable, Iterator
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .config import ExperimentConfig, TrackingConfig, build_config
from .data import Dataset
from .data.heads import Heads, softmax
from .data.sequences import PAD_LABEL, Sequences, pad_sequences, valid_mask
from .errors import EchoesError
from .models import MODELS, SequenceModel, create_model
from .utils import atomic_write, git_commit

META_FILE = "echoes-model.json"
WEIGHTS_FILE = "weights.pt"
FORMAT_VERSION = 1
RUN_ID = re.compile(r"^[0-9a-f]{32}$")

ArrayInput = np.ndarray | SequenceABC[np.ndarray] | Sequences


@dataclass
class Model:
    """A trained sequence classifier with the scikit-learn surface: ``predict``, ``predict_proba``,
    ``score`` — on a list of (T_i, F) arrays, or (N, T, F) with optional ``lengths``."""

    module: SequenceModel
    config: ExperimentConfig
    class_names: list[str]
    feature_mean: np.ndarray | None = None  # training standardisation; None: inputs used as given
    feature_std: np.ndarray | None = None
    git_commit: str | None = None
    echoes_version: str = __version__
    label_heads: Heads | None = None  # several label heads (verb + noun); None: one, over class_names

    @classmethod
    def from_training(cls, module: SequenceModel, cfg: ExperimentConfig, ds: Dataset) -> Model:
        mean, std = ds.info.get("feature_mean"), ds.info.get("feature_std")
        return cls(module.eval(), cfg, list(ds.class_names),
                   None if mean is None else np.asarray(mean, np.float64),
                   None if std is None else np.asarray(std, np.float64), git_commit(), label_heads=ds.label_heads)

    # --- what it is -----------------------------------------------------------------------------

    @property
    def input_size(self) -> int:
        return int(self.module.input_size)

    @property
    def framewise(self) -> bool:
        return bool(self.module.framewise)

    @property
    def classes_(self) -> np.ndarray:  # scikit-learn's name
        return np.array(self.class_names)

    @property
    def heads(self) -> Heads:
        return self.label_heads or Heads.single(self.class_names)

    def __repr__(self) -> str:
        heads = self.heads
        classes = (" + ".join(f"{h} {n}" for h, n in zip(heads.names, heads.sizes, strict=True)) if heads.multi
                   else str(len(self.class_names)))
        return (f"Model({self.config.model.name!r}, {self.input_size} features → {classes} classes"
                f"{', framewise' if self.framewise else ''}, trained on {self.config.data.source!r})")

    # --- predicting -----------------------------------------------------------------------------

    def prepare(self, X: ArrayInput, lengths: np.ndarray | None = None, y: Any = None) -> Sequences:
        """Raw inputs as the model saw them in training: padded :class:`Sequences`, standardised with the
        training statistics; labels (class names, or their indices) mapped to class indices.

        ``X`` may also be raw ``Sequences`` whose labels already index this model's classes."""
        if isinstance(X, Sequences):
            seqs = X
        else:
            x, lens = as_padded(X, lengths)
            labels = np.zeros(len(lens), np.int64) if y is None else self.encode(y, lens)
            seqs = Sequences(x, lens, labels)
        if seqs.num_features != self.input_size:
            raise EchoesError(f"inputs have {seqs.num_features} features; this model was trained on "
                              f"{self.input_size} — give (T, {self.input_size}) sequences")
        if self.feature_mean is None:
            return seqs
        x = ((np.asarray(seqs.x, np.float32) - self.feature_mean) / self.feature_std).astype(np.float32)
        x[~valid_mask(seqs.lengths, x.shape[1])] = 0.0
        return Sequences(x, seqs.lengths, seqs.y)

    def encode(self, y: Any, lengths: np.ndarray) -> np.ndarray:
        """Labels (class names, or their indices) → class indices; framewise labels padded with -1."""
        if self.heads.multi:  # one row of per-head labels per sequence
            rows = np.asarray(y, dtype=object)
            if rows.ndim != 2 or rows.shape[1] != len(self.heads.names):
                raise EchoesError(f"labels of this model's {len(self.heads.names)} heads "
                                  f"({', '.join(self.heads.names)}) need shape (N, {len(self.heads.names)})")
            return self.heads.encode(np.array([[_class_index(v, c, f"{h} ") for v, h, c in
                                                zip(row, self.heads.names, self.heads.classes, strict=True)]
                                               for row in rows], np.int64))

        def one(v: Any) -> int:
            return _class_index(v, self.class_names)

        if not self.framewise:
            return np.array([one(v) for v in np.asarray(y).ravel()], np.int64)
        out = np.full((len(lengths), int(lengths.max())), PAD_LABEL, np.int64)
        for i, row in enumerate(y):
            out[i, : lengths[i]] = [one(v) for v in np.asarray(row)[: lengths[i]]]
        return out

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters(), torch.empty(0)).device

    @torch.no_grad()
    def logits(self, seqs: Sequences, batch_size: int = 256) -> np.ndarray | list[np.ndarray]:
        """Logits of prepared sequences: [N, C], or a list of [T_i, C] for framewise models."""
        self.module.eval()
        out: list[np.ndarray] = []
        for x, lens, _ in seqs.batches(batch_size, device=self.device):
            z = self.module(x, lens).float().cpu().numpy()
            if self.framewise:
                out.extend(z[i, : int(n)] for i, n in enumerate(lens.cpu()))
            else:
                out.append(z)
        if self.framewise:
            return out
        return np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)

    def decision_function(self, X: ArrayInput, lengths: np.ndarray | None = None) -> np.ndarray | list[np.ndarray]:
        """Logits: [N, C], or a list of [T_i, C] for framewise models."""
        return self.logits(self.prepare(X, lengths))

    def predict_proba(self, X: ArrayInput, lengths: np.ndarray | None = None
                      ) -> np.ndarray | list[np.ndarray] | dict[str, np.ndarray]:
        """Class probabilities (softmax of the logits): [N, C], or a list of [T_i, C] when framewise;
        with several label heads, ``{head: [N, C_head]}``."""
        logits = self.decision_function(X, lengths)
        if self.heads.multi:
            return {h: softmax(z) for h, z in zip(self.heads.names, self.heads.split(logits), strict=True)}
        return [softmax(z) for z in logits] if self.framewise else softmax(logits)

    def predict(self, X: ArrayInput, lengths: np.ndarray | None = None) -> np.ndarray | list[np.ndarray]:
        """Class names: [N], or a list of [T_i] when framewise; with several label heads, [N, heads]."""
        logits = self.decision_function(X, lengths)
        if self.heads.multi:
            return np.stack([np.array(c)[z.argmax(1)] for c, z in zip(self.heads.classes,
                                                                        self.heads.split(logits), strict=True)], 1)
        names = self.classes_
        return [names[z.argmax(1)] for z in logits] if self.framewise else names[logits.argmax(1)]

    def score(self, X: ArrayInput, y: Any = None, lengths: np.ndarray | None = None) -> float:
        """Accuracy on labelled inputs (frame accuracy for framewise models); ``y`` may be left out
        when ``X`` is labelled ``Sequences``."""
        seqs = self.prepare(X, lengths, y)
        logits = self.logits(seqs)
        if self.framewise:
            z = np.concatenate([lg.argmax(1) for lg in logits])
            truth = np.concatenate([seqs.y[i, : len(lg)] for i, lg in enumerate(logits)])
            keep = truth != PAD_LABEL
            return float((z[keep] == truth[keep]).mean())
        return float((self.heads.predicted(logits) == seqs.y).mean())  # several heads: all of them right

    # --- streaming -----------------------------------------------------------------------------

    @property
    def window(self) -> int | None:
        """Steps a sliding-window model re-reads: the frames it was trained on (``data.frames``); None: 16."""
        frames = self.config.data.options().get("frames")
        return None if frames is None else int(frames)

    @torch.no_grad()
    def stream(self, steps: Iterable[np.ndarray], *, window: int | None = None, stride: int = 1,
               sliding: bool = False) -> Iterator[np.ndarray]:
        """Logits [C] after every step of one live sequence of raw (F,) vectors, standardised as in training.

        Recurrent models carry their state (constant cost per step); the others re-read the last ``window``
        steps every ``stride`` steps. ``sliding`` re-reads a window for every model (e.g. a sequence
        classifier over a long video, asked about its last ``window`` steps rather than everything since
        the start)."""
        module, device = self.module.eval(), self.device
        # SequenceModel's own methods are the sliding window, whatever the model's family does
        init, step = (SequenceModel.init_state, SequenceModel.step) if sliding else (type(module).init_state,
                                                                                        type(module).step)
        state = init(module, 1, window or self.window, stride)
        for x in steps:
            x = np.asarray(x, np.float32).reshape(-1)
            if x.shape[0] != self.input_size:
                raise EchoesError(f"a step has {x.shape[0]} values; this model takes {self.input_size} per step")
            if self.feature_mean is not None:
                x = ((x - self.feature_mean) / self.feature_std).astype(np.float32)
            logits, state = step(module, torch.from_numpy(x[None]).to(device), state)
            yield logits[0].float().cpu().numpy()

    # --- saving and loading ---------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the model to folder ``path`` (created; existing files replaced)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        state: dict[str, Any] = {"module": {k: v.detach().cpu() for k, v in self.module.state_dict().items()}}
        if self.feature_mean is not None:
            state["feature_mean"] = torch.from_numpy(self.feature_mean)
            state["feature_std"] = torch.from_numpy(self.feature_std)
        tmp = folder / f".{WEIGHTS_FILE}.tmp"
        torch.save(state, tmp)
        tmp.replace(folder / WEIGHTS_FILE)
        meta = {
            "format": FORMAT_VERSION,
            "echoes_version": self.echoes_version,
            "git_commit": self.git_commit,
            "model": self.config.model.name,
            "input_size": self.input_size,
            "framewise": self.framewise,
            "class_names": self.class_names,
            **({"heads": self.heads.to_json()} if self.heads.multi else {}),
            "config": self.config.model_dump(mode="json"),
        }
        atomic_write(folder / META_FILE, json.dumps(meta, indent=2))
        return folder

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """Read a folder written by :meth:`save`."""
        folder = Path(path)
        meta_path = folder / META_FILE
        if not meta_path.is_file():
            raise EchoesError(f"'{path}' is not a saved echoes model (no {META_FILE}) — give the folder "
                              "that Model.save wrote, a run id, or runs:/RUN_ID")
        try:
            meta = json.loads(meta_path.read_text())
            state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
            raise EchoesError(f"saved model '{path}' is damaged ({type(e).__name__}) — save or log it again") from None
        if meta.get("format") != FORMAT_VERSION:
            raise EchoesError(f"saved model '{path}' has format {meta.get('format')}; this echoes reads "
                              f"format {FORMAT_VERSION} — load it with echoes {meta.get('echoes_version')}")
        cfg = build_config(meta["config"])
        heads = Heads.of(meta["heads"]) if meta.get("heads") else None
        module = build_model(cfg, meta["input_size"], len(meta["class_names"]), meta["framewise"],
                             heads.sizes if heads else None)
        try:
            module.load_state_dict(state["module"])
        except (RuntimeError, KeyError) as e:
            raise EchoesError(f"saved model '{path}': weights do not fit model "
                              f"'{cfg.model.name}' ({str(e).splitlines()[0]}) — save it again") from None
        mean, std = state.get("feature_mean"), state.get("feature_std")
        return cls(module.eval(), cfg, list(meta["class_names"]),
                   None if mean is None else mean.numpy(), None if std is None else std.numpy(),
                   meta.get("git_commit"), meta.get("echoes_version", "?"), heads)


def build_model(cfg: ExperimentConfig, input_size: int, num_classes: int, framewise: bool,
                heads: tuple[int, ...] | None = None) -> SequenceModel:
    """The configured architecture, untrained; seeded builders (reservoirs) follow the run seed.
    ``heads``: classes per label head, when there are several."""
    options = cfg.model.options()
    if "seed" not in options and "seed" in MODELS.entry(cfg.model.name).options.model_fields:
        options["seed"] = cfg.seed
    return create_model(cfg.model.name, input_size=input_size, num_classes=num_classes, framewise=framewise,
                        heads=heads, **options)


def load_model(ref: str | Path, *, tracking_uri: str | None = None) -> Model:
    """A saved model from a folder, an MLflow run id, or ``runs:/RUN_ID`` (the run's logged model)."""
    text = str(ref)
    if Path(text).is_dir():
        return Model.load(_model_folder(Path(text)))
    run_id = text.removeprefix("runs:/").split("/")[0] if text.startswith("runs:/") else text
    if not RUN_ID.match(run_id):
        raise EchoesError(f"model '{ref}' not found — give a saved model folder, a run id or runs:/RUN_ID")
    from .tracking import MODEL_ARTIFACT, ensure_store, store_uri

    uri = tracking_uri or store_uri(TrackingConfig())
    ensure_store(uri)
    import mlflow.artifacts

    try:
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=MODEL_ARTIFACT, tracking_uri=uri)
    except Exception as e:  # no such run, or the run logged no model
        raise EchoesError(f"run {run_id} has no logged model in {uri} ({str(e).splitlines()[0][:120]}) — "
                          "check the run id and tracking.uri (runs log models unless tracking.log_weights=false)"
                          ) from None
    return Model.load(_model_folder(Path(local)))


def _model_folder(folder: Path) -> Path:
    """The echoes folder inside an MLflow model folder, or the folder itself."""
    if (folder / META_FILE).is_file():
        return folder
    found = sorted(folder.glob(f"artifacts/*/{META_FILE}"))
    return found[0].parent if found else folder


def as_padded(X: ArrayInput, lengths: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, T, F) float32 zero-padded + lengths from a list of (T_i, F) arrays or an (N, T, F) array."""
    if isinstance(X, np.ndarray) and X.dtype != object:
        if X.ndim == 2:  # one univariate step per column: (N, T) → (N, T, 1)
            X = X[:, :, None]
        if X.ndim != 3:
            raise EchoesError(f"inputs have shape {X.shape} — give (N, T, F) or a list of (T_i, F) arrays")
        x = np.asarray(X, np.float32)
        lens = np.full(len(x), x.shape[1], np.int64) if lengths is None else np.asarray(lengths, np.int64)
        if lens.shape != (len(x),) or (len(lens) and (lens.min() < 1 or lens.max() > x.shape[1])):
            raise EchoesError(f"lengths must be {len(x)} values between 1 and {x.shape[1]}")
        x = x.copy()
        x[~valid_mask(lens, x.shape[1])] = 0.0
    else:
        arrays = [np.asarray(a, np.float32) for a in X]
        arrays = [a[:, None] if a.ndim == 1 else a for a in arrays]
        if not arrays or any(a.ndim != 2 or len(a) == 0 for a in arrays):
            raise EchoesError("inputs must be non-empty (T_i, F) arrays — one per sequence")
        if len({a.shape[1] for a in arrays}) > 1:
            raise EchoesError("sequences have different feature counts — every (T_i, F) needs the same F")
        x, lens = pad_sequences(arrays)
    if not np.isfinite(x).all():
        raise EchoesError("inputs contain NaN or inf values — clean or impute them before predicting")
    return x, lens


def _class_index(v: Any, class_names: SequenceABC[str], what: str = "") -> int:
    """A label given as a class name (or its index, as text) → its index."""
    key = str(v.item() if isinstance(v, np.generic) else v)
    try:
        return list(class_names).index(key)
    except ValueError:
        raise EchoesError(f"{what}label {key!r} is not a class of this model — its {what}classes are "
                          + ", ".join(list(class_names)[:20])) from None

