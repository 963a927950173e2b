"""QAT fused modules, mirroring ``torch.ao.nn.intrinsic.qat``: conv/linear + BN (+ ReLU) with
the batch norm folded into the fake-quantized weight during training, and conv/linear + ReLU.

``freeze_bn_stats`` / ``update_bn_stats`` are meant for ``model.apply(...)``.
"""

from fxquant.nn.intrinsic.qat.conv_fused import (
    ConvBn1d,
    ConvBn2d,
    ConvBn3d,
    ConvBnReLU1d,
    ConvBnReLU2d,
    ConvBnReLU3d,
    freeze_bn_stats,
    update_bn_stats,
)
from fxquant.nn.intrinsic.qat.conv_relu import ConvReLU1d, ConvReLU2d, ConvReLU3d
from fxquant.nn.intrinsic.qat.linear_fused import LinearBn1d
from fxquant.nn.intrinsic.qat.linear_relu import LinearReLU

__all__ = [
    "ConvBn1d",
    "ConvBn2d",
    "ConvBn3d",
    "ConvBnReLU1d",
    "ConvBnReLU2d",
    "ConvBnReLU3d",
    "ConvReLU1d",
    "ConvReLU2d",
    "ConvReLU3d",
    "LinearBn1d",
    "LinearReLU",
    "freeze_bn_stats",
    "update_bn_stats",
]
