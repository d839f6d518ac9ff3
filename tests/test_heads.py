"""Several label heads (EPIC-KITCHENS' verb + noun): codes, losses, the official action scoring, and
multi-head data trained end to end by ridge and gradient descent."""

import math

import numpy as np
import pytest
import torch

from echoes import load_model, train
from echoes.data.heads import Heads
from echoes.errors import EchoesError
from echoes.metrics import Predictions, action_hits, head_metrics

HEADS = Heads.of({"verb": ["cut", "take", "put"], "noun": ["knife", "pan", "cup"]})


def test_codes_round_trip_and_targets_stack_one_hots():
    labels = np.array([[0, 1], [2, 0], [1, 2], [2, 2]])
    codes = HEADS.encode(labels)
    assert codes.tolist() == [1, 6, 5, 8]  # verb · 3 + noun
    assert (HEADS.decode(codes) == labels).all()
    assert (HEADS.decode(torch.tensor(codes)).numpy() == labels).all()
    targets = HEADS.one_hot(torch.tensor(codes))
    assert targets.shape == (4, 6)
    assert targets[1].tolist() == [0, 0, 1, 1, 0, 0]  # put | knife
    assert HEADS.output_names[:4] == ["verb:cut", "verb:take", "verb:put", "noun:knife"]


def test_loss_is_the_weighted_sum_of_the_heads_cross_entropies_and_right_means_every_head():
    logits = torch.randn(5, 6, generator=torch.Generator().manual_seed(0))
    codes = torch.tensor([0, 4, 8, 3, 5])
    verb, noun = HEADS.decode(codes).unbind(-1)
    ce = torch.nn.functional.cross_entropy
    expected = 2.0 * ce(logits[:, :3], verb) + 0.5 * ce(logits[:, 3:], noun)
    assert torch.isclose(HEADS.loss(logits, codes, [2.0, 0.5]), expected)
    both = (logits[:, :3].argmax(1) == verb) & (logits[:, 3:].argmax(1) == noun)
    assert ((HEADS.predicted(logits) == codes) == both).all()
    with pytest.raises(EchoesError, match="head_weights has 1 values for 2"):
        HEADS.loss(logits, codes, [1.0])
    one = Heads.single(["a", "b", "c"])  # the plain case is plain cross-entropy and argmax
    assert torch.isclose(one.loss(logits[:, :3], verb), ce(logits[:, :3], verb))
    assert (one.predicted(logits[:, :3]) == logits[:, :3].argmax(1)).all()


def test_action_scoring_follows_the_official_top_n_products():
    # One segment, worked by hand with top_n = 2: verbs 0, 1 kept (softmax of 2, 1: .731 / .269),
    # nouns 1, 2 kept (softmax of 3, 1: .881 / .119). Products rank (0,1) .644 > (1,1) .237 > (0,2) .087
    # > (1,2) .032; actions with verb 2 or noun 0 are never ranked.
    verb = np.array([[2.0, 1.0, 0.5]] * 4)
    noun = np.array([[0.0, 3.0, 1.0]] * 4)
    labels = np.array([[1, 1], [0, 2], [2, 1], [0, 0]])
    hits = action_hits([verb, noun], labels, ks=(1, 2, 3, 5), top_n=2)
    assert hits[1].tolist() == [False, False, False, False]
    assert hits[2].tolist() == [True, False, False, False]
    assert hits[3].tolist() == [True, True, False, False]
    assert hits[5].tolist() == [True, True, False, False]
    # with every class kept, (2, 1) is found: it ranks 3rd (.140·.844 = .118 beats (0,2)'s .629·.114 = .072)
    assert action_hits([verb, noun], labels, ks=(3,), top_n=100)[3].tolist() == [True, False, True, False]


