"""Observers: modules that watch tensors during calibration and choose quantization
parameters from what they saw."""

from fxquant.observers.affine import (
    AffineQuantizedMinMaxObserver,
    AffineQuantizedObserverBase,
    MappingType,
    TorchAODType,
    ZeroPointDomain,
)
from fxquant.observers.affine_variants import (
    AffineQuantizedMovingAverageMinMaxObserver,
    AffineQuantizedPlaceholderObserver,
)
from fxquant.observers.base import (
    NonFiniteInputError,
    ObserverBase,
    QuantizationWarning,
    UniformQuantizationObserverBase,
)
from fxquant.observers.defaults import (
    default_affine_fixed_qparams_observer,
    default_debug_observer,
    default_dynamic_quant_observer,
    default_fixed_qparams_range_0to1_observer,
    default_fixed_qparams_range_neg1to1_observer,
    default_float_qparams_observer,
    default_float_qparams_observer_4bit,
    default_histogram_observer,
    default_observer,
    default_per_channel_weight_observer,
    default_placeholder_observer,
    default_reuse_input_observer,
    default_symmetric_fixed_qparams_observer,
    default_weight_observer,
    per_channel_weight_observer_range_neg_127_to_127,
    weight_observer_range_neg_127_to_127,
)
from fxquant.observers.granularity import (
    Granularity,
    PerAxis,
    PerBlock,
    PerGroup,
    PerRow,
    PerTensor,
    PerToken,
    get_block_size,
)
from fxquant.observers.greedy_histogram import GreedyHistogramObserver
from fxquant.observers.histogram import HistogramObserver
from fxquant.observers.minmax import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
)
from fxquant.observers.misc import (
    FixedQParamsObserver,
    NoopObserver,
    ObserverUsageError,
    PlaceholderObserver,
    RecordingObserver,
    ReuseInputObserver,
)
from fxquant.observers.state import (
    ObserverStateError,
    get_observer_state_dict,
    is_activation_post_process,
    load_observer_state_dict,
)

__all__ = [
    "AffineQuantizedMinMaxObserver",
    "AffineQuantizedMovingAverageMinMaxObserver",
    "AffineQuantizedObserverBase",
    "AffineQuantizedPlaceholderObserver",
    "FixedQParamsObserver",
    "Granularity",
    "GreedyHistogramObserver",
    "HistogramObserver",
    "MappingType",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
    "NonFiniteInputError",
    "NoopObserver",
    "ObserverBase",
    "ObserverStateError",
    "ObserverUsageError",
    "PerAxis",
    "PerBlock",
    "PerChannelMinMaxObserver",
    "PerGroup",
    "PerRow",
    "PerTensor",
    "PerToken",
    "PlaceholderObserver",
    "QuantizationWarning",
    "RecordingObserver",
    "ReuseInputObserver",
    "TorchAODType",
    "UniformQuantizationObserverBase",
    "ZeroPointDomain",
    "default_affine_fixed_qparams_observer",
    "default_debug_observer",
    "default_dynamic_quant_observer",
    "default_fixed_qparams_range_0to1_observer",
    "default_fixed_qparams_range_neg1to1_observer",
    "default_float_qparams_observer",
    "default_float_qparams_observer_4bit",
    "default_histogram_observer",
    "default_observer",
    "default_per_channel_weight_observer",
    "default_placeholder_observer",
    "default_reuse_input_observer",
    "default_symmetric_fixed_qparams_observer",
    "default_weight_observer",
    "get_block_size",
    "get_observer_state_dict",
    "is_activation_post_process",
    "load_observer_state_dict",
    "per_channel_weight_observer_range_neg_127_to_127",
    "weight_observer_range_neg_127_to_127",
]
