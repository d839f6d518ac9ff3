import pytest
import torch

from echoes.errors import EchoesError
from echoes.models import create_model, list_models

RECURRENT = ["rnn", "lstm", "gru", "simple_rnn", "deep_rnn"]


def _padded_pair(model, framewise=False):
    torch.manual_seed(0)
    short = torch.randn(1, 5, 3)
    batch = torch.randn(3, 9, 3)
    batch[1, :5] = short[0]
    batch[1, 5:] = 1e3  # junk past the end must not matter
    lengths = torch.tensor([9, 5, 7])
    model.eval()
    with torch.no_grad():
        alone = model(short, torch.tensor([5]))
        together = model(batch, lengths)
    return alone, together


@pytest.mark.parametrize("name", RECURRENT)
def test_padding_never_changes_outputs(name):
    kwargs = {"hidden_size": 8} | ({"num_layers": 2} if name == "deep_rnn" else {})
    model = create_model(name, input_size=3, num_classes=4, **kwargs)
    alone, together = _padded_pair(model)
    assert together.shape == (3, 4)
    torch.testing.assert_close(alone[0], together[1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru"])
def test_framewise_models_give_one_output_per_step(name):
    model = create_model(name, input_size=3, num_classes=4, framewise=True, hidden_size=8)
    alone, together = _padded_pair(model, framewise=True)
    assert together.shape == (3, 9, 4)
    torch.testing.assert_close(alone[0], together[1, :5], atol=1e-5, rtol=1e-5)


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
    expected = 4 * (4 * 3 + 4 * 4 + 4 + 4) + (4 * 2 + 2)
    assert trainable == total == expected


def test_deep_rnn_layer_count_is_checked():
    with pytest.raises(EchoesError, match="between 2 and 4"):
        create_model("deep_rnn", input_size=3, num_classes=2, num_layers=6)
