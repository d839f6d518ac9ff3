"""cross_attention and its ablation independent_heads on two label heads (verb + noun), and drop path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoes.config import build_config
from echoes.data.heads import Heads
from echoes.data.sequences import Dataset, Sequences
from echoes.errors import EchoesError
from echoes.models import create_model
from echoes.models.base import DropPath
from echoes.run import run_experiment

VERBS, NOUNS = 3, 3
SMALL = dict(d_model=16, nhead=2, windows=[2, 4])
HEADS = Heads.of({"verb": [f"v{i}" for i in range(VERBS)], "noun": [f"n{i}" for i in range(NOUNS)]})


def two_head_split(n: int, rng: np.random.Generator, max_len: int = 12, noise: float = 0.3) -> Sequences:
    """The verb is a motion (features 0–1 drift right, left or up over the steps), the object's look
    is static (features 2–4, one-hot); the noun is (look + verb) mod 3, so the look alone leaves it
    ambiguous: only the verb and the look together name it."""
    directions = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    verb, look = rng.integers(0, VERBS, n), rng.integers(0, NOUNS, n)
    noun = (look + verb) % NOUNS
    lengths = rng.integers(max_len // 2, max_len + 1, n)
    x = np.zeros((n, max_len, 5), np.float32)
    for i, t in enumerate(lengths):
        steps = np.linspace(-1, 1, t)[:, None]
        x[i, :t, :2] = steps * directions[verb[i]] + rng.uniform(-1, 1, 2)  # a start anywhere: only the drift tells
        x[i, :t, 2 + look[i]] = 1.0
        x[i, :t] += noise * rng.standard_normal((t, 5))
    return Sequences(x, lengths, HEADS.encode(np.stack([verb, noun], 1)))


def two_head_dataset(n_train: int = 300, n_test: int = 120, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset("verb-noun", two_head_split(n_train, rng), two_head_split(n_test // 2, rng),
                   two_head_split(n_test, rng), HEADS.output_names, label_heads=HEADS)


def build(name: str, framewise: bool = False, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, input_size=5, num_classes=VERBS + NOUNS, framewise=framewise,
                        heads=(VERBS, NOUNS), **{**SMALL, **options})


@pytest.mark.parametrize("name", ["cross_attention", "independent_heads"])
@pytest.mark.parametrize("framewise", [False, True])
def test_two_heads_side_by_side_and_padding_changes_nothing(name, framewise):
    model = build(name, framewise).eval()
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([9, 2, 5])
    x = torch.randn(3, 9, 5, generator=g)
    for b, n in enumerate(lengths.tolist()):
        x[b, n:] = 50.0  # junk, not zeros
    with torch.no_grad():
        together = model(x, lengths)
        assert together.shape == ((3, 9, VERBS + NOUNS) if framewise else (3, VERBS + NOUNS))
        for b, n in enumerate(lengths.tolist()):
            alone = model(x[b:b + 1, :n], lengths[b:b + 1])[0]
            torch.testing.assert_close(together[b, :n] if framewise else together[b], alone, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("name", "reaches"), [("cross_attention", True), ("independent_heads", False)])
def test_noun_logits_read_the_verb_branch_only_through_cross_attention(name, reaches):
    model = build(name).eval()
    x, lengths = torch.randn(4, 8, 5), torch.tensor([8, 6, 4, 3])
    noun_logits = HEADS.split(model(x, lengths))[1]
    verb_branch = list(model.branches[0].parameters())
    grads = torch.autograd.grad(noun_logits.sum(), verb_branch, allow_unused=True)
    reached = any(g is not None and g.abs().sum() > 0 for g in grads)
    assert reached == reaches
    # the shared encoder feeds both heads either way
    shared = torch.autograd.grad(HEADS.split(model(x, lengths))[1].sum(), model.proj.weight)[0]
    assert shared.abs().sum() > 0


@pytest.mark.parametrize("windows", [[], [4, 0]])
def test_windows_must_be_frames(windows):
    with pytest.raises(EchoesError, match=r"windows must be one or more sizes in frames \(>= 1\)"):
        create_model("cross_attention", input_size=5, num_classes=4, windows=windows)


def test_one_head_is_one_branch_without_cross_attention():
    model = create_model("cross_attention", input_size=5, num_classes=4, **SMALL)
    assert len(model.branches) == 1 and model.cross is None
    assert model(torch.randn(2, 6, 5), torch.tensor([6, 3])).shape == (2, 4)


def test_drop_path_drops_whole_samples_in_training_and_nothing_in_evaluation():
    torch.manual_seed(0)
    drop, x = DropPath(0.25), torch.ones(4000, 3, 2)
    out = drop.train()(x)
    per_sample = out.flatten(1)
    kept = per_sample.amax(1) > 0
    assert ((per_sample == 0).all(1) | kept).all()  # a sample is dropped whole or kept whole
    torch.testing.assert_close(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.75))  # kept ones scaled
    assert 0.2 < 1 - kept.float().mean() < 0.3
    assert torch.equal(drop.eval()(x), x)
    with pytest.raises(ValueError, match="drop path"):
        DropPath(1.0)


@pytest.mark.parametrize("name", ["transformer", "cross_attention"])
def test_drop_path_option_is_random_in_training_only(name):
    options = dict(d_model=16, nhead=2, num_layers=2) if name == "transformer" else SMALL
    with_drop = create_model(name, input_size=5, num_classes=3, dropout=0.0, drop_path=0.5, **options)
    without = create_model(name, input_size=5, num_classes=3, dropout=0.0, drop_path=0.0, **options)
    without.load_state_dict(with_drop.state_dict())  # drop path adds no weights
    x, lengths = torch.randn(16, 6, 5), torch.full((16,), 6)
    with torch.no_grad():
        torch.testing.assert_close(with_drop.eval()(x, lengths), without.eval()(x, lengths))
        with_drop.train()
        assert not torch.equal(with_drop(x, lengths), with_drop(x, lengths))
        torch.testing.assert_close(without.train()(x, lengths), without(x, lengths))  # no dropout, no drop path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both models trained a few epochs on the same two-head data by the gradient learner."""
    ds, results, threads = two_head_dataset(), {}, torch.get_num_threads()
    torch.set_num_threads(1)  # tiny layers: threads only add overhead on a shared machine
    try:
        for name in ("cross_attention", "independent_heads"):
            cfg = build_config({
                "model": {"name": name, **SMALL}, "data": "verb-noun", "seed": 0, "tracking": False,
                "train": {"epochs": 15, "batch_size": 32, "lr": 0.005, "patience": None}})
            results[name] = run_experiment(cfg, dataset=ds)
    finally:
        torch.set_num_threads(threads)
    return ds, results


