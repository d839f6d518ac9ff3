"""Reservoir computing: echo state networks (``esn``), deep ESNs (``deep_esn``), ESN ensembles.

A reservoir is a fixed random recurrent layer of leaky-integrator units::

    h[t] = (1 - a) h[t-1] + a f(W_in u[t] + W h[t-1] + b)

``W_in``, ``W`` and ``b`` are drawn once from the seed and kept as buffers; only the
linear readout is trained — in closed form by the ``ridge`` learner (the default),
or by ``gradient`` for comparison. Hyperparameters carry the literature's names
(ReservoirPy's too): ``units``, ``spectral_radius``, ``connectivity``,
``input_scaling``, ``input_connectivity``, ``bias_scaling``, ``leak_rate``.

The harvest advances every sequence of a batch together, one matrix product per
time step, under ``no_grad`` and in float32 by default. The batch is sorted by
length, so at step t only the first k_t columns (the sequences still running) are
updated: padded steps cost nothing and leave a sequence's state unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import Field, PositiveFloat
from torch import nn

from ..errors import EchoesError, unknown
from . import Options, register_model
from .base import AveragedReadout, SequenceModel, reverse_valid


def tanh_(z: torch.Tensor) -> torch.Tensor:
    """tanh in place. On CPU as 2σ(2z) − 1, equal to float32 rounding (2e-7) and 3× faster there: this
    torch's CPU tanh takes 2.2 ns an element, its sigmoid 0.3 (BENCHMARKS.md). CUDA's tanh is fast."""
    return z.tanh_() if z.is_cuda else z.mul_(2).sigmoid_().mul_(2).sub_(1)


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": tanh_,
    "sigmoid": torch.sigmoid_,
    "relu": torch.relu_,
    "identity": lambda z: z,
}

# The spectral radius comes from ARPACK's 8 largest-magnitude eigenvalues (one alone is unreliable on
# random matrices, whose eigenvalues crowd the rim of a disc) from a fixed start vector, so the same W
# always gets the same scale; all eigenvalues (LAPACK) only for tiny W, and up to this size for the
# effective radius of leaky units, which needs the whole spectrum. See BENCHMARKS.md for the timings.
DENSE_EIGEN_MAX_UNITS = 1000
ARPACK_MIN_UNITS = 32
# On CPU a sparse (CSR) W is used at or below this connectivity, from this many units
# up; measured by benchmarks/esn_harvest.py (see BENCHMARKS.md).
SPARSE_MAX_CONNECTIVITY = 0.1
SPARSE_MIN_UNITS = 200
TIME_CHUNK = 64  # steps whose input projection is computed in one product (on CUDA, one graph)
# On CPU a chunk runs only the sequences still running at its start, so shorter chunks drop finished
# ones sooner (BENCHMARKS.md, spoken digits). CUDA keeps whole batches and 64 steps: its graphs are per shape.
CPU_TIME_CHUNK = 16
# On CUDA a chunk of steps is captured as a CUDA graph up to this many state values (units × batch):
# there a step is a few microseconds of work, less than launching its kernels from Python.
GRAPH_MAX_ELEMENTS = 1 << 19
# `auto` options: the values the ridge learner tries (input_scaling: factors of the default 1/√inputs),
# and what `auto` builds before tuning (or when another learner trains the model).
AUTO_GRID = {"leak_rate": (0.05, 0.2, 0.5, 1.0), "spectral_radius": (0.5, 0.9, 1.2), "input_scaling": (0.5, 1.0, 2.0)}
UNTUNED = {"leak_rate": 0.1, "spectral_radius": 0.9}


# --- initialisation ----------------------------------------------------------------


def random_matrix(rows: int, cols: int, density: float, rng: np.random.Generator,
                  distribution: str = "uniform") -> np.ndarray:
    """Dense float64 [rows, cols] with round(density·rows·cols) nonzeros, uniform(-1,1) or normal."""
    if not 0 < density <= 1:
        raise EchoesError(f"connectivity must be in (0, 1], got {density}")
    size = rows * cols
    nnz = max(1, int(round(density * size)))
    idx = rng.choice(size, nnz, replace=False) if nnz < size else np.arange(size)
    values = rng.uniform(-1, 1, nnz) if distribution == "uniform" else rng.standard_normal(nnz)
    out = np.zeros(size)
    out[idx] = values
    return out.reshape(rows, cols)


def eigenvalues(w: np.ndarray, method: str = "arpack") -> np.ndarray:
    """The 8 largest in magnitude ("arpack", by sparse products with W) or all eigenvalues ("dense")."""
    n = w.shape[0]
    if method == "arpack" and n >= ARPACK_MIN_UNITS:
        import scipy.sparse as sp
        from scipy.sparse.linalg import ArpackNoConvergence, eigs

        start = np.random.default_rng(0).standard_normal(n)  # ARPACK's own start is random: results would vary
        try:
            return eigs(sp.csr_matrix(w), k=8, ncv=min(n - 1, 64), which="LM", tol=1e-10, v0=start,
                        return_eigenvectors=False, maxiter=50 * n)
        except ArpackNoConvergence:
            pass  # rare; the dense route is slower but always answers
    return torch.linalg.eigvals(torch.from_numpy(w)).numpy()  # MKL: faster than NumPy's here


def radius_scale(eig: np.ndarray, spectral_radius: float, leak_rate: float = 1.0,
                 effective: bool = False) -> float:
    """The factor s that gives s·W the spectral radius asked for.

    ``effective``: the radius of the leaky update's linearisation (1-a)·I + a·s·W
    (Jaeger et al. 2007), found by bisection over all eigenvalues, instead of W's own.
    """
    if spectral_radius <= 0:
        raise EchoesError(f"spectral_radius must be positive, got {spectral_radius}")
    top = float(np.abs(eig).max()) if len(eig) else 0.0
    if top < 1e-12:
        raise EchoesError("the reservoir matrix has no nonzero eigenvalue — raise connectivity or units")
    if not effective or leak_rate == 1.0:
        return spectral_radius / top
    floor = 1.0 - leak_rate
    if spectral_radius <= floor:
        raise EchoesError(f"an effective spectral_radius must exceed 1 - leak_rate = {floor:g}, "
                          f"got {spectral_radius}")

    def radius(s: float) -> float:
        return float(np.abs(floor + leak_rate * s * eig).max())

    lo, hi = 0.0, (spectral_radius + 1.0) / (leak_rate * top)
    for _ in range(100):  # radius(s) is convex, radius(0) < target < radius(hi)
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if radius(mid) < spectral_radius else (lo, mid)
    return 0.5 * (lo + hi)


def to_dtype(name: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "float64": torch.float64}
    if name not in dtypes:
        raise unknown("dtype", name, dtypes)
    return dtypes[name]


class ReservoirLayer(nn.Module):
    """One fixed reservoir: ``w_in`` [N, F], ``w`` [N, N], ``bias`` [N] buffers and a leak rate."""

    def __init__(self, w_in: np.ndarray, w: np.ndarray, bias: np.ndarray, *, leak_rate: float,
                 activation: str, sparse: bool, dtype: torch.dtype) -> None:
        super().__init__()
        self.register_buffer("w_in", torch.as_tensor(w_in, dtype=dtype))
        self.register_buffer("w", torch.as_tensor(w, dtype=dtype))
        self.register_buffer("bias", torch.as_tensor(bias, dtype=dtype))
        self.leak_rate = leak_rate
        self.activation = ACTIVATIONS[activation]
        self.sparse = sparse
        self._csr: tuple[tuple, torch.Tensor] | None = None
        self._graphs: dict[tuple, _StepGraph | None] = {}
        self._seen: set[tuple] = set()

    @property
    def units(self) -> int:
        return self.w.shape[0]

    def recurrent(self) -> torch.Tensor:
        """W as used in the step: CSR on CPU when sparse pays, else dense (cached per device)."""
        if not (self.sparse and self.w.device.type == "cpu"):
            return self.w
        key = (self.w.device, self.w.dtype, self.w.data_ptr())
        if self._csr is None or self._csr[0] != key:
            with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on mm only
                warnings.simplefilter("ignore", UserWarning)
                self._csr = (key, self.w.to_sparse_csr())
        return self._csr[1]

    def drive(self, z: torch.Tensor) -> torch.Tensor:
        """Input drive W_in z + b for a chunk z [C, F, B] → [C, N, B], one batched product."""
        return torch.matmul(self.w_in, z.contiguous()).add_(self.bias[:, None])

    def run(self, u: torch.Tensor, h: torch.Tensor, active: list[int]) -> torch.Tensor:
        """Advance h [N, B] through the drive u [C, N, B]; u is overwritten with the states.

        Step i updates only the first ``active[i]`` columns (sequences still running);
        the others carry their state over, so every column of u holds a finite state.
        Each step is computed in place in u: one product, one activation, one blend.
        On CUDA, a small chunk of full steps (launch-bound) is replayed as a CUDA graph.
        """
        c, n, b = u.shape
        if (u.is_cuda and n * b <= GRAPH_MAX_ELEMENTS and all(k == b for k in active)
                and not torch.cuda.is_current_stream_capturing()):
            key = (c, b, u.dtype, u.device, self.w.data_ptr())
            if key not in self._graphs and key in self._seen:  # seen before: worth a capture
                try:
                    self._graphs[key] = _StepGraph(self, u, h)
                except RuntimeError:  # capture unsupported here: stay eager
                    self._graphs[key] = None
            if self._graphs.get(key) is not None:
                return self._graphs[key](u, h)
            self._seen.add(key)  # the first time: eager, which also warms cuBLAS up for the capture
        return self.steps(u, h, active)

    def steps(self, u: torch.Tensor, h: torch.Tensor, active: list[int]) -> torch.Tensor:
        """:meth:`run`, one step at a time."""
        w, a, f = self.recurrent(), self.leak_rate, self.activation
        prev, full = h, u.shape[2]
        for state, k in zip(u.unbind(0), active, strict=True):
            if k:
                pre, before = (state, prev) if k == full else (state[:, :k], prev[:, :k])
                f(pre.addmm_(w, before))
                if a != 1.0:
                    pre.lerp_(before, 1.0 - a)  # a·f(...) + (1 - a)·h
            if k < full:
                state[:, k:] = prev[:, k:]
            prev = state
        h.copy_(prev)
        return u

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 — .to()/.cuda() move W: graphs would read the old one
        self._graphs.clear()
        return super()._apply(fn, recurse)

    # The leak rate travels in the state dict, so a saved model keeps a tuned one (``auto``).
    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor([self.leak_rate], dtype=torch.float64)

    def set_extra_state(self, state: torch.Tensor) -> None:
        self.leak_rate = float(state[0])

    def _load_from_state_dict(self, state_dict, prefix, *args):  # noqa: ANN001, ANN002, ANN202
        state_dict.setdefault(prefix + "_extra_state", self.get_extra_state())  # saved before: the config's
        super()._load_from_state_dict(state_dict, prefix, *args)

    def __getstate__(self) -> dict:  # copies and pickles carry no CUDA graphs
        return {**super().__getstate__(), "_graphs": {}, "_seen": set()}


class _StepGraph:
    """A chunk of full reservoir steps captured once as a CUDA graph, replayed on static buffers."""

    def __init__(self, layer: ReservoirLayer, u: torch.Tensor, h: torch.Tensor) -> None:
        self.u, self.h = torch.empty_like(u), torch.empty_like(h)
        self.graph = torch.cuda.CUDAGraph()
        # Captured on a side stream by hand: torch.cuda.graph() would also collect garbage and
        # empty the allocator's cache, which costs more than the capture.
        main, side = torch.cuda.current_stream(u.device), torch.cuda.Stream(u.device)
        side.wait_stream(main)
        with torch.cuda.stream(side):
            self.graph.capture_begin()
            try:
                layer.steps(self.u, self.h, [u.shape[2]] * len(u))
            finally:
                self.graph.capture_end()
        main.wait_stream(side)

    def __call__(self, u: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        self.u.copy_(u)
        self.h.copy_(h)
        self.graph.replay()
        h.copy_(self.h)
        return u.copy_(self.u)


def make_layer(n_in: int, units: int, *, rng: np.random.Generator, spectral_radius: float,
               connectivity: float, input_scaling: float, input_connectivity: float,
               bias_scaling: float, leak_rate: float, activation: str, effective_radius: bool,
               sparse: bool | None, dtype: torch.dtype) -> ReservoirLayer:
    """Draw one reservoir; W is rescaled to exactly the spectral radius asked for."""
    w = random_matrix(units, units, connectivity, rng, "normal")
    whole = effective_radius and leak_rate != 1.0 and units <= DENSE_EIGEN_MAX_UNITS
    w *= radius_scale(eigenvalues(w, "dense" if whole else "arpack"), spectral_radius, leak_rate, effective_radius)
    w_in = random_matrix(units, n_in, input_connectivity, rng) * input_scaling
    bias = rng.uniform(-1, 1, units) * bias_scaling
    if sparse is None:
        sparse = connectivity <= SPARSE_MAX_CONNECTIVITY and units >= SPARSE_MIN_UNITS
    return ReservoirLayer(w_in, w, bias, leak_rate=leak_rate, activation=activation,
                          sparse=sparse, dtype=dtype)


# --- readout features --------------------------------------------------------------


class Pooling:
    """Turns a stream of state chunks [C, D, B] into readout features for one batch.

    ``last``: the state at each sequence's last step; ``mean``: the mean over steps
    from ``washout`` on (a sequence no longer than the washout uses its last step);
    ``times``: states at ``num_times`` evenly spaced steps (the last included);
    framewise: every step's state. Which steps count is worked out on the host from
    ``lengths`` (a CPU tensor), so streaming the chunks never waits for the device.
    """

    def __init__(self, lengths: torch.Tensor, device: torch.device, mode: str, num_times: int,
                 washout: int, framewise: bool) -> None:
        self.framewise, self.mode, self.device = framewise, mode, device
        self.mean = not framewise and mode in ("mean", "last_mean")
        start = (lengths - 1).clamp(max=washout)  # per-sequence washout, leaving >= 1 step
        # Steps [first_full, last_full) count for every sequence: no mask needed there.
        self.first_full, self.last_full = int(start.max()), int(lengths.min())
        self.start, self.lengths = start.to(device), lengths.to(device)
        self.count = (lengths - start).clamp(min=1).to(device, torch.float32)
        picks = []
        if not framewise and mode in ("last", "last_mean"):
            picks.append(lengths - 1)
        if not framewise and mode == "times":
            span = (lengths - start).to(torch.float64)
            for j in range(num_times):
                picks.append(start + torch.ceil(span * (j + 1) / num_times).long() - 1)
        self.picks = torch.stack(picks) if picks else None  # [S, B], on the host

    def new(self) -> _Pooled:
        return _Pooled(self)

    def picks_in(self, t0: int, c: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(slot, sequence, step within the chunk) of the picks in steps [t0, t0 + c), on the device."""
        local = self.picks - t0
        s_idx, b_idx = ((local >= 0) & (local < c)).nonzero(as_tuple=True)
        if not len(s_idx):
            return None
        return tuple(i.to(self.device, non_blocking=True) for i in (s_idx, b_idx, local[s_idx, b_idx]))


