"""``XNNPACKQuantizer``: symmetric int8 quantization for XNNPACK (mobile / ExecuTorch CPUs).

Activations are int8 per tensor (affine, range [-128, 127]); weights int8 symmetric, per
tensor or per output channel (range [-127, 127]); biases stay float. Linear may instead be
quantized dynamically (activation parameters computed at run time).

    >>> quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    >>> quantizer.set_module_name("classifier", None)       # keep the classifier in float
    >>> m = prepare_pt2e(torch.export.export(model, example_inputs).module(), quantizer)

Configuration precedence, strongest first: module name, module type, operator type, global.
A scope set to ``None`` stays in float.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch.fx import GraphModule, Node

from fxquant.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize
from fxquant.observers import (
    HistogramObserver,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PlaceholderObserver,
)
from fxquant.pt2e.quantizer.output_aware_observer import (
    PerChannelOutputMSEObserver,
    link_output_aware_weight_observers,
)
from fxquant.pt2e.quantizer.quantization_config import (
    OperatorConfig,
    OperatorPatternType,
    QuantizationConfig,
)
from fxquant.pt2e.quantizer.quantizer import (
    EdgeOrNode,
    ObserverOrFakeQuantizeConstructor,
    QuantizationSpec,
    Quantizer,
)
from fxquant.pt2e.quantizer.utils import get_module_name_filter
from fxquant.pt2e.quantizer.xnnpack_quantizer_utils import (
    OP_TO_ANNOTATOR,
    _convert_scalars_to_attrs,
    propagate_annotation,
)

__all__ = [
    "XNNPACKQuantizer",
    "get_symmetric_quantization_config",
]

FilterFn = Callable[[Node], bool]

_EPS = 2**-12


@functools.lru_cache
def get_symmetric_quantization_config(
    is_per_channel: bool = False,
    is_qat: bool = False,
    is_dynamic: bool = False,
    act_qmin: int = -128,
    act_qmax: int = 127,
    weight_qmin: int = -127,
    weight_qmax: int = 127,
) -> QuantizationConfig:
    """XNNPACK's int8 config.

    Activations: int8 per-tensor affine in ``[act_qmin, act_qmax]``, calibrated with a
    histogram (PTQ), a fused moving-average fake-quantizer (QAT), or computed per call
    (``is_dynamic``: a placeholder observer; a moving-average fake-quantizer in QAT).
    Weights: int8 symmetric in ``[weight_qmin, weight_qmax]``, per output channel
    (``is_per_channel``, axis 0) or per tensor. Per-channel PTQ weights use
    :class:`~fxquant.pt2e.quantizer.output_aware_observer.PerChannelOutputMSEObserver` (a
    :class:`~fxquant.observers.PerChannelMinMaxObserver` that clips each channel to minimise
    the layer's output error on the calibration inputs; beyond upstream's min/max), the
    others min/max. Bias: float.
    Dynamic configs quantize only inputs (the output stays float).
    """
    act_ctr: ObserverOrFakeQuantizeConstructor
    act_args: dict[str, Any] = {"eps": _EPS}
    if is_qat and is_dynamic:
        act_ctr = FakeQuantize
        act_args["observer"] = MovingAverageMinMaxObserver.with_args(averaging_constant=1)
    elif is_qat:
        act_ctr = FusedMovingAvgObsFakeQuantize
    else:
        act_ctr = PlaceholderObserver if is_dynamic else HistogramObserver
    act = QuantizationSpec(
        dtype=torch.int8,
        quant_min=act_qmin,
        quant_max=act_qmax,
        qscheme=torch.per_tensor_affine,
        is_dynamic=is_dynamic,
        observer_or_fake_quant_ctr=act_ctr.with_args(**act_args),
    )
    weight_qscheme = torch.per_channel_symmetric if is_per_channel else torch.per_tensor_symmetric
    weight_args: dict[str, Any] = {"eps": _EPS}
    weight_ctr: ObserverOrFakeQuantizeConstructor
    if is_qat:
        weight_ctr = FusedMovingAvgObsFakeQuantize
        weight_args["observer"] = MovingAveragePerChannelMinMaxObserver if is_per_channel else MovingAverageMinMaxObserver
    else:
        weight_ctr = PerChannelOutputMSEObserver if is_per_channel else MinMaxObserver
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=weight_qmin,
        quant_max=weight_qmax,
        qscheme=weight_qscheme,
        ch_axis=0,
        is_dynamic=False,
        observer_or_fake_quant_ctr=weight_ctr.with_args(**weight_args),
    )
    return QuantizationConfig(act, None if is_dynamic else act, weight, None, is_qat)


def _supported_symmetric_quantized_operators() -> dict[str, list[OperatorPatternType]]:
    supported: dict[str, list[OperatorPatternType]] = {
        "conv2d": [
            [torch.nn.Conv2d, torch.nn.ReLU],
            [torch.nn.Conv2d, torch.nn.functional.relu],
            [torch.nn.functional.conv2d, torch.nn.ReLU],
            [torch.nn.functional.conv2d, torch.nn.functional.relu],
        ],
        "linear": [[torch.nn.Linear], [torch.nn.functional.linear]],
        "add": [[torch.add]],
        "adaptive_avg_pool2d": [[torch.nn.AdaptiveAvgPool2d], [torch.nn.functional.adaptive_avg_pool2d]],
    }
    return copy.deepcopy(supported)


def _get_supported_config_and_operators() -> list[OperatorConfig]:
    configs = [
        get_symmetric_quantization_config(),
        get_symmetric_quantization_config(is_qat=True),
        get_symmetric_quantization_config(is_per_channel=True),
        get_symmetric_quantization_config(is_per_channel=True, is_qat=True),
    ]
    return [
        OperatorConfig(config, patterns)
        for config in configs
        for patterns in _supported_symmetric_quantized_operators().values()
    ]


def _qualified_name(tp: type | str) -> str:
    return tp if isinstance(tp, str) else f"{tp.__module__}.{tp.__qualname__}"


def _get_module_type_filter(tp: Callable[..., Any]) -> FilterFn:
    """A predicate: was this node produced inside a module of type ``tp`` (at any depth)?

    ``torch.export`` records each node's module stack (``node.meta["nn_module_stack"]``) with
    types as fully qualified names, older captures with the types themselves; both are
    compared by qualified name.
    """
    wanted = _qualified_name(tp)  # type: ignore[arg-type]  # a module class

    def module_type_filter(n: Node) -> bool:
        stack = n.meta.get("nn_module_stack", {})
        return any(_qualified_name(t) == wanted for _, t in stack.values())

    return module_type_filter


def _get_operator_type_filter(operator_type: Any) -> FilterFn:
    """A predicate: does this node call ``operator_type`` (an op packet such as
    ``torch.ops.aten.linear`` or one overload of it)?"""

    def operator_type_filter(n: Node) -> bool:
        target = n.target
        return target == operator_type or getattr(target, "overloadpacket", None) == operator_type

    return operator_type_filter


def _get_not_module_type_or_name_filter(tp_list: list[Callable[..., Any]], module_name_list: list[str]) -> FilterFn:
    """A predicate true for nodes outside every listed module type and module name."""
    filters = [_get_module_type_filter(tp) for tp in tp_list] + [get_module_name_filter(m) for m in module_name_list]

    def not_module_type_or_name_filter(n: Node) -> bool:
        return not any(f(n) for f in filters)

    return not_module_type_or_name_filter


class XNNPACKQuantizer(Quantizer):
    """Annotates conv, linear, add, mul, cat, pooling and GRU input/output patterns for
    XNNPACK's int8 kernels (see :mod:`~fxquant.pt2e.quantizer.xnnpack_quantizer_utils`).

    Beyond upstream: relu6/hardtanh is fused like relu (the output is observed after the
    clamp, a narrower range), per-channel weights are clipped for the least output error
    (:meth:`prepare_obs_or_fq_callback` links them to their layers' inputs),
    ``set_operator_type`` takes effect, a scope configured with ``None`` stays in float, and
    dynamic configs apply per scope.
    """

    supported_config_and_operators: ClassVar[list[OperatorConfig]] = _get_supported_config_and_operators()
    STATIC_QAT_ONLY_OPS: ClassVar[list[str]] = ["conv_bn_relu", "conv_bn", "conv_transpose_bn_relu", "conv_transpose_bn"]
    # Fused patterns come before their single ops.
    STATIC_OPS: ClassVar[list[str]] = [
        "linear_relu",
        "linear",
        "conv_relu",
        "conv",
        "conv_transpose_relu",
        "adaptive_avg_pool2d",
        "gru_io_only",
        "add_relu",
        "add",
        "mul_relu",
        "mul",
        "cat",
    ]
    DYNAMIC_OPS: ClassVar[list[str]] = ["linear"]

    def __init__(self) -> None:
        super().__init__()
        self.global_config: QuantizationConfig | None = None
        self.operator_type_config: dict[Any, QuantizationConfig | None] = {}
        self.module_type_config: dict[Callable[..., Any], QuantizationConfig | None] = {}
        self.module_name_config: dict[str, QuantizationConfig | None] = {}

    @classmethod
    def get_supported_quantization_configs(cls) -> list[QuantizationConfig]:
        return list({config for config, _ in cls.supported_config_and_operators})

    @classmethod
    def get_supported_operator_for_quantization_config(
        cls, quantization_config: QuantizationConfig | None
    ) -> list[OperatorPatternType]:
        if quantization_config is None:
            return [p for _, patterns in cls.supported_config_and_operators for p in patterns]
        for config, patterns in cls.supported_config_and_operators:
            if config == quantization_config:
                return patterns
        return []

    @classmethod
    def get_supported_operators(cls) -> list[OperatorConfig]:
        return cls.supported_config_and_operators

    def set_global(self, quantization_config: QuantizationConfig | None) -> XNNPACKQuantizer:
        """The config for everything not covered by a narrower scope (None: float)."""
        self.global_config = quantization_config
        return self

    def set_operator_type(self, operator_type: Any, quantization_config: QuantizationConfig | None) -> XNNPACKQuantizer:
        """The config for patterns containing ``operator_type`` (e.g. ``torch.ops.aten.linear``)."""
        self.operator_type_config[operator_type] = quantization_config
        return self

    def set_module_type(self, module_type: Callable[..., Any], quantization_config: QuantizationConfig | None) -> XNNPACKQuantizer:
        """The config for patterns inside modules of type ``module_type`` (at any depth),
        e.g. ``quantizer.set_module_type(torch.nn.Linear, config)``."""
        self.module_type_config[module_type] = quantization_config
        return self

    def set_module_name(self, module_name: str, quantization_config: QuantizationConfig | None) -> XNNPACKQuantizer:
        """The config for patterns inside the submodule ``module_name`` (e.g. ``"blocks.0"``)."""
        self.module_name_config[module_name] = quantization_config
        return self

    def transform_for_annotation(self, model: GraphModule) -> GraphModule:
        """Scalar operands of add/mul become tensor constants, so they can be quantized."""
        return _convert_scalars_to_attrs(model)

    def annotate(self, model: GraphModule) -> GraphModule:
        """Annotate each scope's patterns, strongest scope first, then let shape ops share
        their input's quantization."""
        for name, config in self.module_name_config.items():
            self._annotate_all_patterns(model, config, get_module_name_filter(name))
        for tp, config in self.module_type_config.items():
            self._annotate_all_patterns(model, config, _get_module_type_filter(tp))
        outside_modules = _get_not_module_type_or_name_filter(
            list(self.module_type_config), list(self.module_name_config)
        )
        for op, config in self.operator_type_config.items():
            self._annotate_all_patterns(model, config, self._operator_scope(op, outside_modules))
        self._annotate_all_patterns(model, self.global_config, self._global_scope(outside_modules))
        propagate_annotation(model)
        return model

    def _operator_scope(self, operator_type: Any, outside_modules: FilterFn) -> FilterFn:
        is_op = _get_operator_type_filter(operator_type)
        # A pattern is in scope when its anchor op (conv, linear, add, ...) is the operator;
        # fused clamps and batch norms are accepted alongside it.
        return lambda n: outside_modules(n) and (is_op(n) or not _is_pattern_anchor(n))

    def _global_scope(self, outside_modules: FilterFn) -> FilterFn:
        op_filters = [_get_operator_type_filter(op) for op in self.operator_type_config]
        return lambda n: outside_modules(n) and not any(f(n) for f in op_filters)

    def _annotate_all_patterns(
        self, model: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn
    ) -> None:
        if config is None:
            return  # a scope set to None stays float: the global pass excludes it
        dynamic = config.input_activation is not None and config.input_activation.is_dynamic
        names = self.DYNAMIC_OPS if dynamic else (self.STATIC_QAT_ONLY_OPS if config.is_qat else []) + self.STATIC_OPS
        for name in names:
            OP_TO_ANNOTATOR[name](model, config, filter_fn)

    def prepare_obs_or_fq_callback(self, model: GraphModule, edge_or_node_to_obs_or_fq: dict[EdgeOrNode, Any]) -> None:
        """Give each output-aware weight observer the input statistics of its layer."""
        link_output_aware_weight_observers(edge_or_node_to_obs_or_fq)

    def validate(self, model: GraphModule) -> None:
        """Nothing to check: every annotated pattern runs on XNNPACK."""


_ANCHOR_OPS = frozenset({
    torch.ops.aten.linear.default,
    torch.ops.aten.conv1d.default,
    torch.ops.aten.conv2d.default,
    torch.ops.aten.conv_transpose1d.default,
    torch.ops.aten.conv_transpose2d.input,
    torch.ops.aten.add.Tensor,
    torch.ops.aten.add_.Tensor,
    torch.ops.aten.mul.Tensor,
    torch.ops.aten.mul_.Tensor,
    torch.ops.aten.cat.default,
    torch.ops.aten.adaptive_avg_pool2d.default,
})


def _is_pattern_anchor(n: Node) -> bool:
    return n.op == "call_function" and n.target in _ANCHOR_OPS