@pytest.mark.parametrize("name", ["cross_attention", "independent_heads"])
def test_both_learn_verb_and_noun_together(trained, name):
    ds, results = trained
    model = results[name].model.module
    x, lengths, _ = next(ds.test.batches(8, device=torch.device("cpu")))
    assert model(x, lengths).shape == (8, VERBS + NOUNS)
    verb, noun, action = (results[name].metrics[f"test_{task}_accuracy"] for task in ("verb", "noun", "action"))
    # chance: 1/3 per head, 1/9 for both; the noun needs the verb, so a good noun is a good action
    assert verb > 0.8 and noun > 0.6 and action > 0.5, (verb, noun, action)


def test_cnn_transformer_hands_drop_path_to_its_transformer():
    model = create_model("cnn_transformer", input_size=3 * 16 * 16, num_classes=3, backbone="small_cnn",
                         weights="none", d_model=8, nhead=2, num_layers=2, drop_path=0.3)
    assert [m.p for m in model.modules() if isinstance(m, DropPath)] == [0.3, 0.3]


def test_the_epic_sweep_and_suite_name_real_models_and_options():
    from echoes.run import check_experiment
    from echoes.suite import load_suite
    from echoes.sweep.config import load_sweep

    sweep = load_sweep("epic_regularization")
    assert len(sweep.points) == 8 and {p["model.drop_path"] for p in sweep.points} == {0.05, 0.1, 0.15}
    for point in sweep.points:
        cfg = sweep.config_for(point)
        check_experiment(cfg)
        assert cfg.model.name == "cross_attention" and cfg.data.source.startswith("epic100:")
    suite = load_suite("epic-architectures", ["seeds=[0]"])
    for cfg in suite.runs:
        check_experiment(cfg)
    hybrids = {(r.model.name, r.data.options()["features"]) for r in suite.runs}
    assert {("lstm", "efficientnet_b3"), ("transformer", "efficientnet_b3")} <= hybrids


def test_a_saved_cross_attention_model_predicts_the_same_after_loading(trained, tmp_path):
    from echoes.model import load_model

    ds, results = trained
    fitted = results["cross_attention"].model
    again = load_model(fitted.save(tmp_path / "model"))
    x = [ds.test.x[i, :n] for i, n in enumerate(ds.test.lengths[:6])]
    np.testing.assert_array_equal(again.predict(x), fitted.predict(x))  # [6, 2]: a verb and a noun each
    for head, p in fitted.predict_proba(x).items():
        np.testing.assert_allclose(again.predict_proba(x)[head], p, rtol=1e-5, atol=1e-6)
