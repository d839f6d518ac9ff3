"""The streaming contract of every registered model: ``init_state`` + ``step`` give, after every
step, the logits of the full forward pass over the steps so far (recurrent families, exactly), or
over the last ``window`` steps (sliding-window models)."""

import pytest
import torch

from echoes.models import MODELS, create_model
from echoes.models.base import WindowState

SIDE = 16
PIXELS = 3 * SIDE * SIDE
STEPS = 7
# Small settings so every model runs in well under a second; a model not listed runs with its defaults.
SMALL = {
    "esn": {"units": 30}, "deep_esn": {"units": 20, "num_reservoirs": 2},
    "esn_ensemble": {"units": 20, "members": 2},
    "rnn": {"hidden_size": 8}, "lstm": {"hidden_size": 8}, "gru": {"hidden_size": 8},
    "simple_rnn": {"hidden_size": 8}, "deep_rnn": {"hidden_size": 8, "num_layers": 2},
    "lmu": {"hidden_size": 8, "order": 4, "theta": 4.0}, "lmu_fft": {"hidden_size": 8, "order": 4, "theta": 4.0},
    "lsnn": {"hidden_size": 12, "threshold": 0.3},
    "transformer": {"d_model": 16, "nhead": 2, "num_layers": 1},
    "cnn_lstm": {"backbone": "small_cnn", "hidden_size": 8},
    "cnn_transformer": {"backbone": "small_cnn", "d_model": 16, "nhead": 2, "num_layers": 1},
    "r2plus1d_18": {"weights": "none"},
}
ON_PIXELS = {"cnn_lstm", "cnn_transformer", "r2plus1d_18"}
CLIP_ONLY = {"r2plus1d_18"}  # one label per clip: no framewise variant
# Families with a recurrent state: they must stream exactly, never by re-reading a window.
EXACT = {"esn", "deep_esn", "esn_ensemble", "rnn", "lstm", "gru", "simple_rnn", "deep_rnn", "lmu", "lmu_fft",
         "lsnn", "cnn_lstm"}


def build(name, framewise, **options):
    torch.manual_seed(0)
    size = PIXELS if name in ON_PIXELS else 5
    return create_model(name, input_size=size, num_classes=3, framewise=framewise,
                        **{**SMALL.get(name, {}), **options}).eval()


def inputs(model, steps=STEPS):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, steps, model.input_size, generator=g)
    return (x * 255).round() if model.input_size == PIXELS else 2 * x - 1


def check_stream(model, x, window=None, stride=1):
    """Step through x; after every step compare with the forward pass over what the model should see."""
    state = model.init_state(len(x), window, stride)
    windowed = isinstance(state, WindowState)
    with torch.no_grad():
        for t in range(x.shape[1]):
            logits, state = model.step(x[:, t], state)
            if windowed and t and (t + 1) % stride:
                continue  # between re-reads the last logits are repeated
            start = max(0, t + 1 - state.window) if windowed else 0
            seen = x[:, start:t + 1]
            full = model(seen, torch.full((len(x),), seen.shape[1]))
            full = full[:, -1] if model.framewise else full
            assert logits.shape == (len(x), model.num_classes)
            torch.testing.assert_close(logits, full, atol=1e-5, rtol=1e-5, msg=f"step {t}")
    return windowed


@pytest.mark.parametrize("name, framewise", [(name, framewise) for name in MODELS.names()
                                              for framewise in (False, True) if not (framewise and name in CLIP_ONLY)])
def test_every_model_streams_like_its_forward_pass(name, framewise):
    model = build(name, framewise)
    windowed = check_stream(model, inputs(model), window=4)
    assert windowed == (name not in EXACT), "recurrent families stream their state, the others a window"


@pytest.mark.parametrize("options", [
    {"pooling": "mean", "washout": 3}, {"pooling": "times", "num_times": 3}, {"pooling": "times", "washout": 2},
    {"pooling": "last", "concat_input": True}, {"leak_rate": 1.0, "activation": "relu", "units": 200},
])
def test_esn_pooling_streams_exactly(options):
    for framewise in (False, True):
        assert not check_stream(build("deep_esn", framewise, **options), inputs(build("esn", False)))


def test_bidirectional_models_fall_back_to_a_window():
    for name in ("esn", "lsnn"):
        model = build(name, False, bidirectional=True)
        assert check_stream(model, inputs(model), window=3)


def test_window_is_reread_every_stride_steps():
    model = build("transformer", False)
    x = inputs(model, 9)
    assert check_stream(model, x, window=4, stride=3)
    state = model.init_state(2, 4, 3)
    with torch.no_grad():
        outs = [model.step(x[:, t], state)[0] for t in range(5)]
    assert torch.equal(outs[1], outs[0]) and not torch.equal(outs[2], outs[0])  # re-read at steps 1, 3, 6...
    assert torch.equal(outs[3], outs[2]) and torch.equal(outs[4], outs[2])
    with pytest.raises(ValueError, match="window >= 1"):
        model.init_state(2, 0)


def test_recurrent_state_stays_the_same_size():
    model = build("esn", False)
    state = model.init_state(1)
    x = inputs(model, 50)[:1]
    with torch.no_grad():
        for t in range(50):
            _, state = model.step(x[:, t], state)
    states, pools, _ = state
    assert pools[0][0].history == [] and pools[0][0].count == 50 and states[0][0].shape == (30, 1)