class _Pooled:
    """The accumulators of one stream (one layer, or the input)."""

    def __init__(self, spec: Pooling) -> None:
        self.spec = spec
        self.sum: torch.Tensor | None = None
        self.picked: torch.Tensor | None = None
        self.chunks: list[torch.Tensor] = []

    def add(self, chunk: torch.Tensor, t0: int) -> None:
        """Pool a chunk [C, D, k] of steps from t0 on: the first k ≤ B sequences (those still running)."""
        spec = self.spec
        c, d, k = chunk.shape
        b = len(spec.lengths)
        if spec.framewise:
            frames = chunk.permute(2, 0, 1).float()  # [k, C, D]
            if k < b:  # the finished sequences' frames are padding: zeros
                frames = torch.cat([frames, frames.new_zeros(b - k, c, d)])
            self.chunks.append(frames)
            return
        if spec.mean:
            if spec.first_full <= t0 and t0 + c <= spec.last_full:
                part = chunk.sum(0)  # [D, B]
            else:
                t = torch.arange(t0, t0 + c, device=chunk.device)[:, None]
                w = (t >= spec.start[None, :k]) & (t < spec.lengths[None, :k])
                if chunk.is_cuda:
                    part = (chunk * w[:, None, :]).sum(0)
                else:  # step by step: on CPU the [C, D, k] temporary costs 10× more (fresh memory)
                    part, w = torch.zeros_like(chunk[0]), w.to(chunk.dtype)
                    for state, weight in zip(chunk, w, strict=True):
                        part.addcmul_(state, weight)
            if self.sum is None:
                self.sum = chunk.new_zeros(d, b)
            self.sum[:, :k] += part
        if spec.picks is not None:
            if self.picked is None:
                self.picked = chunk.new_zeros(len(spec.picks), b, d)
            found = spec.picks_in(t0, c)  # only running sequences end in this chunk: b_idx < k
            if found is not None:
                s_idx, b_idx, local = found
                self.picked[s_idx, b_idx] = chunk[local, :, b_idx]

    def result(self) -> torch.Tensor:
        """[B, slots·D] features, or [B, T, D] states when framewise."""
        if self.spec.framewise:
            return torch.cat(self.chunks, dim=1)
        parts = []
        if self.picked is not None:
            parts.extend(self.picked.float().unbind(0))
        if self.sum is not None:
            parts.append(self.sum.T.float() / self.spec.count[:, None])
        return torch.cat(parts, dim=1)


