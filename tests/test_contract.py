"""The contract every registered model, data source and learner keeps (as timm loops over list_models()).

A new registration is tested by being registered: the lists below only make cases cheap
(the smallest sizes a builder allows) or add option sets worth checking; none is needed.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from echoes.config import TrainConfig
from echoes.data import SOURCES, Dataset, Sequences, load_dataset
from echoes.data.sequences import pad_labels
from echoes.learners import LEARNERS, FitResult, create_learner
from echoes.learners.ridge import readout_blocks
from echoes.models import MODELS, SequenceModel, create_model, default_learner, model_class

SIDE = 16  # video models read raw frames of 3·SIDE·SIDE pixels
PIXELS = 3 * SIDE * SIDE
FEATURES = 3
CLASSES = 3

# Options that keep a case small; anything fetching weights is switched off (tests run offline).
SMALL = {
    "esn": dict(units=30), "deep_esn": dict(units=20, num_reservoirs=2), "esn_ensemble": dict(units=20, members=2),
    "rnn": dict(hidden_size=8), "lstm": dict(hidden_size=8), "gru": dict(hidden_size=8),
    "simple_rnn": dict(hidden_size=8), "deep_rnn": dict(hidden_size=8, num_layers=2),
    "lmu": dict(hidden_size=8, order=4, theta=4.0), "lmu_fft": dict(hidden_size=8, order=4, theta=4.0),
    "lsnn": dict(hidden_size=12), "transformer": dict(d_model=8, nhead=2, num_layers=1),
    "cnn_lstm": dict(backbone="small_cnn", hidden_size=8),
    "cnn_transformer": dict(backbone="small_cnn", d_model=8, nhead=2, num_layers=1),
    "r2plus1d_18": dict(weights="none"),
}
OFFLINE = {"cnn_lstm": dict(weights="none"), "cnn_transformer": dict(weights="none"),
           "r2plus1d_18": dict(weights="none")}
# More option sets whose padding behaviour differs from the defaults'.
VARIANTS = {
    "esn": [dict(pooling="last"), dict(pooling="mean", washout=4, sparse=True),
            dict(pooling="times", bidirectional=True, concat_input=True)],
    "deep_esn": [dict(bidirectional=True)],
    "esn_ensemble": [dict(concat_input=True)],
    "lsnn": [dict(bidirectional=True)],
    "lmu": [dict(hidden_to_memory=False, memory_to_memory=False)],
    "mean_pool": [dict(hidden_size=5)],
}
SEQUENCE_ONLY = {"r2plus1d_18"}  # one label per clip: no framewise form


def is_video(name: str) -> bool:
    cls = model_class(name)
    return cls is not None and cls.family == "video"


def build(name: str, *, framewise: bool = False, **options) -> SequenceModel:
    size = PIXELS if is_video(name) else FEATURES
    return create_model(name, input_size=size, num_classes=CLASSES, framewise=framewise,
                        **{**SMALL.get(name, {}), **options})


def junk_padded_batch(name: str, lengths: tuple[int, ...] = (6, 2, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequences whose padded steps hold large junk, not zeros (video: half as long, to stay cheap)."""
    g = torch.Generator().manual_seed(0)
    size, scale = (PIXELS, 255.0) if is_video(name) else (FEATURES, 1.0)
    lengths = torch.tensor(lengths) // (2 if is_video(name) else 1)
    x = torch.rand(len(lengths), int(lengths.max()), size, generator=g) * scale
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = scale * 50 if scale == 1.0 else 255.0 - x[b, n:]
    return x, lengths


def padding_cases():
    for name in MODELS.names():
        for options in [{}, *VARIANTS.get(name, [])]:
            for framewise in (False, True):
                if not (framewise and name in SEQUENCE_ONLY):
                    yield pytest.param(name, options, framewise, id=f"{name}-{options or 'small'}-"
                                                                    f"{'frames' if framewise else 'seq'}")


# --- models --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS.names())
def test_builds_with_its_defaults(name):
    options = OFFLINE.get(name, {})
    model = create_model(name, input_size=PIXELS if is_video(name) else FEATURES, num_classes=CLASSES, **options)
    assert isinstance(model, SequenceModel) and model.name == name
    assert model.default_learner == default_learner(name) and model.default_learner in LEARNERS.names()
    assert MODELS.summary(name), f"{name} has no one-line description"
    for option in MODELS.describe(name):
        assert not option.required, f"{name}.{option.name} has no default"


