"""e-prop: the online eligibility-trace gradient equals autodiff without recurrent paths; the learner trains."""

import numpy as np
import pytest
import torch

from echoes.config import TrainConfig
from echoes.data import Dataset, Sequences
from echoes.data.sequences import pad_labels
from echoes.errors import EchoesError
from echoes.learners import create_learner
from echoes.learners.eprop import lsnn_eprop, lstm_eprop
from echoes.metrics import flat_targets
from echoes.models import create_model


@pytest.fixture
def batch():
    torch.manual_seed(0)
    b, t, f, c = 3, 14, 4, 3
    x = torch.randn(b, t, f, dtype=torch.float64) * 2
    lengths = torch.tensor([14, 9, 5])
    y = torch.randint(0, c, (b, t))
    y[torch.arange(t)[None] >= lengths[:, None]] = -1
    y[0, 3] = -1  # an unlabelled frame inside a sequence (like TIMIT's q)
    return x, lengths, y, torch.randint(0, c, (b,))


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def lstm_detached_loss(model, x, lengths, y, smoothing):
    """Autodiff reference: the LSTM with h_{t-1} detached where it enters the gates."""
    rnn = model.rnn
    h = x.new_zeros(x.shape[0], rnn.hidden_size)
    c, hs = torch.zeros_like(h), []
    for t in range(x.shape[1]):
        gates = x[:, t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h.detach() @ rnn.weight_hh_l0.T + rnn.bias_hh_l0
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
    logits, target = flat_targets(model.readout(model.pick(torch.stack(hs, 1), lengths)), y)
    return torch.nn.functional.cross_entropy(logits, target, label_smoothing=smoothing)


@pytest.mark.parametrize("chunk", [None, 1, 5])  # one chunk; step by step; chunks with a ragged last one
@pytest.mark.parametrize("framewise", [True, False])
def test_lsnn_eprop_equals_autodiff_with_detached_recurrent_spikes(batch, framewise, chunk):
    x, lengths, y_frames, y_seq = batch
    y = y_frames if framewise else y_seq
    model = create_model("lsnn", input_size=4, num_classes=3, framewise=framewise, hidden_size=8,
                         adaptive_fraction=0.5, threshold=0.5, tau_mem=3.0, tau_adapt=10.0, refractory=1,
                         rate_reg=0.5, target_rate=0.1, seed=2).double()
    model.detach_recurrent = True
    logits, target = flat_targets(model(x, lengths), y)
    loss = torch.nn.functional.cross_entropy(logits, target, label_smoothing=0.1)
    (loss + model.regularization_loss()).backward()
    reference = grads(model)
    assert all(g.abs().max() > 0 for g in reference.values())  # every path is exercised
    model.zero_grad()
    eprop_loss, correct, count = lsnn_eprop(model, x, lengths, y, smoothing=0.1, chunk=chunk)
    for name, g in grads(model).items():
        assert torch.allclose(g, reference[name], atol=1e-5, rtol=0), name
    assert torch.isclose(eprop_loss, loss)
    assert correct == int((logits.argmax(1) == target).sum()) and count == len(target)


@pytest.mark.parametrize("chunk", [None, 1, 5])
@pytest.mark.parametrize("framewise", [True, False])
def test_lstm_eprop_equals_autodiff_with_detached_hidden_state(batch, framewise, chunk):
    x, lengths, y_frames, y_seq = batch
    y = y_frames if framewise else y_seq
    model = create_model("lstm", input_size=4, num_classes=3, framewise=framewise, hidden_size=6,
                         pooling="last").double()
    loss = lstm_detached_loss(model, x, lengths, y, 0.1)
    loss.backward()
    reference = grads(model)
    model.zero_grad()
    eprop_loss, correct, count = lstm_eprop(model, x, lengths, y, smoothing=0.1, chunk=chunk)
    for name, g in grads(model).items():
        assert torch.allclose(g, reference[name], atol=1e-5, rtol=0), name
    assert torch.isclose(eprop_loss, loss) and count == (int((y >= 0).sum()) if framewise else len(y))


def test_random_feedback_changes_only_the_learning_signal(batch):
    x, lengths, y, _ = batch
    model = create_model("lsnn", input_size=4, num_classes=3, framewise=True, hidden_size=8,
                         threshold=0.5).double()
    lsnn_eprop(model, x, lengths, y)
    symmetric = grads(model)
    feedback = torch.randn(3, 8, dtype=torch.float64)
    lsnn_eprop(model, x, lengths, y, feedback=feedback)
    random = grads(model)
    assert torch.equal(random["readout.weight"], symmetric["readout.weight"])  # the readout's own gradient
    assert not torch.allclose(random["layers.0.w_in"], symmetric["layers.0.w_in"])


def framewise_task(n: int, seed: int) -> Sequences:
    """Label each frame by the sign of the input one step back: needs a little memory."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(20, 40, n)
    xs, ys = np.zeros((n, 40, 3), np.float32), []
    for i, t in enumerate(lengths):
        xs[i, :t] = rng.standard_normal((t, 3))
        ys.append(np.r_[[0], (xs[i, : t - 1, 0] > 0).astype(int)])
    return Sequences(xs, lengths, pad_labels(ys, 40))


@pytest.mark.parametrize(("model_name", "feedback"), [("lsnn", "symmetric"), ("lsnn", "adaptive"),
                                                      ("lstm", "random")])
def test_eprop_learner_trains(model_name, feedback):
    data = Dataset("task", framewise_task(64, 0), framewise_task(32, 1), framewise_task(32, 2), ["-", "+"])
    torch.manual_seed(0)
    model = create_model(model_name, input_size=3, num_classes=2, framewise=True, hidden_size=24)
    learner = create_learner("eprop", feedback=feedback)
    fit = learner.fit(model, data, TrainConfig(epochs=4, batch_size=16, lr=0.02, patience=None),
                      device=torch.device("cpu"), seed=0)
    assert max(h["val_accuracy"] for h in fit.history) > 0.6  # chance: 0.5
    assert fit.history[-1]["train_loss"] < fit.history[0]["train_loss"]
    if feedback == "adaptive":  # B receives exactly W_out's gradient, so the optimizer moves both alike
        assert torch.equal(learner.B.grad, model.readout.weight.grad)
        assert learner.B.grad.abs().max() > 0


def test_eprop_refuses_what_it_cannot_train():
    with pytest.raises(EchoesError, match="did you mean 'random'"):
        create_learner("eprop", feedback="randm")
    learner = create_learner("eprop")
    data = Dataset("task", framewise_task(8, 0), framewise_task(8, 1), framewise_task(8, 2), ["-", "+"])
    for name, kw in (("gru", {}), ("lstm", {"num_layers": 2}), ("lsnn", {"bidirectional": True})):
        model = create_model(name, input_size=3, num_classes=2, framewise=True, hidden_size=8, **kw)
        with pytest.raises(EchoesError, match="learner=gradient"):
            learner.fit(model, data, TrainConfig(epochs=1), device=torch.device("cpu"), seed=0)
