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

Padded frames never change an output: the per-frame CNN sees valid frames only,
the LSTM reads each clip's last valid step, the transformer masks padded keys,
and R(2+1)D runs clips of each length separately. In evaluation, batches are
cut into small chunks so a large ``train.eval_batch_size`` does not exhaust memory.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data.video.backbones import create_backbone, load_weights
from ..errors import EchoesError
from . import create_model, register_model
from .base import SequenceModel, step_mask

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


def clip_augmentation() -> nn.Module:
    """The seed's training augmentations, for one clip ``[T, 3, H, W]`` in 0..1."""
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
        from torchvision.models import video

        if weights not in ("none", "kinetics400"):
            raise EchoesError(f"r2plus1d_18: weights must be none or kinetics400, got '{weights}'")
        self.net = video.r2plus1d_18(weights=None)
        if weights == "kinetics400":
            self.net.load_state_dict(load_weights(video.R2Plus1D_18_Weights.KINETICS400_V1))
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


@register_model("r2plus1d_18")
def r2plus1d_18(input_size: int, num_classes: int, framewise: bool = False,
                weights: str = "kinetics400", augment: bool = True, dropout: float = 0.0) -> R2Plus1D:
    """R(2+1)D-18 3D CNN (torchvision) trained end to end on raw frames (data.features=frames)."""
    return R2Plus1D(input_size, num_classes, framewise, weights=weights, augment=augment,
                    dropout=dropout)


@register_model("cnn_lstm")
def cnn_lstm(input_size: int, num_classes: int, framewise: bool = False, backbone: str = "resnet18",
             weights: str | None = None, freeze_blocks: int = 0, hidden_size: int = 256,
             num_layers: int = 1, dropout: float = 0.0, augment: bool = True) -> FrameCNN:
    """2D CNN per frame + LSTM, trained end to end on raw frames (data.features=frames)."""
    return FrameCNN(input_size, num_classes, framewise, backbone=backbone, weights=weights,
                    freeze_blocks=freeze_blocks, temporal="lstm", augment=augment,
                    hidden_size=hidden_size, num_layers=num_layers, dropout=dropout)


@register_model("cnn_transformer")
def cnn_transformer(input_size: int, num_classes: int, framewise: bool = False,
                    backbone: str = "resnet18", weights: str | None = None, freeze_blocks: int = 0,
                    d_model: int = 256, nhead: int = 4, num_layers: int = 2, dropout: float = 0.1,
                    augment: bool = True) -> FrameCNN:
    """2D CNN per frame + transformer encoder, trained end to end on raw frames."""
    return FrameCNN(input_size, num_classes, framewise, backbone=backbone, weights=weights,
                    freeze_blocks=freeze_blocks, temporal="transformer", augment=augment,
                    d_model=d_model, nhead=nhead, num_layers=num_layers, dropout=dropout)
