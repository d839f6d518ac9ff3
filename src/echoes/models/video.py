"""End-to-end video models on raw frames: R(2+1)D-18, CNN+LSTM and CNN+Transformer.

They read ``ucf101:ROOT`` with ``data.features=frames``: each step is one frame
stored as a flat uint8 vector of ``3·S·S`` pixels (channels, rows, columns), so
the data pipeline, batching and padding stay the same as for feature sequences,
and the pixels are decoded once into a memory-mapped cache instead of on every
epoch. The model turns a batch back into clips ``[B, T, 3, S, S]`` in 0..1 and,
in training mode only, augments each clip the same way across all its frames
(torchvision transforms v2 draw one set of parameters per call, and a call gets
one whole clip): horizontal flip, rotation ±15°, colour jitter, grayscale (10%),
random erasing (15%). Normalisation follows the weights — ImageNet statistics
for the 2D backbones, Kinetics-400 statistics for R(2+1)D.

Regularisation as in the seed's phase 2: ``dropout`` everywhere, and ``drop_path`` (stochastic
depth) on cnn_transformer, whose transformer drops each layer's residual branches per sample in
training (``models.attention``); an LSTM has no residual branch to drop, so cnn_lstm has none.

Padded frames never change an output: the per-frame CNN sees valid frames only,
the LSTM reads each clip's valid steps only (its last one and their mean), the transformer masks padded keys,
and R(2+1)D runs clips of each length separately. In evaluation, batches are
cut into small chunks so a large ``train.eval_batch_size`` does not exhaust memory.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..data.video.backbones import create_backbone, load_weights
from ..errors import EchoesError
from ..utils import require
from . import Options, create_model, register_model
from .attention import TransformerOptions
from .base import SequenceModel, step_mask
from .recurrent import LSTMOptions

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def clip_augmentation() -> nn.Module:
    """The seed's training augmentations, for one clip ``[T, 3, H, W]`` in 0..1."""
    require("torchvision", "video")
    from torchvision.transforms import v2

    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(15),
        v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
        v2.RandomGrayscale(0.1),
        v2.RandomErasing(0.15),
    ])


