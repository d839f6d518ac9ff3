"""Models for video: transformer and mean_pool on feature sequences, end-to-end models on frames."""

import pytest
import torch

from echoes.errors import EchoesError
from echoes.models import create_model

SIDE = 16
PIXELS = 3 * SIDE * SIDE


def padded_pair(features: int, t: int = 5, pad: int = 4, scale: float = 1.0):
    """One real sequence (length t), and the same padded with garbage to t + pad."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, t, features, generator=g) * scale
    garbage = torch.rand(1, pad, features, generator=g) * scale + 5
    return x, torch.cat([x, garbage], 1)


def test_mean_pool_is_blind_to_order_and_the_transformer_is_not():
    torch.manual_seed(0)
    x, _ = padded_pair(6, t=7)
    reversed_x = x.flip(1)
    lengths = torch.tensor([7])
    pool = create_model("mean_pool", input_size=6, num_classes=3).eval()
    attention = create_model("transformer", input_size=6, num_classes=3, d_model=16, nhead=2).eval()
    with torch.no_grad():
        torch.testing.assert_close(pool(reversed_x, lengths), pool(x, lengths))
        assert not torch.allclose(attention(reversed_x, lengths), attention(x, lengths), atol=1e-4)


def test_transformer_options_are_checked():
    with pytest.raises(EchoesError, match="divisible by nhead"):
        create_model("transformer", input_size=4, num_classes=2, d_model=30, nhead=4)


def test_augmentation_is_the_same_for_every_frame_of_a_clip_and_only_in_training():
    model = create_model("cnn_lstm", input_size=PIXELS, num_classes=2, backbone="small_cnn")
    frame = torch.randint(0, 256, (PIXELS,)).float()
    x = frame.repeat(2, 5, 1)  # two clips of five identical frames
    lengths = torch.tensor([5, 5])
    torch.manual_seed(3)
    model.train()
    clips = model.clips(x, lengths)
    assert clips.shape == (2, 5, 3, SIDE, SIDE)
    for b in range(2):
        for t in range(1, 5):
            torch.testing.assert_close(clips[b, t], clips[b, 0])  # one draw per clip
    assert not torch.allclose(clips[0, 0], x[0, 0].view(3, SIDE, SIDE) / 255)  # it did augment
    model.eval()
    torch.testing.assert_close(model.clips(x, lengths), x.view(2, 5, 3, SIDE, SIDE) / 255)


def test_frozen_blocks_stop_training():
    full = create_model("cnn_lstm", input_size=PIXELS, num_classes=2, backbone="small_cnn")
    frozen = create_model("cnn_lstm", input_size=PIXELS, num_classes=2, backbone="small_cnn",
                          freeze_blocks=2)
    assert frozen.parameter_counts()[0] < full.parameter_counts()[0]
    assert frozen.parameter_counts()[1] == full.parameter_counts()[1]
    first = frozen.backbone.blocks[0][0]
    assert not first.weight.requires_grad and frozen.backbone.blocks[2][0].weight.requires_grad
    with pytest.raises(EchoesError, match="freeze_blocks"):
        create_model("cnn_lstm", input_size=PIXELS, num_classes=2, backbone="small_cnn",
                     freeze_blocks=9)


def test_video_models_need_raw_frames():
    with pytest.raises(EchoesError, match="data.features=frames"):
        create_model("cnn_lstm", input_size=128, num_classes=2, backbone="small_cnn")
    with pytest.raises(EchoesError, match="framewise"):
        create_model("r2plus1d_18", input_size=PIXELS, num_classes=2, framewise=True, weights="none")
