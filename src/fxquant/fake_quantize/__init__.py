"""Fake quantization for quantization-aware training: modules that observe a tensor and
return ``dequantize(quantize(x))`` in float, the QAT switches, and the default constructors.

>>> fq = default_fake_quant()
>>> y = fq(torch.randn(4, 8))        # observe + fake-quantize
>>> model.apply(disable_observer)    # freeze the parameters of every fake-quantizer
"""

from fxquant.fake_quantize.affine import AffineFakeQuantize
from fxquant.fake_quantize.base import FakeQuantizeBase
from fxquant.fake_quantize.defaults import (
    default_affine_fixed_qparams_fake_quant,
    default_dynamic_fake_quant,
    default_embedding_fake_quant,
    default_embedding_fake_quant_4bit,
    default_fake_quant,
    default_fixed_qparams_range_0to1_fake_quant,
    default_fixed_qparams_range_neg1to1_fake_quant,
    default_fused_act_fake_quant,
    default_fused_per_channel_wt_fake_quant,
    default_fused_wt_fake_quant,
    default_histogram_fake_quant,
    default_per_channel_weight_fake_quant,
    default_symmetric_fixed_qparams_fake_quant,
    default_weight_fake_quant,
    fused_per_channel_wt_fake_quant_range_neg_127_to_127,
    fused_wt_fake_quant_range_neg_127_to_127,
)
from fxquant.fake_quantize.fake_quantize import FakeQuantize
from fxquant.fake_quantize.fixed_qparams import FixedQParamsFakeQuantize
from fxquant.fake_quantize.fused import FusedMovingAvgObsFakeQuantize
from fxquant.fake_quantize.learnable import LearnableFakeQuantize, _LearnableFakeQuantize
from fxquant.fake_quantize.switches import (
    disable_fake_quant,
    disable_observer,
    enable_fake_quant,
    enable_observer,
)

__all__ = [
    "AffineFakeQuantize",
    "FakeQuantize",
    "FakeQuantizeBase",
    "FixedQParamsFakeQuantize",
    "FusedMovingAvgObsFakeQuantize",
    "LearnableFakeQuantize",
    "_LearnableFakeQuantize",
    "default_affine_fixed_qparams_fake_quant",
    "default_dynamic_fake_quant",
    "default_embedding_fake_quant",
    "default_embedding_fake_quant_4bit",
    "default_fake_quant",
    "default_fixed_qparams_range_0to1_fake_quant",
    "default_fixed_qparams_range_neg1to1_fake_quant",
    "default_fused_act_fake_quant",
    "default_fused_per_channel_wt_fake_quant",
    "default_fused_wt_fake_quant",
    "default_histogram_fake_quant",
    "default_per_channel_weight_fake_quant",
    "default_symmetric_fixed_qparams_fake_quant",
    "default_weight_fake_quant",
    "disable_fake_quant",
    "disable_observer",
    "enable_fake_quant",
    "enable_observer",
    "fused_per_channel_wt_fake_quant_range_neg_127_to_127",
    "fused_wt_fake_quant_range_neg_127_to_127",
]
