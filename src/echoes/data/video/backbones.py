"""Frame backbones: a 2D CNN that turns each RGB frame into one feature vector.

| name              | features | default size | weights            |
|-------------------|----------|--------------|--------------------|
| ``small_cnn``     | 128      | 64           | none (built in)    |
| ``resnet18``      | 512      | 224          | none, imagenet     |
| ``resnet50``      | 2048     | 224          | none, imagenet     |
| ``efficientnet_b3`` | 1536   | 300          | none, imagenet     |

``small_cnn`` is three strided convolutions with fixed, seeded random weights
whose 4×4 grid of 8 channels is kept (not averaged away), so positions stay in
the features — enough for motion on generated videos, and no file to fetch. Its
first filters have zero mean (and replicate the border), so they answer edges
and not flat colour: a scene's lighting or backdrop colour does not move the
features, an outline does.
Few dimensions on purpose: small data sets overfit wide features.
The torchvision networks load ImageNet weights through torchvision, which
downloads them into the torch hub cache when online; offline, the error says
which file to put where.

A :class:`Backbone` takes float frames ``[N, 3, H, W]`` in 0..1 and normalises
them with ImageNet statistics itself; ``blocks`` lists its stages in order, for
freezing the first k when fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...errors import EchoesError, unknown
from ...utils import require

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS = ("none", "imagenet")


class Backbone(nn.Module):
    """Normalise, then run a CNN: ``[N, 3, H, W]`` in 0..1 → ``[N, dim]``."""

    def __init__(self, net: nn.Module, dim: int, blocks: list[nn.Module],
                 mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD) -> None:
        super().__init__()
        self.net = net
        self.dim = dim
        self.blocks = blocks  # plain list: the modules are registered through `net`
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net((frames - self.mean) / self.std).flatten(1)

    def freeze(self, k: int) -> None:
        """Stop training the first ``k`` blocks (their batch-norm statistics too)."""
        if not 0 <= k <= len(self.blocks):
            raise EchoesError(f"freeze_blocks must be between 0 and {len(self.blocks)}, got {k}")
        for block in self.blocks[:k]:
            block.requires_grad_(False)
        self.frozen = self.blocks[:k]

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for block in getattr(self, "frozen", []):
            block.eval()
        return self


def _small_cnn(weights: str, seed: int | None = None) -> Backbone:  # noqa: ARG001 — always seeded with 0
    if weights != "none":
        raise EchoesError("small_cnn has no pretrained weights — use weights=none")
    blocks = [
        nn.Sequential(nn.Conv2d(3, 24, 5, stride=2, padding=2, padding_mode="replicate"), nn.ReLU()),
        nn.Sequential(nn.Conv2d(24, 32, 3, stride=2, padding=1), nn.ReLU()),
        nn.Sequential(nn.Conv2d(32, 8, 3, stride=2, padding=1), nn.ReLU()),
    ]
    net = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(4))
    g = torch.Generator().manual_seed(0)  # the same features on every machine and run
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2 / fan_in) ** 0.5)
                m.bias.zero_()
        first = blocks[0][0].weight  # zero-mean: edges respond, flat colour (lighting) does not
        first.sub_(first.mean((2, 3), keepdim=True))
    return Backbone(net, 8 * 4 * 4, blocks)


def load_weights(net: nn.Module, enum_weights) -> None:  # noqa: ANN001 (a torchvision Weights member)
    """Load torchvision weights into ``net``, tensors only (never unpickling code); offline, or with a
    damaged or foreign file, one line naming the file and what to do."""
    from pathlib import Path

    from torch.hub import get_dir

    url = enum_weights.url
    file = Path(get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    present = file.exists()
    try:
        net.load_state_dict(enum_weights.get_state_dict(progress=False, check_hash=True, weights_only=True))
    except Exception as e:  # offline (URLError); damaged, foreign or hostile file (UnpicklingError, RuntimeError...)
        if present:
            raise EchoesError(f"{file} is not a valid weights file ({type(e).__name__}) — "
                              f"delete it and download {url} again") from None
        raise EchoesError(f"cannot download ImageNet weights {file.name} ({type(e).__name__}; "
                          f"offline?) — put {url} into {file.parent}/, or use weights=none") from None


def _torchvision(name: str, dim: int) -> Callable[[str, int | None], Backbone]:
    def build(weights: str, seed: int | None = None) -> Backbone:
        require("torchvision", "video")
        from torchvision import models

        if seed is None:
            net = getattr(models, name)(weights=None)
        else:
            with torch.random.fork_rng(devices=[]):  # the seed draws the weights; the global RNG goes on untouched
                torch.manual_seed(seed)
                net = getattr(models, name)(weights=None)
        if weights == "imagenet":
            load_weights(net, models.get_model_weights(name).DEFAULT)
        if name.startswith("resnet"):
            net.fc = nn.Identity()
            stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
            blocks = [stem, net.layer1, net.layer2, net.layer3, net.layer4]
        else:  # efficientnet
            net.classifier = nn.Identity()
            blocks = list(net.features)
        return Backbone(net, dim, blocks)

    return build


@dataclass(frozen=True)
class BackboneInfo:
    dim: int
    default_size: int
    build: Callable[[str, int | None], Backbone]
    default_weights: str


BACKBONES: dict[str, BackboneInfo] = {
    "small_cnn": BackboneInfo(128, 64, _small_cnn, "none"),
    "resnet18": BackboneInfo(512, 224, _torchvision("resnet18", 512), "imagenet"),
    "resnet50": BackboneInfo(2048, 224, _torchvision("resnet50", 2048), "imagenet"),
    "efficientnet_b3": BackboneInfo(1536, 300, _torchvision("efficientnet_b3", 1536), "imagenet"),
}


def backbone_info(name: str) -> BackboneInfo:
    if name not in BACKBONES:
        raise unknown("frame backbone", name, BACKBONES)
    return BACKBONES[name]


def resolve_weights(name: str, weights: str | None) -> str:
    """``weights`` checked, or the backbone's default (imagenet for torchvision ones)."""
    if weights is None:
        return backbone_info(name).default_weights
    weights = str(weights).lower()
    if weights not in WEIGHTS:
        raise EchoesError(f"weights must be one of {', '.join(WEIGHTS)}, got '{weights}'")
    return weights


def create_backbone(name: str, weights: str | None = None, seed: int | None = None) -> Backbone:
    """A frame backbone by name (see the table above). ``seed`` draws the random weights of a
    torchvision network with ``weights=none`` (None: the global RNG, as seeded by the run)."""
    return backbone_info(name).build(resolve_weights(name, weights), seed)