@pytest.mark.parametrize(("name", "options", "framewise"), list(padding_cases()))
def test_padding_never_changes_an_output(name, options, framewise):
    torch.manual_seed(0)
    model = build(name, framewise=framewise, **options).eval()
    if hasattr(model, "eval_chunk"):
        model.eval_chunk = 2  # a batch of 3 goes through in chunks, as a big evaluation batch would
    x, lengths = junk_padded_batch(name)
    with torch.no_grad():
        together = model(x, lengths)
        assert together.shape == ((3, x.shape[1], CLASSES) if framewise else (3, CLASSES))
        for b, n in enumerate(lengths.tolist()):
            alone = model(x[b:b + 1, :n], lengths[b:b + 1])[0]
            torch.testing.assert_close(together[b, :n] if framewise else together[b], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", [n for n in MODELS.names() if default_learner(n) == "gradient"])
def test_gradients_reach_every_trainable_parameter(name):
    torch.manual_seed(0)
    model = build(name).train()
    x, lengths = junk_padded_batch(name, (6, 6, 4, 4))  # batch norm in training needs 2 clips of a length
    loss = torch.nn.functional.cross_entropy(model(x, lengths), torch.tensor([0, 1, 2, 0]))
    reg = model.regularization_loss()
    (loss if reg is None else loss + reg).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and bool(p.grad.isfinite().all()), f"{name}: no gradient reaches {pname}"
            assert p.grad.abs().sum() > 0, f"{name}: the gradient of {pname} is zero"


@pytest.mark.parametrize("name", [n for n in MODELS.names() if default_learner(n) == "ridge"])
@pytest.mark.parametrize("framewise", [False, True])
def test_the_readout_suits_ridge(name, framewise):
    model = build(name, framewise=framewise).eval()
    x, lengths = junk_padded_batch(name)
    feats = model.features(x, lengths)
    blocks = readout_blocks(model.readout)  # only linear maps over consecutive feature blocks
    assert blocks[0][0] == 0 and blocks[-1][1] == feats.shape[-1]
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
    assert not feats.requires_grad  # features are fixed: the readout is the only thing to fit
    torch.testing.assert_close(model(x, lengths), model.readout(feats))


@pytest.mark.parametrize("name", MODELS.names())
def test_the_same_seed_gives_the_same_model(name):
    x, lengths = junk_padded_batch(name)
    outputs = []
    for _ in range(2):
        torch.manual_seed(5)
        model = build(name).eval()
        with torch.no_grad():
            outputs.append(model(x, lengths))
    torch.testing.assert_close(outputs[0], outputs[1], atol=0, rtol=0)
    if "seed" in MODELS.entry(name).options.model_fields:  # its own draws follow its seed option
        torch.manual_seed(5)
        other = build(name, seed=1).eval()
        with torch.no_grad():
            assert not torch.equal(other(x, lengths), outputs[0])


def tiny_dataset(name: str, framewise: bool = False) -> Dataset:
    """A few short sequences per split; the class shows in the first step."""
    rng = np.random.default_rng(0)
    size = PIXELS if is_video(name) else FEATURES

    def split(n: int) -> Sequences:
        lengths = np.repeat(rng.integers(2, 5, n // 2), 2)  # pairs: batch norm needs 2 clips of a length
        x = np.zeros((n, 4, size), np.float32)
        y = np.arange(n) % CLASSES
        for i, t in enumerate(lengths):
            x[i, :t] = rng.uniform(0, 255, (t, size)) if size == PIXELS else rng.standard_normal((t, size))
            x[i, 0, : CLASSES] += 3 * (np.arange(CLASSES) == y[i])
        labels = pad_labels([np.full(t, c) for t, c in zip(lengths, y, strict=True)], 4) if framewise else y
        return Sequences(x, lengths, labels)

    return Dataset("tiny", split(6), split(4), split(4), [str(c) for c in range(CLASSES)])


@pytest.mark.parametrize("name", MODELS.names())
def test_trainable_params_are_the_parameters_that_change_in_training(name):
    torch.manual_seed(0)
    model = build(name)
    before = copy.deepcopy(model.state_dict())
    learner = create_learner(default_learner(name))
    learner.fit(model, tiny_dataset(name), TrainConfig(epochs=1, batch_size=6, patience=None),
                device=torch.device("cpu"), seed=0)
    after = model.state_dict()
    weights = {k for k in after if after[k].is_floating_point() and ".running_" not in k}  # not batch statistics
    changed = {k for k in weights if not torch.equal(before[k], after[k])}
    trainable = {k for k, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    # `auto` reservoir settings are chosen by the learner: the reservoirs' rescaled W, W_in and leak rate
    tuned = {k for k in changed - trainable if getattr(model, "tunable", None) and k.startswith("members.")}
    changed -= tuned
    assert changed == trainable, f"{name}: {sorted(changed ^ trainable)} changed but not trainable, or the reverse"
    assert model.parameter_counts()[0] == sum(p.numel() for k, p in model.named_parameters() if k in changed)


# --- learners ------------------------------------------------------------------------------

LEARNER_MODEL = {"ridge": "esn", "eprop": "lsnn"}  # a model each learner trains; others: lstm


@pytest.mark.parametrize("name", LEARNERS.names())
def test_every_learner_trains_deterministically_with_its_defaults(name):
    model_name = LEARNER_MODEL.get(name, "lstm")
    assert LEARNERS.summary(name)
    for option in LEARNERS.describe(name):
        assert not option.required, f"learner {name}.{option.name} has no default"
    data, weights = tiny_dataset(model_name, framewise=True), []
    for _ in range(2):
        torch.manual_seed(0)
        model = build(model_name, framewise=True)
        start = copy.deepcopy(model.state_dict())
        fit = create_learner(name).fit(model, data, TrainConfig(epochs=2, batch_size=4, patience=None),
                                       device=torch.device("cpu"), seed=3)
        assert isinstance(fit, FitResult) and all(isinstance(h, dict) for h in fit.history)
        assert any(not torch.equal(start[k], v) for k, v in model.state_dict().items()), f"{name} changed nothing"
        weights.append(model.state_dict())
    for k in weights[0]:
        torch.testing.assert_close(weights[0][k], weights[1][k], atol=0, rtol=0)


# --- data sources --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_specs(tmp_path_factory, request):
    """A small real instance of every built-in source: spec and options."""
    from echoes.data.video.make_epic import make_epic
    from echoes.data.video.make_videos import make_videos

    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((24, 6, 2)).astype(np.float32)
    np.savez(root / "tiny.npz", X_train=x[:16], y_train=np.arange(16) % 2, lengths_train=rng.integers(2, 7, 16),
             X_test=x[16:], y_test=np.arange(8) % 2)
    make_videos(root / "ucf", classes=2, groups=4, clips=1, min_frames=4, max_frames=5, width=32, height=24, seed=0)
    make_epic(root / "epic", verbs=3, nouns=3, participants=3, unseen=1, videos=2, segments=21, min_frames=4,
              max_frames=5, width=32, height=24, seed=0)
    specs = {
        "synthetic": ("synthetic:motion", dict(n_train=20, n_test=10, min_length=5, max_length=8)),
        "npz": (f"npz:{root / 'tiny.npz'}", {}),
        "uea": ("uea:BasicMotions", {}),
        "ucf101": (f"ucf101:{root / 'ucf'}", dict(frames=3, cache_dir=str(root / "cache"), workers=0)),
        "epic100": (f"epic100:{root / 'epic'}", dict(frames=3, size=16, cache_dir=str(root / "cache"), workers=0)),
    }
    if "timit" in SOURCES.names():  # the Festival corpus other tests share (made once per session)
        specs["timit"] = (f"timit:{request.getfixturevalue('speech_corpus')}", dict(cache_dir=str(root / "cache")))
    return specs


@pytest.mark.parametrize("kind", SOURCES.names())
def test_every_source_gives_consistent_splits(kind, source_specs):
    assert kind in source_specs, f"data source '{kind}' has no small instance in this contract test"
    spec, options = source_specs[kind]
    SOURCES.check(kind, options)
    for option in SOURCES.describe(kind):
        assert not option.required, f"data source {kind}.{option.name} has no default"
    ds = load_dataset(spec, seed=0, **options)
    again = load_dataset(spec, seed=0, **options)
    assert ds.num_classes == len(ds.class_names) >= 2
    for split, other in ((ds.train, again.train), (ds.val, again.val), (ds.test, again.test)):
        assert len(split) > 0 and split.num_features == ds.num_features
        assert split.lengths.min() >= 1 and split.lengths.max() <= split.x.shape[1]
        assert np.isfinite(np.asarray(split.x)).all()
        labels = split.y[split.y >= 0]
        assert labels.min() >= 0 and labels.max() < np.prod(ds.heads.sizes)  # several heads: their label codes
        if split.framewise:  # a label per valid step, none past the end
            steps = np.arange(split.y.shape[1])[None, :]
            assert (split.y[steps >= split.lengths[:, None]] < 0).all()
        np.testing.assert_array_equal(np.asarray(split.x), np.asarray(other.x))  # same seed, same data
        np.testing.assert_array_equal(split.y, other.y)