class OnlinePool:
    """:class:`Pooling` of one stream of states [D, B], updated one step at a time.

    Gives after every step what the forward pass gives for the sequence so far. ``last`` and
    ``mean`` keep constant memory; ``times`` keeps the states from the washout on (its picks
    move as the sequence grows).
    """

    def __init__(self, model: EchoStateNetwork) -> None:
        self.model = model
        self.seen = 0
        self.last: torch.Tensor | None = None
        self.sum: torch.Tensor | None = None
        self.count = 0
        self.history: list[torch.Tensor] = []

    def add(self, h: torch.Tensor) -> None:
        m = self.model
        self.last = h.clone()
        if self.seen >= m.washout:
            if m.pooling in ("mean", "last_mean"):
                self.sum = self.last if self.sum is None else self.sum + h
                self.count += 1
            if m.pooling == "times":
                self.history.append(self.last)
        self.seen += 1

    def result(self) -> torch.Tensor:
        """[B, slots·D] (framewise: [B, D])."""
        m, last = self.model, self.last.T.float()
        if m.framewise or m.pooling == "last":
            return last
        mean = self.sum.T.float() / self.count if self.count else last  # within the washout: last step
        if m.pooling == "mean":
            return mean
        if m.pooling == "last_mean":
            return torch.cat([last, mean], 1)
        span = len(self.history)
        if not span:  # within the washout every pick is the last step
            return torch.cat([last] * m.num_times, 1)
        return torch.cat([self.history[-(-span * (j + 1) // m.num_times) - 1].T.float()  # ⌈span·(j+1)/n⌉ - 1
                          for j in range(m.num_times)], 1)


# --- the model ---------------------------------------------------------------------


class EchoStateNetwork(SequenceModel):
    """One or more reservoirs (each a stack of layers) and a linear readout.

    One member with one layer is an ESN, with several a DeepESN (layer l is driven by
    layer l-1's states; the readout sees all layers); several members are an
    ensemble whose readout averages one linear readout per member.
    """

    family = "reservoir"
    default_learner = "ridge"

    def __init__(self, input_size: int, num_classes: int, framewise: bool, *,
                 members: list[list[ReservoirLayer]], pooling: str, num_times: int, washout: int,
                 concat_input: bool, bidirectional: bool) -> None:
        super().__init__(input_size, num_classes, framewise)
        self.members = nn.ModuleList(nn.ModuleList(layers) for layers in members)
        self.pooling, self.num_times, self.washout = pooling, num_times, washout
        self.concat_input, self.bidirectional = concat_input, bidirectional
        slots = 1 if framewise else {"last": 1, "mean": 1, "last_mean": 2, "times": num_times}[pooling]
        directions = 2 if bidirectional else 1
        sizes = [slots * (directions * sum(layer.units for layer in layers)
                          + (input_size if concat_input else 0)) for layers in members]
        self.readout = nn.Linear(sizes[0], num_classes) if len(sizes) == 1 else AveragedReadout(
            sizes, num_classes)
        self.settings: dict[str, float] = {}  # leak_rate, spectral_radius, input_scaling as built
        self.tunable: dict[str, tuple[float, ...]] = {}  # the `auto` ones: values the ridge learner tries

    def retune(self, **settings: float) -> None:
        """Move every reservoir to other settings in place: W and the first layers' W_in rescaled
        (the same draw), leak rates set."""
        for name, value in settings.items():
            ratio = value / self.settings[name]
            for layers in self.members:
                for i, layer in enumerate(layers):
                    if name == "leak_rate":
                        layer.leak_rate = value
                    elif name == "spectral_radius":
                        layer.w.mul_(ratio)
                        layer._csr = None  # same storage, new values
                    elif i == 0:
                        layer.w_in.mul_(ratio)
            self.settings[name] = value

    def init_state(self, batch: int, window: int | None = None, stride: int = 1) -> object:
        """(states h [N, B] per member and layer, their OnlinePools, the input's OnlinePool or None)."""
        if self.bidirectional:  # reads each sequence from its end too: only a sliding window can stream it
            return super().init_state(batch, window, stride)
        like = self.members[0][0].w
        return ([[like.new_zeros(layer.units, batch) for layer in layers] for layers in self.members],
                [[OnlinePool(self) for _ in layers] for layers in self.members],
                OnlinePool(self) if self.concat_input else None)

    @torch.no_grad()
    def step(self, x_t: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        """One step of every reservoir (the same ``run`` as the forward pass), then the pooled readout."""
        if self.bidirectional:
            return super().step(x_t, state)
        states, pools, inputs = state
        with torch.autocast(x_t.device.type, enabled=False):
            u = x_t.to(self.dtype).T[None]  # [1, F, B]
            if inputs is not None:
                inputs.add(u[0])
            blocks = []
            for layers, hs, member_pools in zip(self.members, states, pools, strict=True):
                z = u
                for layer, h, pool in zip(layers, hs, member_pools, strict=True):
                    z = layer.run(layer.drive(z), h, [z.shape[2]])  # h is updated in place
                    pool.add(h)
                parts = [p.result() for p in member_pools] + ([inputs.result()] if inputs else [])
                blocks.append(torch.cat(parts, -1))
            return self.readout(torch.cat(blocks, -1)), state

    @property
    def dtype(self) -> torch.dtype:
        return self.members[0][0].w.dtype

    def harvest_bytes(self, steps: int) -> int:
        """Device memory one sequence of ``steps`` steps takes in :meth:`features` (a generous bound):
        the batch and its sorted (and reversed) copy, one chunk's inputs, states and masked states,
        and the features."""
        units = max(layer.units for layers in self.members for layer in layers)
        sizes = self.readout.sizes if isinstance(self.readout, AveragedReadout) else [self.readout.in_features]
        values = ((3 if self.bidirectional else 2) * steps * self.input_size
                  + min(steps, TIME_CHUNK) * (self.input_size + 2 * units)
                  + 3 * (steps if self.framewise else 1) * sum(sizes))
        return 2 * values * max(4, torch.finfo(self.dtype).bits // 8)

    @torch.no_grad()
    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # states stay in full precision
            steps = lengths.cpu()  # the one wait for the device: the steps to run are decided on the host
            order = torch.argsort(steps, descending=True, stable=True)
            if bool((order == torch.arange(len(order))).all()):  # already sorted (e.g. equal lengths)
                return self._sorted_features(x.to(self.dtype), steps)
            order_d = order.to(x.device, non_blocking=True)
            feats = self._sorted_features(x[order_d].to(self.dtype), steps[order])
            return feats[torch.argsort(order_d)]

    def _sorted_features(self, x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """Features of a batch sorted by decreasing length (``steps``, on the host), so running
        sequences are a prefix."""
        b, t_max, _ = x.shape
        chunk = TIME_CHUNK if x.is_cuda else CPU_TIME_CHUNK
        active = (steps[None, :] > torch.arange(t_max)[:, None]).sum(1).tolist()
        spec = Pooling(steps, x.device, self.pooling, self.num_times, self.washout, self.framewise)
        lengths = spec.lengths
        inputs = spec.new()
        per_member: list[list[_Pooled]] = [[] for _ in self.members]
        for backward in ([False, True] if self.bidirectional else [False]):
            xs = reverse_valid(x, lengths) if backward else x
            for m, layers in enumerate(self.members):
                pooled = [spec.new() for _ in layers]
                states = [x.new_zeros(layer.units, b) for layer in layers]
                for t0 in range(0, t_max, chunk):
                    k = b if x.is_cuda else active[t0]  # on CPU only the sequences running at the chunk's start
                    z = xs[:k, t0:t0 + chunk].permute(1, 2, 0)  # [C, F, k]
                    if self.concat_input and not backward and m == 0:
                        inputs.add(z, t0)
                    for i, (layer, pool) in enumerate(zip(layers, pooled, strict=True)):
                        if states[i].shape[1] > k:  # the others' features are pooled: drop their states
                            states[i] = states[i][:, :k].contiguous()
                        z = layer.run(layer.drive(z), states[i], active[t0:t0 + chunk])
                        pool.add(z, t0)
                per_member[m].extend(pooled)
        blocks = []
        for pooled in per_member:
            parts = [p.result() for p in pooled]
            if self.bidirectional and self.framewise:  # align backward states with their steps
                half = len(parts) // 2
                parts[half:] = [reverse_valid(p, lengths) for p in parts[half:]]
            if self.concat_input:
                parts.append(inputs.result())
            blocks.append(torch.cat(parts, dim=-1))
        return torch.cat(blocks, dim=-1)


class ESNOptions(Options):
    """Hyperparameters of every reservoir model; ``esn``, ``deep_esn`` and ``esn_ensemble`` differ in defaults."""

    units: int = Field(500, ge=1, description="reservoir neurons (per layer)")
    spectral_radius: PositiveFloat | Literal["auto"] = Field(
        "auto", description="largest |eigenvalue| of W: memory vs. stability (auto: chosen by the ridge learner)")
    connectivity: float = Field(0.1, gt=0, le=1, description="share of nonzero recurrent weights")
    input_scaling: PositiveFloat | Literal["auto"] | None = Field(
        "auto", description="scale of W_in (null: 1/√(inputs per unit); auto: ×0.5, 1 or 2 of that, chosen by ridge)")
    input_connectivity: float = Field(1.0, gt=0, le=1, description="share of nonzero input weights")
    bias_scaling: float = Field(1.0, ge=0, description="scale of the random bias")
    leak_rate: Annotated[float, Field(gt=0, le=1)] | Literal["auto"] = Field(
        "auto", description="a in h ← (1-a)h + a·f(...): small = slow units (auto: chosen by the ridge learner)")
    activation: Literal["tanh", "sigmoid", "relu", "identity"] = Field("tanh", description="f")
    effective_radius: bool = Field(False, description="scale the leaky update's radius, not W's own")
    num_reservoirs: int = Field(1, ge=1, description="stacked layers (DeepESN), all read out")
    coupling_strength: float = Field(1.0, ge=0, description="scale of the weights from one layer to the next")
    members: int = Field(1, ge=1, description="independent reservoirs, one readout each, outputs averaged")
    pooling: Literal["last", "mean", "last_mean", "times"] = Field(
        "last_mean", description="readout features: last state, mean state, both, or num_times states")
    num_times: int = Field(4, ge=1, description="pooling=times: evenly spaced states read out")
    washout: int = Field(0, ge=0, description="first steps left out of the mean")
    concat_input: bool = Field(False, description="the readout also sees the input")
    bidirectional: bool = Field(False, description="a second pass reads each sequence backwards")
    sparse: bool | None = Field(None, description="CSR W on CPU (null: when connectivity <= 0.1 and units >= 200)")
    dtype: Literal["float32", "float64"] = Field("float32", description="precision of the states")
    seed: int = Field(0, description="draws the reservoir")


def build_esn(input_size: int, num_classes: int, framewise: bool, *, members: int,
              num_reservoirs: int, units: int, spectral_radius: float, connectivity: float,
              input_scaling: float | str | None, input_connectivity: float, bias_scaling: float,
              leak_rate: float | str, activation: str, effective_radius: bool,
              coupling_strength: float, pooling: str, num_times: int, washout: int,
              concat_input: bool, bidirectional: bool, sparse: bool | None, dtype: str,
              seed: int) -> EchoStateNetwork:
    """Echo state network (the seed's SimpleESN): one fixed sparse reservoir, ridge readout.

    Draws members × num_reservoirs reservoirs from independent streams of the seed.
    ``input_scaling`` None scales W_in by 1/√(inputs per unit), so any number of
    standardised features drives the units alike. The spectral radius is exact (ARPACK's
    largest-magnitude eigenvalues; all of them for the effective radius up to 1000 units). Layer l > 1
    of a DeepESN is driven by layer l-1 through dense weights uniform in ±coupling_strength/√units. ``auto`` leak_rate,
    spectral_radius or input_scaling are built as 0.1, 0.9 and 1/√inputs, and tuned by the ridge learner.
    """
    torch_dtype = to_dtype(dtype)
    base_scaling = 1.0 / np.sqrt(max(1.0, input_size * input_connectivity))  # standardised input: variance ~1/3
    given = {"leak_rate": leak_rate, "spectral_radius": spectral_radius, "input_scaling": input_scaling}
    auto = [k for k, v in given.items() if v == "auto"]
    if auto and effective_radius and auto != ["input_scaling"]:
        raise EchoesError("effective_radius needs a fixed leak_rate and spectral_radius (their default, auto, "
                          "tunes them) — set both, e.g. model.leak_rate=0.3 model.spectral_radius=0.9")
    settings = {**given, **UNTUNED, "input_scaling": base_scaling}
    settings.update({k: float(v) for k, v in given.items() if v not in ("auto", None)})
    leak_rate, spectral_radius, input_scaling = (settings[k] for k in given)
    streams = np.random.SeedSequence(seed).spawn(members * num_reservoirs)
    built = []
    for m in range(members):
        layers = []
        for layer in range(num_reservoirs):
            rng = np.random.default_rng(streams[m * num_reservoirs + layer])
            first = layer == 0
            layers.append(make_layer(
                input_size if first else units, units, rng=rng, spectral_radius=spectral_radius,
                connectivity=connectivity,
                input_scaling=input_scaling if first else coupling_strength / np.sqrt(units),
                input_connectivity=input_connectivity if first else 1.0,
                bias_scaling=bias_scaling, leak_rate=leak_rate, activation=activation,
                effective_radius=effective_radius, sparse=sparse, dtype=torch_dtype))
        built.append(layers)
    model = EchoStateNetwork(input_size, num_classes, framewise, members=built, pooling=pooling,
                             num_times=num_times, washout=washout, concat_input=concat_input,
                             bidirectional=bidirectional)
    model.settings = settings
    model.tunable = {k: tuple(v * base_scaling for v in AUTO_GRID[k]) if k == "input_scaling" else AUTO_GRID[k]
                     for k in auto}
    return model


register_model("esn", options=ESNOptions)(build_esn)
register_model("deep_esn", options=ESNOptions, num_reservoirs=3, units=300, doc=(
    "DeepESN (Gallicchio & Micheli): stacked reservoirs, the readout sees every layer's states."))(build_esn)
register_model("esn_ensemble", options=ESNOptions, members=5, doc=(
    "Ensemble of independent ESNs (or DeepESNs), one readout each, outputs averaged."))(build_esn)
