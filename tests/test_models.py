import pytest

from echoes.errors import EchoesError
from echoes.models import create_model, list_models

RECURRENT = ["rnn", "lstm", "gru", "simple_rnn", "deep_rnn"]


def test_registry_lists_every_baseline_with_a_description():
    listed = dict(list_models())
    for name in RECURRENT:
        assert listed[name], f"{name} has no one-line description"


def test_unknown_model_and_option_suggest_closest_names():
    with pytest.raises(EchoesError, match="did you mean 'lstm'"):
        create_model("lstn", input_size=3, num_classes=2)
    with pytest.raises(EchoesError, match="has no option 'hiden_size' — did you mean 'hidden_size'"):
        create_model("gru", input_size=3, num_classes=2, hiden_size=4)


def test_parameter_counts():
    model = create_model("lstm", input_size=3, num_classes=2, hidden_size=4)
    trainable, total = model.parameter_counts()
    expected = 4 * (4 * 3 + 4 * 4 + 4 + 4) + (2 * 4 * 2 + 2)  # the readout sees the last step and the mean
    assert trainable == total == expected
    last = create_model("lstm", input_size=3, num_classes=2, hidden_size=4, pooling="last")
    assert last.parameter_counts()[0] == expected - 4 * 2


def test_deep_rnn_layer_count_is_checked():
    with pytest.raises(EchoesError, match=r"model.num_layers must be an integer in \[2, 4\], got 6"):
        create_model("deep_rnn", input_size=3, num_classes=2, num_layers=6)


@pytest.mark.parametrize("name", ["lstm", "simple_rnn", "deep_rnn"])
def test_lstm_cells_start_with_their_forget_gates_open(name):
    """forget_bias (default 1) is added to torch's own init of every layer's forget-gate bias, and only there."""
    import torch

    torch.manual_seed(0)
    plain = create_model(name, input_size=3, num_classes=2, framewise=False, forget_bias=0.0)
    torch.manual_seed(0)
    model = create_model(name, input_size=3, num_classes=2, framewise=False)
    hidden = model.rnn.hidden_size
    for (key, a), (_, b) in zip(plain.rnn.named_parameters(), model.rnn.named_parameters(), strict=True):
        shift = torch.zeros_like(a)
        if key.startswith("bias_ih"):
            shift[hidden:2 * hidden] = 1.0
        torch.testing.assert_close(b - a, shift)
    x = torch.randn(4, 5, 3)
    gates = torch.sigmoid(x[:, 0] @ model.rnn.weight_ih_l0.T + model.rnn.bias_ih_l0 + model.rnn.bias_hh_l0)
    assert gates[:, hidden:2 * hidden].mean() > 0.65  # torch's init: about 0.5
