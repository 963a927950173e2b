"""The ready-made qconfigs, with upstream's names and exactly upstream's constructors.

Post-training (observers) first, then quantization-aware training (fake-quantizers). The
per-backend choices live in :mod:`fxquant.qconfig.backend`.
"""

from __future__ import annotations

import torch

from fxquant.fake_quantize import FusedMovingAvgObsFakeQuantize
from fxquant.fake_quantize.defaults import (
    default_dynamic_fake_quant,
    default_embedding_fake_quant,
    default_embedding_fake_quant_4bit,
    default_fake_quant,
    default_fused_act_fake_quant,
    default_fused_wt_fake_quant,
    default_weight_fake_quant,
    fused_per_channel_wt_fake_quant_range_neg_127_to_127,
    fused_wt_fake_quant_range_neg_127_to_127,
)
from fxquant.observers.defaults import (
    default_debug_observer,
    default_dynamic_quant_observer,
    default_float_qparams_observer,
    default_float_qparams_observer_4bit,
    default_observer,
    default_per_channel_weight_observer,
    default_placeholder_observer,
    default_reuse_input_observer,
    default_weight_observer,
    per_channel_weight_observer_range_neg_127_to_127,
    weight_observer_range_neg_127_to_127,
)
from fxquant.observers.histogram import HistogramObserver
from fxquant.observers.minmax import MinMaxObserver, MovingAverageMinMaxObserver
from fxquant.observers.misc import NoopObserver, PlaceholderObserver
from fxquant.qconfig.qconfig import QConfig

__all__ = [
    "default_activation_only_qconfig",
    "default_debug_qconfig",
    "default_dynamic_qat_qconfig",
    "default_dynamic_qconfig",
    "default_embedding_qat_qconfig",
    "default_embedding_qat_qconfig_4bit",
    "default_fp32_placeholder_qconfig",
    "default_per_channel_qconfig",
    "default_per_channel_symmetric_qnnpack_qat_qconfig",
    "default_per_channel_symmetric_qnnpack_qconfig",
    "default_qat_qconfig",
    "default_qat_qconfig_v2",
    "default_qconfig",
    "default_quint8_placeholder_qconfig",
    "default_quint8_weight_qconfig",
    "default_reuse_input_qconfig",
    "default_symmetric_qnnpack_qat_qconfig",
    "default_symmetric_qnnpack_qconfig",
    "default_weight_only_qconfig",
    "float16_dynamic_qconfig",
    "float16_static_qconfig",
    "float_qparams_weight_only_qconfig",
    "float_qparams_weight_only_qconfig_4bit",
    "per_channel_dynamic_qconfig",
]

# --- post-training quantization -------------------------------------------------------------

default_qconfig = QConfig(activation=default_observer, weight=default_weight_observer)
"""quint8 min-max activations (reduce_range), qint8 symmetric per-tensor weights."""

default_debug_qconfig = QConfig(activation=default_debug_observer, weight=default_weight_observer)
"""Records every activation (RecordingObserver) instead of quantizing it."""

default_per_channel_qconfig = QConfig(
    activation=default_observer, weight=default_per_channel_weight_observer
)
"""Like ``default_qconfig`` with per-output-channel symmetric weights."""

default_dynamic_qconfig = QConfig(
    activation=default_dynamic_quant_observer, weight=default_weight_observer
)
"""Dynamic quantization: activation qparams computed per call, per-tensor int8 weights."""

float16_dynamic_qconfig = QConfig(
    activation=PlaceholderObserver.with_args(dtype=torch.float16, is_dynamic=True),
    weight=PlaceholderObserver.with_args(dtype=torch.float16),
)
"""Dynamic quantization with float16 weights."""

float16_static_qconfig = QConfig(
    activation=PlaceholderObserver.with_args(dtype=torch.float16),
    weight=PlaceholderObserver.with_args(dtype=torch.float16),
)
"""Activations and weights cast to float16."""

per_channel_dynamic_qconfig = QConfig(
    activation=default_dynamic_quant_observer, weight=default_per_channel_weight_observer
)
"""Dynamic quantization with per-channel int8 weights."""

float_qparams_weight_only_qconfig = QConfig(
    activation=default_placeholder_observer, weight=default_float_qparams_observer
)
"""Weight-only (embeddings): per-row quint8 weights with a floating-point zero point."""

float_qparams_weight_only_qconfig_4bit = QConfig(
    activation=default_placeholder_observer, weight=default_float_qparams_observer_4bit
)
"""Weight-only (embeddings): per-row quint4x2 weights with a floating-point zero point."""