def test_head_metrics_on_tail_classes_and_subsets_by_hand():
    logits = np.array([[2.0, 1.0, 0.5, 0.0, 3.0, 1.0]] * 4)  # predicts verb 0, noun 1
    labels = np.array([[0, 1], [0, 2], [2, 1], [1, 0]])
    pred = Predictions(logits, HEADS.encode(labels), [0.1], 4, HEADS)
    m = head_metrics(pred, "test", {"unseen": np.array([True, True, False, False])},
                     {"verb": [2], "noun": [0]})
    assert m["test_verb_accuracy"] == 0.5 and m["test_noun_accuracy"] == 0.5
    assert m["test_action_accuracy"] == 0.25 and pred.accuracy == 0.25
    assert m["test_verb_top5"] is None  # 3 classes: top-5 says nothing
    assert m["test_action_top5"] == 0.75  # (1, 0) ranks 8th of the 9 actions (.231·.042)
    assert m["test_tail_verb_accuracy"] == 0.0  # row 2 (verb 2) wrong
    assert m["test_tail_noun_accuracy"] == 0.0  # row 3 (noun 0) wrong
    assert m["test_tail_action_accuracy"] == 0.0  # rows 2, 3
    assert m["test_unseen_verb_accuracy"] == 1.0 and m["test_unseen_noun_accuracy"] == 0.5
    assert m["test_unseen_action_accuracy"] == 0.5
    # the loss is the sum of the heads' mean cross-entropies
    z = logits[:, :3] - np.log(np.exp(logits[:, :3]).sum(1, keepdims=True))
    w = logits[:, 3:] - np.log(np.exp(logits[:, 3:]).sum(1, keepdims=True))
    expected = -z[np.arange(4), labels[:, 0]].mean() - w[np.arange(4), labels[:, 1]].mean()
    assert math.isclose(pred.loss(), expected)


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    """Verb in the drift of feature 0, noun in the level of feature 1: learnable, not trivially."""
    rng = np.random.default_rng(0)
    verbs, nouns = np.array(["cut", "take", "put"]), np.array(["knife", "pan", "cup", "lid"])

    def make(n):
        v, o = rng.integers(0, 3, n), rng.integers(0, 4, n)
        x = rng.normal(size=(n, 12, 4)).astype(np.float32) * 0.3
        x[:, :, 0] += (v[:, None] - 1) * np.linspace(0, 1, 12)
        x[:, :, 1] += o[:, None] * 0.5
        return x, np.stack([verbs[v], nouns[o]], 1)

    (xtr, ytr), (xte, yte) = make(240), make(90)
    path = tmp_path_factory.mktemp("heads") / "two.npz"
    np.savez(path, X_train=xtr, y_train=ytr, X_test=xte, y_test=yte, head_names=np.array(["verb", "noun"]))
    return path, xte, yte


@pytest.mark.parametrize("model", ["esn", "lstm"])
def test_two_heads_train_predict_save_and_load(two_heads, model, tmp_path):
    path, xte, yte = two_heads
    r = train(model=model, data=f"npz:{path}", **{"tracking.enabled": False, "train.epochs": 8, "train.lr": 3e-3,
                                                   "model.hidden_size" if model == "lstm" else "model.units": 32})
    predicted = r.model.predict(xte)
    assert predicted.shape == (len(xte), 2)
    both = (predicted == yte).all(1).mean()
    assert r["test_action_accuracy"] == pytest.approx(both) == r["test_accuracy"]
    assert r["test_verb_accuracy"] == pytest.approx((predicted[:, 0] == yte[:, 0]).mean())
    assert both > 0.6  # chance is 1/12
    assert r["overfit_gap_noun"] == pytest.approx(r["train_noun_accuracy"] - r["val_noun_accuracy"])
    proba = r.model.predict_proba(xte[:5])
    assert set(proba) == {"verb", "noun"} and proba["noun"].shape == (5, 4)
    assert np.allclose(proba["verb"].sum(1), 1)
    if model == "esn":  # ridge fits one temperature per head
        assert r["ridge_temperature_verb"] > 0 and r["ridge_temperature_noun"] > 0
    loaded = load_model(r.model.save(tmp_path / "m"))
    assert (loaded.predict(xte) == predicted).all()
    assert loaded.score(xte, yte) == pytest.approx(both)


