"""Closed-form readout: ridge regression on ``model.features``, λ chosen automatically.

Works for any SequenceModel whose readout is an ``nn.Linear`` (or an
``AveragedReadout`` of several, one per feature block — ensembles):

1. Stream the features of the training batches once and accumulate, per readout
   block and in float64, ΣxxT, ΣxyT, Σx, Σy and the count (targets one-hot;
   framewise tasks count valid frames only). Memory grows with D², not with N.
2. Centre: the bias is fitted, not regularised. Solve (XcᵀXc + λI) W = XcᵀYc —
   by Cholesky (eigendecomposition as fallback) for a given ``alpha``, or from one
   eigendecomposition for a whole grid of λ. With fewer samples than features the
   dual form K = XcXcᵀ (n × n) is used instead (the features are then cached).
3. Choose λ by exact leave-one-out (the hat-matrix identity e_i / (1 - h_ii), as
   scikit-learn's RidgeCV) or on the validation split: highest accuracy, ties broken
   by the lower squared error. Ensemble members share one λ, chosen for their
   averaged output.
4. Calibrate: the same held-out outputs (leave-one-out or validation) of the chosen λ
   fit a temperature T (the NLL of softmax(outputs / T), minimised over log T); the
   readout is divided by T, so logits, ``predict_proba``, ``test_loss`` and streaming
   scores are calibrated probabilities while predictions stay the same.

Under torchrun (``train.nproc``) each rank harvests its shard of the training rows and the sums
of step 1 are all-reduced, so every rank solves the same system as one process would. The
rows are then never cached: always the primal form, and leave-one-out re-harvests the training
rows on every rank (the primal identity needs no row index, only the shared sums).
"""

from __future__ import annotations

import itertools
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from .. import distributed
from ..config import TrainConfig
from ..data import Dataset, Sequences
from ..errors import EchoesError
from ..metrics import flat_targets
from ..models import SequenceModel
from ..models.base import AveragedReadout
from ..utils import progress
from . import EpochCallback, FitResult, register_learner
from .checkpoint import Checkpoints

# On CUDA a model that says what a sequence costs (``harvest_bytes``) is harvested in batches that
# fill this share of the free device memory (often the whole split at once), instead of batches of
# train.eval_batch_size.
DEVICE_HARVEST_SHARE = 0.5
# λ grid, as multiples of the mean eigenvalue of XcᵀXc (so it follows the scale of the features).
RELATIVE_ALPHAS = tuple(float(a) for a in 10.0 ** np.arange(-8.0, 1.01, 0.5))
# Held-out rows kept for fitting the temperature (a strided subset beyond that: one scalar needs few).
CALIBRATION_ROWS = 20_000
# `auto` model options are scored on all of a small training set, and on a seeded random eighth (at least
# TUNE_MIN_ROWS sequences) of a larger one: then the 8 candidates together cost about one harvest of the
# whole set, and only the chosen one is fitted on all of it.
TUNE_MIN_ROWS = 256
TUNE_SHARE = 8
LOG_TEMPERATURE_BOUNDS = (-12.0, 7.0)  # T in [6e-6, 1100]: ridge outputs live on a one-hot scale
SELECTIONS = ("auto", "loo", "val")


def readout_blocks(readout: nn.Module) -> list[tuple[int, int, nn.Linear]]:
    """(start, stop, linear) for each linear map of the readout over its feature block."""
    if isinstance(readout, nn.Linear):
        return [(0, readout.in_features, readout)]
    if isinstance(readout, AveragedReadout):
        edges = np.cumsum([0, *readout.sizes]).tolist()
        return [(a, b, m) for a, b, m in zip(edges[:-1], edges[1:], readout.members, strict=True)]
    raise EchoesError(f"the ridge learner fits a linear readout, and this model's readout is a "
                      f"{type(readout).__name__} — use learner=gradient")


