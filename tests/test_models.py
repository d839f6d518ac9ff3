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