def test_bad_multi_head_inputs(two_heads, tmp_path):
    path, xte, yte = two_heads
    d = dict(np.load(path))
    np.savez(tmp_path / "nonames.npz", **{k: v for k, v in d.items() if k != "head_names"})
    with pytest.raises(EchoesError, match="add head_names"):
        train(model="mean_pool", data=f"npz:{tmp_path / 'nonames.npz'}", **{"tracking.enabled": False})
    with pytest.raises(EchoesError, match="learner=eprop trains one label head"):
        train(model="lstm", learner="eprop", data=f"npz:{path}",
              **{"model.pooling": "last", "tracking.enabled": False, "train.epochs": 1})
    r = train(model="mean_pool", data=f"npz:{path}", **{"tracking.enabled": False, "train.epochs": 1})
    with pytest.raises(EchoesError, match="noun label 'fork' is not a class"):
        r.model.score(xte[:1], np.array([["cut", "fork"]]))


def test_predict_writes_the_challenge_formats_and_evaluate_reports_every_head(two_heads, tmp_path, capsys):
    import json

    from echoes.cli import main

    path, xte, yte = two_heads
    r = train(model="mean_pool", data=f"npz:{path}", **{"tracking.enabled": False, "train.epochs": 3})
    folder = r.model.save(tmp_path / "m")
    assert main(["predict", str(folder), f"npz:{path}", "--out", str(tmp_path / "res.npz")]) == 0
    res = np.load(tmp_path / "res.npz", allow_pickle=False)
    assert set(res.files) == {"narration_id", "verb_output", "noun_output"}
    assert res["verb_output"].shape == (len(xte), 3) and res["noun_output"].shape == (len(xte), 4)
    logits = r.model.decision_function(xte)
    assert np.allclose(res["noun_output"], logits[:, 3:], atol=1e-5)
    assert main(["predict", str(folder), f"npz:{path}", "--out", str(tmp_path / "sub.json")]) == 0
    sub = json.loads((tmp_path / "sub.json").read_text())
    assert sub["challenge"] == "action_recognition" and len(sub["results"]) == len(xte)
    assert sorted(sub["results"]["0"]) == ["noun", "verb"] and len(sub["results"]["0"]["verb"]) == 3
    assert main(["predict", str(folder), f"npz:{path}", "--out", str(tmp_path / "rows.csv")]) == 0
    header = (tmp_path / "rows.csv").read_text().splitlines()[0].split(",")
    assert {"verb_predicted", "noun_probability", "label", "predicted"} <= set(header)
    capsys.readouterr()
    assert main(["evaluate", str(folder), f"npz:{path}"]) == 0
    out = capsys.readouterr().out
    assert f"action  top-1 {r['test_action_accuracy']:.4f}" in out and "noun    top-1" in out


def test_streaming_and_serving_score_the_action_jointly(two_heads):
    from echoes.serving import EchoesPyfunc

    path, xte, yte = two_heads
    r = train(model="lstm", data=f"npz:{path}", **{"tracking.enabled": False, "train.epochs": 2,
                                                    "model.hidden_size": 16})
    model = r.model
    *_, last = model.stream(xte[0])  # the recurrent state after every step = the full forward pass
    joint = model.heads.probabilities(last)
    proba = model.predict_proba(xte[:1])
    assert np.allclose(joint.reshape(3, 4), np.outer(proba["verb"][0], proba["noun"][0]), atol=1e-5)
    assert model.heads.label_names[int(joint.argmax())] == "/".join(model.predict(xte[:1])[0])
    served = EchoesPyfunc()
    served.model = model
    frame = served.predict(None, {"x": xte[:4]})
    assert frame["label"].tolist() == ["/".join(p) for p in model.predict(xte[:4])]
    assert np.allclose(frame["p_noun:cup"], model.predict_proba(xte[:4])["noun"][:, 0], atol=1e-6)