class _Block:
    """The statistics and the ridge solution of one linear readout over features [start, stop).

    Primal: streamed sums (``add``, then ``centre``). Dual: the rows themselves (``use_rows``).
    """

    def __init__(self, start: int, stop: int, linear: nn.Linear, device: torch.device) -> None:
        self.start, self.stop, self.linear, self.device = start, stop, linear, device
        self.dims, self.n, self.dual = stop - start, 0, False
        self.xtx: torch.Tensor | None = None

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = x[:, self.start:self.stop].double()
        if self.xtx is None:
            f64 = dict(dtype=torch.float64, device=self.device)
            self.xtx, self.xty = torch.zeros(self.dims, self.dims, **f64), torch.zeros(
                self.dims, y.shape[1], **f64)
            self.xsum, self.ysum = torch.zeros(self.dims, **f64), torch.zeros(y.shape[1], **f64)
        self.xtx.addmm_(x.T, x)
        self.xty.addmm_(x.T, y)
        self.xsum += x.sum(0)
        self.ysum += y.sum(0)
        self.n += len(x)

    def all_reduce(self) -> None:
        """Sum the statistics over the ranks, each of which added its own shard of the rows."""
        if self.xtx is None:  # this rank had no rows
            self.add(torch.zeros(0, self.stop, device=self.device),
                     torch.zeros(0, self.linear.out_features, dtype=torch.float64, device=self.device))
        n = torch.tensor(float(self.n), dtype=torch.float64, device=self.device)
        for total in (self.xtx, self.xty, self.xsum, self.ysum, n):
            distributed.all_reduce_sum(total)
        self.n = int(n)

    def centre(self) -> None:
        self.mx, self.my = self.xsum / self.n, self.ysum / self.n
        self.cxx = self.xtx - self.n * torch.outer(self.mx, self.mx)
        self.cxy = self.xty - self.n * torch.outer(self.mx, self.my)
        self.scale = float(torch.diagonal(self.cxx).sum()) / self.dims  # mean eigenvalue

    def use_rows(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Dual form: keep the centred rows (fewer than features), never forming XᵀX."""
        x = x[:, self.start:self.stop].double()
        self.n, self.dual = len(x), True
        self.mx, self.my = x.mean(0), y.mean(0)
        self.xc, self.yc = x - self.mx, y - self.my
        self.scale = float((self.xc * self.xc).sum()) / self.dims

    # -- one λ ------------------------------------------------------------------------

    def solve(self, alpha: float) -> torch.Tensor:
        """W [d, C] for one λ: Cholesky, or the eigendecomposition when that fails."""
        if self.dual:  # W = Xcᵀ (XcXcᵀ + λI)⁻¹ Yc
            return self.xc.T @ _spd_solve(self.xc @ self.xc.T, alpha, self.yc)
        return _spd_solve(self.cxx, alpha, self.cxy)

    # -- a grid of λ from one eigendecomposition ------------------------------------------

    def decompose(self) -> None:
        if self.dual:
            s, u = torch.linalg.eigh(self.xc @ self.xc.T)
            self.s, self.v, self.q = s.clamp(min=0), u, u.T @ self.yc
        else:
            s, v = torch.linalg.eigh(self.cxx)
            self.s, self.v, self.q = s.clamp(min=0), v, v.T @ self.cxy

    def _to_eigenbasis(self, x: torch.Tensor) -> torch.Tensor:
        """Centred rows [m, d] in the eigenbasis [m, r] (dual: through the training rows, never forming
        the [d, n] map XcᵀU)."""
        if self.dual:
            return (x @ self.xc.T) @ self.v
        return x @ self.v

    def coef(self, alpha: float) -> torch.Tensor:
        scaled = self.q / (self.s + alpha)[:, None]
        return self.xc.T @ (self.v @ scaled) if self.dual else self.v @ scaled

    def predict(self, x: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        """[G, m, C] predictions of the model fitted with each λ, for new rows x."""
        z = self._to_eigenbasis(x[:, self.start:self.stop].double() - self.mx)
        return z @ (self.q[None] / (self.s[None, :, None] + alphas[:, None, None])) + self.my  # no [G, m, k] tensor

    def loo(self, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, alphas: torch.Tensor
            ) -> torch.Tensor:
        """[G, m, C] exact leave-one-out predictions for training rows ``idx`` (x, y: those rows)."""
        if self.dual:  # hat matrix 11ᵀ/n + U diag(s/(s+λ)) Uᵀ
            u = self.v[idx]
            shrink = self.s[None, :] / (self.s[None, :] + alphas[:, None])  # [G, n]
            fitted = u @ (shrink[:, :, None] * self.q[None]) + self.my
            hat = 1.0 / self.n + (u * u) @ shrink.T  # [m, G]
        else:  # hat matrix 11ᵀ/n + Xc (C + λI)⁻¹ Xcᵀ
            z = self._to_eigenbasis(x[:, self.start:self.stop].double() - self.mx)
            inv = 1.0 / (self.s[None, :] + alphas[:, None])
            fitted = z @ (inv[:, :, None] * self.q[None]) + self.my
            hat = 1.0 / self.n + (z * z) @ inv.T
        leverage = (1.0 - hat.T).clamp(min=1e-12)[:, :, None]  # [G, m, 1]
        return y - (y - fitted) / leverage

    def scale_output(self, factor: float, rows: slice = slice(None)) -> None:
        """Multiply the written readout's outputs (``rows`` of them) by ``factor`` (a temperature folded
        into the weights)."""
        with torch.no_grad():
            self.linear.weight[rows].mul_(factor)
            self.linear.bias[rows].mul_(factor)

    def write(self, w: torch.Tensor) -> None:
        with torch.no_grad():
            self.linear.weight.copy_(w.T.to(self.linear.weight.dtype))
            self.linear.bias.copy_((self.my - self.mx @ w).to(self.linear.bias.dtype))


def host_slices(seqs: Sequences, batch_size: int, device: torch.device
                ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """:meth:`Sequences.batches` in order, from slices of the host arrays: no gathering copy on the
    host, and each row goes to the device once."""
    for a in range(0, len(seqs), batch_size):
        rows = slice(a, a + batch_size)
        t = int(seqs.lengths[rows].max())
        y = seqs.y[rows, :t] if seqs.framewise else seqs.y[rows]
        with warnings.catch_warnings():  # a read-only memory map: torch only reads it
            warnings.simplefilter("ignore", UserWarning)
            x, lengths, y = (torch.from_numpy(np.ascontiguousarray(v)).to(device, non_blocking=True)
                             for v in (seqs.x[rows, :t], seqs.lengths[rows], y))
        yield x.float(), lengths, y


def _spd_solve(a: torch.Tensor, alpha: float, b: torch.Tensor) -> torch.Tensor:
    """(A + αI)⁻¹ B for symmetric positive semi-definite A; pseudo-inverse when singular."""
    reg = a + alpha * torch.eye(len(a), dtype=a.dtype, device=a.device)
    chol, info = torch.linalg.cholesky_ex(reg)
    if int(info) == 0:
        return torch.cholesky_solve(b, chol)
    s, v = torch.linalg.eigh(reg)
    keep = s > s.abs().max() * len(s) * torch.finfo(s.dtype).eps
    return v[:, keep] @ ((v[:, keep].T @ b) / s[keep, None])


def tuning_rows(n: int, seed: int) -> np.ndarray:
    """Which of n sequences ``auto`` candidates are scored on: all of them up to TUNE_MIN_ROWS, else a
    seeded random 1/TUNE_SHARE of them (at least TUNE_MIN_ROWS), in their order."""
    keep = max(TUNE_MIN_ROWS, -(-n // TUNE_SHARE))
    if keep >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, keep, replace=False))


@register_learner("ridge")
class RidgeLearner:
    """Closed-form ridge regression for linear readouts (reservoirs' default learner).

    ``alpha``: a fixed λ; None chooses it from ``alphas`` (default: a log grid
    relative to the features' scale) by ``select``: ``loo`` (exact leave-one-out on
    train), ``val`` (the validation split), or ``auto`` (loo for one label per
    sequence, val for framewise labels, whose neighbouring frames are too alike for
    leave-one-out). ``batch_size``: sequences per harvest batch (default
    train.eval_batch_size; on CUDA, for reservoirs, as many as fit in half the free device
    memory). ``cache_mb``: features kept in memory for the selection pass; beyond it they
    are recomputed. ``calibrate``: fit a temperature on the held-out outputs that chose λ
    (with a fixed ``alpha`` nothing is held out and T stays 1, unless ``auto`` model options are tuned:
    then the candidates are scored and calibrated by leave-one-out at that λ).
    """

    iterative = False  # one pass, no early stopping: needs no validation split with leave-one-out

    def __init__(self, alpha: float | None = None, alphas: list[float] | None = None,
                 select: str = "auto", batch_size: int | None = None, cache_mb: float = 1024,
                 calibrate: bool = True) -> None:
        if select not in SELECTIONS:
            from ..errors import unknown

            raise unknown("ridge selection", select, SELECTIONS)
        if alpha is not None and alpha < 0:
            raise EchoesError(f"learner.alpha must be >= 0, got {alpha}")
        if alphas is not None and (not alphas or min(alphas) <= 0):
            raise EchoesError(f"learner.alphas must be a non-empty list of positive numbers, got {alphas}")
        self.alpha, self.alphas, self.select = alpha, alphas, select
        self.batch_size, self.cache_mb, self.calibrate = batch_size, cache_mb, calibrate

    def _batches(self, model: SequenceModel, seqs: Sequences, batch_size: int,
                 device: torch.device, what: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(features [m, D], labels [m]) of the rows that count, batch by batch."""
        if device.type == "cuda" and self.batch_size is None and hasattr(model, "harvest_bytes"):
            per_sequence = model.harvest_bytes(int(seqs.lengths.max()))
            batch_size = max(1, int(DEVICE_HARVEST_SHARE * torch.cuda.mem_get_info(device)[0]) // per_sequence)
        total = -(-len(seqs) // batch_size)
        if np.any(seqs.lengths[1:] > seqs.lengths[:-1]):  # batches of like lengths: less padding to step through
            seqs = seqs.subset(np.argsort(-seqs.lengths, kind="stable"))
        batches = host_slices(seqs, batch_size, device)
        for x, lengths, y in progress(batches, total=total, desc=f"ridge: {what}", unit="batch"):
            yield flat_targets(model.features(x, lengths), y)

    @torch.no_grad()
    def fit(self, model: SequenceModel, data: Dataset, train: TrainConfig, *, device: torch.device,
            seed: int, on_epoch: EpochCallback | None = None,
            checkpoint: Checkpoints | None = None) -> FitResult:  # noqa: ARG002 — one pass: nothing to resume
        model.to(device).eval()
        self.heads = data.heads
        tunable = getattr(model, "tunable", None)
        if tunable:
            metrics, extra = self._tune(model, tunable, data, train, device, seed)
        else:
            metrics, extra, *_ = self._fit_readout(model, data, train, device)
        if on_epoch is not None:
            on_epoch(1, metrics)
        return FitResult(history=[metrics], best_epoch=1, extra=extra)

    def _tune(self, model: SequenceModel, tunable: dict[str, tuple[float, ...]], data: Dataset,
              train: TrainConfig, device: torch.device, seed: int) -> tuple[dict[str, float], dict[str, object]]:
        """A model's ``auto`` settings, one at a time (coordinate search, in ``tunable``'s order, from the
        best so far): each candidate harvested once on :func:`tuning_rows` and scored as λ is — accuracy
        of the best λ, ties by squared error. The best candidate's reservoir (``model.retune``) is kept,
        with its readout, refitted on all the data when the candidates saw only part of it (the rows they
        saw are not harvested again)."""
        t0 = time.perf_counter()
        rows, val_rows = tuning_rows(len(data.train), seed), tuning_rows(len(data.val), seed)
        subset = replace(data, train=data.train.subset(rows) if len(rows) < len(data.train) else data.train,
                         val=data.val.subset(val_rows) if len(val_rows) < len(data.val) else data.val)
        scores: dict[tuple, tuple[float, float]] = {}
        best: tuple | None = None  # (score, settings, readout state, metrics, extra, harvested features)
        for name, values in tunable.items():
            centre = dict(best[1] if best else model.settings)
            for value in values:
                settings = {**centre, name: value}
                key = tuple(sorted(settings.items()))
                if key in scores:
                    continue
                model.retune(**settings)
                metrics, extra, scores[key], features = self._fit_readout(model, subset, train, device,
                                                                          scored=True)
                if best is None or scores[key] > best[0]:
                    readout = {k: v.clone() for k, v in model.readout.state_dict().items()}
                    best = (scores[key], settings, readout, metrics, extra, features)
        _, settings, readout, metrics, extra, features = best
        model.retune(**settings)
        tune_seconds = time.perf_counter() - t0
        if len(rows) < len(data.train) or len(val_rows) < len(data.val):
            rest = np.setdiff1d(np.arange(len(data.train)), rows) if features is not None else None
            rest_data = data if rest is None else replace(data, train=data.train.subset(rest))
            metrics, extra, *_ = self._fit_readout(model, rest_data, train, device, scored=True,
                                                   harvested=features or [])
        else:
            model.readout.load_state_dict(readout)
        chosen = {f"esn_{k}": float(v) for k, v in settings.items()}
        tuned = {"tune_candidates": len(scores), "tune_rows": len(subset.train)}
        return {**metrics, **chosen, **tuned, "tune_seconds": tune_seconds}, {**extra, **chosen, **tuned}

    def _fit_readout(self, model: SequenceModel, data: Dataset, train: TrainConfig, device: torch.device,
                     scored: bool = False, harvested: list[tuple[torch.Tensor, torch.Tensor]] | None = None
                     ) -> tuple[dict[str, float], dict[str, object], tuple[float, float], list | None]:
        """Harvest, solve, write the readout: (metrics, extra, score — the selection's (accuracy,
        -squared error); (0, 0) with a fixed λ unless ``scored``: then it is scored at that λ alone,
        as tuning ``auto`` options needs —, and the (features, labels) batches of the training rows when
        they were kept in memory, else None). ``harvested``: such batches of more training rows, already
        computed by this model, fitted with ``data.train``'s."""
        blocks = [_Block(a, b, lin, device) for a, b, lin in readout_blocks(model.readout)]
        bs = self.batch_size or train.eval_batch_size
        t0 = time.perf_counter()
        num_classes = int(np.prod(self.heads.sizes))  # label codes (several heads: every combination)
        labels = data.train.valid_labels()  # checked on the host (all of them, on every rank): the harvest never waits
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise EchoesError(f"labels must lie in 0..{num_classes - 1}, "
                              f"got {int(labels.min())}..{int(labels.max())}")
        train_rows = data.train
        if distributed.active():
            train_rows = train_rows.subset(distributed.shard(np.arange(len(train_rows))))
        cache = self._accumulate(model, train_rows, blocks, bs, device, harvested or [])
        if distributed.active():
            for block in blocks:
                block.all_reduce()
        harvest_seconds = time.perf_counter() - t0
        if cache is not None:  # every row in memory: the dual form where rows < features
            y_all = self._onehot(torch.cat([y for _, y in cache]), blocks)
            dual = [len(y_all) < block.dims for block in blocks]
            x_all = torch.cat([f for f, _ in cache]) if any(dual) else None
            for block, use_rows in zip(blocks, dual, strict=True):
                if use_rows:
                    block.use_rows(x_all, y_all)
                else:
                    for f, y in cache:
                        block.add(f, self._onehot(y, blocks))
        n = blocks[0].n
        if n < 2:
            raise EchoesError(f"ridge needs at least 2 training rows, got {n}")
        for block in blocks:
            if not block.dual:
                block.centre()
        extra: dict[str, float | str | bool] = {"ridge_dual": all(b.dual for b in blocks)}
        metrics: dict[str, float] = {}
        score = (0.0, 0.0)
        if self.alpha is not None and not scored:
            alpha = float(self.alpha)
            for block in blocks:
                block.write(block.solve(alpha))
        else:
            select = self.select if self.select != "auto" else ("val" if data.framewise else "loo")
            if select == "val" and not len(data.val):
                raise EchoesError("ridge selects λ on the validation split here (framewise labels or "
                                  "learner.select=val) and it is empty — set data.val_fraction > 0")
            if select == "loo":
                source = cache if cache is not None else self._batches(
                    model, data.train, bs, device, "leave-one-out")
                held_out = n
            else:
                source = self._batches(model, data.val, bs, device, "validation")
                held_out = len(data.val.valid_labels())
            alpha, score, outputs, labels = self._choose(blocks, source, loo=select == "loo", total=held_out)
            extra["ridge_select"] = select
            metrics[f"{select}_accuracy"] = score[0]
            if self.calibrate and len(labels):
                self._calibrate(blocks, outputs, labels, metrics, extra)
        extra["ridge_alpha"] = alpha
        metrics.update(ridge_alpha=alpha, harvest_seconds=harvest_seconds,
                       solve_seconds=time.perf_counter() - t0 - harvest_seconds, train_rows=float(n),
                       features=float(sum(b.stop - b.start for b in blocks)))
        return metrics, extra, score, cache

    def _onehot(self, y: torch.Tensor, blocks: list[_Block]) -> torch.Tensor:  # noqa: ARG002
        """Targets: one-hot, or every label head's one-hot side by side (all heads in one solve)."""
        return self.heads.one_hot(y)

    def _calibrate(self, blocks: list[_Block], outputs: torch.Tensor, labels: torch.Tensor,
                   metrics: dict[str, float], extra: dict[str, object]) -> None:
        """One temperature per label head, fitted on the held-out outputs and folded into its readout rows."""
        edges = np.cumsum([0, *self.heads.sizes])
        per_head = self.heads.decode(labels) if self.heads.multi else labels[:, None]
        for h, name in enumerate(self.heads.names):
            a, b = int(edges[h]), int(edges[h + 1])
            temperature = fit_temperature(outputs[:, a:b], per_head[:, h])
            for block in blocks:
                block.scale_output(1.0 / temperature, rows=slice(a, b))
            key = "ridge_temperature" if not self.heads.multi else f"ridge_temperature_{name}"
            extra[key] = metrics[key] = temperature

    def _accumulate(self, model: SequenceModel, seqs: Sequences, blocks: list[_Block], batch_size: int,
                    device: torch.device, harvested: list[tuple[torch.Tensor, torch.Tensor]]
                    ) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """One pass over the training rows (after the ``harvested`` batches): kept in memory while they fit
        in ``cache_mb`` (returned), else streamed into the blocks' sums (None returned)."""
        # Under torchrun the sums are what the ranks share: stream into them from the start.
        cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None if distributed.active() else []
        cached_bytes = 0
        for feats, y in itertools.chain(harvested, self._batches(model, seqs, batch_size, device, "harvest")):
            if cache is not None:
                cache.append((feats, y))
                cached_bytes += feats.numel() * feats.element_size()
                if cached_bytes <= self.cache_mb * 2**20:
                    continue
                batches, cache = cache, None  # too big to keep: stream from here on
            else:
                batches = [(feats, y)]
            for f, yy in batches:
                onehot = self._onehot(yy, blocks)
                for block in blocks:
                    block.add(f, onehot)
        return cache

    def _choose(self, blocks: list[_Block], source: Iterable[tuple[torch.Tensor, torch.Tensor]],
                loo: bool, total: int) -> tuple[float, tuple[float, float], torch.Tensor, torch.Tensor]:
        """(λ, its (accuracy, -squared error), its held-out outputs [m, C] and labels [m] of at most CALIBRATION_ROWS of
        the ``total`` rows): fit every block for the whole grid, score the averaged output on
        ``source`` (leave-one-out on the training rows, or plain predictions), write the best."""
        device = blocks[0].device
        scale = float(np.mean([b.scale for b in blocks])) or 1.0
        grid = ([self.alpha] if self.alpha is not None else list(self.alphas) if self.alphas is not None
                else [a * scale for a in RELATIVE_ALPHAS])
        alphas = torch.tensor(grid, dtype=torch.float64, device=device)
        for block in blocks:
            block.decompose()
        correct = torch.zeros(len(grid), dtype=torch.float64, device=device)
        sse = torch.zeros_like(correct)
        stride = max(1, -(-total // CALIBRATION_ROWS))
        kept: list[tuple[torch.Tensor, torch.Tensor]] = []
        offset = 0
        for feats, y in source:
            onehot = self._onehot(y, blocks)
            idx = torch.arange(offset, offset + len(y), device=device)
            offset += len(y)
            preds = torch.stack([b.loo(feats, onehot, idx, alphas) if loo else b.predict(feats, alphas)
                                 for b in blocks]).mean(0)  # [G, m, C]: the averaged readout
            correct += (self.heads.predicted(preds) == y).sum(1)  # several heads: all of them right
            sse += ((preds - onehot) ** 2).sum((1, 2))
            keep = (idx % stride == 0).nonzero().squeeze(1)
            kept.append((preds[:, keep].float().cpu(), y[keep].cpu()))
        best = max(range(len(grid)), key=lambda g: (float(correct[g]), -float(sse[g])))
        for block in blocks:
            block.write(block.coef(grid[best]))
        outputs = torch.cat([p[best] for p, _ in kept]) if kept else torch.zeros(0, 0)
        labels = torch.cat([y for _, y in kept]) if kept else torch.zeros(0, dtype=torch.long)
        return grid[best], (float(correct[best]) / max(offset, 1), -float(sse[best])), outputs, labels


def fit_temperature(outputs: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimising the mean NLL of softmax(outputs / T) at ``labels`` (convex in 1/T, so
    unimodal in log T: a golden-section search on log T finds it — in ~25 evaluations, and without
    importing scipy.optimize, which alone takes longer than a small ridge fit)."""
    z, y = outputs.double(), labels.long()

    def nll(log_t: float) -> float:
        return float(nn.functional.cross_entropy(z / float(np.exp(log_t)), y))

    lo, hi = LOG_TEMPERATURE_BOUNDS
    golden = (np.sqrt(5.0) - 1) / 2
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = nll(a), nll(b)
    while hi - lo > 1e-4:
        if fa <= fb:  # the minimum lies in [lo, b]
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = nll(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = nll(b)
    return float(np.exp((lo + hi) / 2))