default_reuse_input_qconfig = QConfig(activation=default_reuse_input_observer, weight=NoopObserver)
"""For ops such as reshape whose output reuses the input's observer."""

default_quint8_weight_qconfig = QConfig(activation=HistogramObserver, weight=MinMaxObserver)
"""Histogram activations and quint8 affine weights (upstream's choice for PReLU)."""

# Symmetric qnnpack/xnnpack qconfigs: signed activations and weights, weights restricted to
# [-127, 127] with zero point 0. xnnpack requires 2**-32 <= input_scale * weight_scale /
# output_scale < 256; a scale floor of eps = 2**-12 keeps the requantization scale above the
# lower bound for outputs up to 256.
_SYMMETRIC_QNNPACK_EPS = 2**-12

default_symmetric_qnnpack_qconfig = QConfig(
    activation=HistogramObserver.with_args(
        dtype=torch.qint8, reduce_range=False, eps=_SYMMETRIC_QNNPACK_EPS
    ),
    weight=weight_observer_range_neg_127_to_127,
)
"""qint8 histogram activations, per-tensor weights in [-127, 127] (xnnpack)."""

default_per_channel_symmetric_qnnpack_qconfig = QConfig(
    activation=HistogramObserver.with_args(
        dtype=torch.qint8, reduce_range=False, eps=_SYMMETRIC_QNNPACK_EPS
    ),
    weight=per_channel_weight_observer_range_neg_127_to_127,
)
"""qint8 histogram activations, per-channel weights in [-127, 127] (xnnpack)."""

default_fp32_placeholder_qconfig = QConfig(
    activation=PlaceholderObserver.with_args(dtype=torch.float32),
    weight=PlaceholderObserver.with_args(dtype=torch.float32),
)
"""Keeps activations and weights in float32 (upstream's ``_default_fp32_placeholder_qconfig``)."""

default_quint8_placeholder_qconfig = QConfig(
    activation=PlaceholderObserver.with_args(dtype=torch.quint8),
    weight=None,
)
"""quint8 activations for weightless ops (upstream's ``_default_quint8_placeholder_qconfig``)."""

# --- quantization-aware training ------------------------------------------------------------

default_qat_qconfig = QConfig(activation=default_fake_quant, weight=default_weight_fake_quant)
"""Fake-quantized activations (moving-average min-max) and per-tensor weights."""

default_dynamic_qat_qconfig = QConfig(
    activation=default_dynamic_fake_quant, weight=default_weight_fake_quant
)
"""QAT for dynamic quantization."""

default_weight_only_qconfig = QConfig(
    activation=torch.nn.Identity, weight=default_weight_fake_quant
)
"""Fake-quantizes weights only."""

default_activation_only_qconfig = QConfig(activation=default_fake_quant, weight=torch.nn.Identity)
"""Fake-quantizes activations only."""

default_qat_qconfig_v2 = QConfig(
    activation=default_fused_act_fake_quant, weight=default_fused_wt_fake_quant
)
"""``default_qat_qconfig`` with the fused observer + fake-quantize modules (faster)."""

default_embedding_qat_qconfig = QConfig(
    activation=NoopObserver.with_args(dtype=torch.float32), weight=default_embedding_fake_quant
)
"""QAT for embeddings: float activations, per-row quint8 float-qparams weights."""

default_embedding_qat_qconfig_4bit = QConfig(
    activation=NoopObserver.with_args(dtype=torch.float32),
    weight=default_embedding_fake_quant_4bit,
)
"""QAT for embeddings with quint4x2 weights."""

_SYMMETRIC_QNNPACK_QAT_ACTIVATION = FusedMovingAvgObsFakeQuantize.with_args(
    observer=MovingAverageMinMaxObserver,
    quant_min=-128,
    quant_max=127,
    dtype=torch.qint8,
    reduce_range=False,
    eps=_SYMMETRIC_QNNPACK_EPS,
)

default_symmetric_qnnpack_qat_qconfig = QConfig(
    activation=_SYMMETRIC_QNNPACK_QAT_ACTIVATION,
    weight=fused_wt_fake_quant_range_neg_127_to_127,
)
"""Symmetric QAT for qnnpack/xnnpack: qint8 activations, weights in [-127, 127]."""

default_per_channel_symmetric_qnnpack_qat_qconfig = QConfig(
    activation=_SYMMETRIC_QNNPACK_QAT_ACTIVATION,
    weight=fused_per_channel_wt_fake_quant_range_neg_127_to_127,
)
"""Symmetric QAT for qnnpack/xnnpack with per-channel weights."""