class ClipModel(SequenceModel):
    """Shared by the video models: flat pixels → clips, augmentation, chunked evaluation."""

    family = "video"
    eval_chunk = 8  # clips per forward pass in evaluation

    def __init__(self, input_size: int, num_classes: int, framewise: bool, augment: bool) -> None:
        super().__init__(input_size, num_classes, framewise)
        side = math.isqrt(input_size // 3)
        if 3 * side * side != input_size:
            raise EchoesError(
                f"video models need raw frames (3·size·size values per step), got {input_size} "
                "features — use data.features=frames")
        self.side = side
        self.augment = clip_augmentation() if augment else None

    def clips(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B, T, 3·S·S] pixel values 0..255 → [B, T, 3, S, S] in 0..1, augmented when training."""
        clips = x.reshape(*x.shape[:2], 3, self.side, self.side) / 255.0
        if self.training and self.augment is not None:
            from torchvision import tv_tensors

            clips = clips.clone()
            for b, n in enumerate(lengths.tolist()):  # one draw per clip, shared by its frames
                clips[b, :n] = self.augment(tv_tensors.Video(clips[b, :n])).as_subclass(torch.Tensor)
        return clips

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.training or len(x) <= self.eval_chunk:
            return super().forward(x, lengths)
        return torch.cat([super(ClipModel, self).forward(xc, lc) for xc, lc in
                          zip(x.split(self.eval_chunk), lengths.split(self.eval_chunk), strict=True)])


class FrameCNNOptions(Options):
    """The per-frame CNN of cnn_lstm and cnn_transformer."""

    backbone: str = Field("resnet18", description="torchvision 2D CNN applied to every frame")
    weights: str | None = Field(None, description="its weights: imagenet or none (null: the backbone's default)")
    freeze_blocks: int = Field(0, ge=0, description="first blocks of the backbone kept fixed")
    augment: bool = Field(True, description="augment each clip in training (flip, rotation, colour, erasing)")


class CNNLSTMOptions(FrameCNNOptions, LSTMOptions):
    hidden_size: int = Field(256, ge=1, description="LSTM units per layer")


class CNNTransformerOptions(FrameCNNOptions, TransformerOptions):
    d_model: int = Field(256, ge=2, description="width of every encoder layer (even, divisible by nhead)")


class R2Plus1DOptions(Options):
    weights: Literal["none", "kinetics400"] = Field("kinetics400", description="pretrained weights")
    augment: bool = Field(True, description="augment each clip in training (flip, rotation, colour, erasing)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout before the readout")


class FrameCNN(ClipModel):
    """A 2D CNN on every frame, then any registered temporal model on the frame features."""

    def __init__(self, input_size: int, num_classes: int, framewise: bool, *, backbone: str,
                 weights: str | None, freeze_blocks: int, temporal: str, augment: bool,
                 **temporal_options: object) -> None:
        super().__init__(input_size, num_classes, framewise, augment)
        self.backbone = create_backbone(backbone, weights)
        self.backbone.freeze(freeze_blocks)
        self.temporal = create_model(temporal, input_size=self.backbone.dim, num_classes=num_classes,
                                     framewise=framewise, **temporal_options)
        self.readout = self.temporal.readout

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        clips = self.clips(x, lengths)
        valid = step_mask(lengths.to(x.device), x.shape[1])
        frames = torch.zeros(*valid.shape, self.backbone.dim, device=x.device, dtype=clips.dtype)
        frames[valid] = self.backbone(clips[valid]).to(clips.dtype)  # padded frames stay zero
        return self.temporal.features(frames, lengths)

    def init_state(self, batch: int, window: int | None = None, stride: int = 1) -> object:
        return self.temporal.init_state(batch, window, stride)

    def step(self, x_t: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
        """Each frame through the CNN once; the temporal model streams the features (a window re-reads them)."""
        frame = self.clips(x_t[:, None], torch.ones(len(x_t), dtype=torch.long))[:, 0]
        return self.temporal.step(self.backbone(frame).to(frame.dtype), state)


class R2Plus1D(ClipModel):
    """torchvision's R(2+1)D-18: (2+1)D convolutions over space and time, pooled, then linear."""

    def __init__(self, input_size: int, num_classes: int, framewise: bool, *, weights: str,
                 augment: bool, dropout: float) -> None:
        if framewise:
            raise EchoesError("r2plus1d_18 gives one label per clip — it cannot do framewise tasks")
        super().__init__(input_size, num_classes, framewise, augment)
        require("torchvision", "video")
        from torchvision.models import video

        self.net = video.r2plus1d_18(weights=None)
        if weights == "kinetics400":
            load_weights(self.net, video.R2Plus1D_18_Weights.KINETICS400_V1)
        self.net.fc = nn.Identity()
        self.register_buffer("mean", torch.tensor(KINETICS_MEAN).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(KINETICS_STD).view(1, 3, 1, 1, 1), persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.readout = nn.Linear(512, num_classes)

    def features(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        clips = self.clips(x, lengths).transpose(1, 2)  # [B, 3, T, S, S]
        clips = (clips - self.mean) / self.std
        out = torch.empty(len(x), 512, device=x.device, dtype=clips.dtype)
        for n in lengths.unique().tolist():  # each length alone: padding never enters a convolution
            rows = (lengths == n).nonzero().flatten().to(x.device)
            out[rows] = self.net(clips[rows, :, :n]).to(clips.dtype)
        return self.dropout(out)


register_model("r2plus1d_18", options=R2Plus1DOptions, doc=(
    "R(2+1)D-18 3D CNN (torchvision) trained end to end on raw frames (data.features=frames)."))(R2Plus1D)
register_model("cnn_lstm", options=CNNLSTMOptions, temporal="lstm", doc=(
    "2D CNN per frame + LSTM, trained end to end on raw frames (data.features=frames)."))(FrameCNN)
register_model("cnn_transformer", options=CNNTransformerOptions, temporal="transformer", doc=(
    "2D CNN per frame + transformer encoder, trained end to end on raw frames."))(FrameCNN)
