"""``X86InductorQuantizer``: the int8 recipe of Inductor's x86 (oneDNN) lowering.

Activations uint8 per tensor (affine), weights int8 symmetric per output channel, biases
float. The recipe quantizes the *inputs* of the ops that run in int8 — conv and linear (fused
with their post-ops), and, when configured, matmul and same-shape mul — so every tensor is
observed where an int8 kernel reads it: after a fused relu/relu6/hardswish clamp, never
before it. Then:

- a conv/linear and its post-ops form one pattern: unary (relu, hardtanh/relu6, hardswish,
  silu, gelu, leaky_relu, tanh), binary (add; its other operand is quantized for conv), and
  binary + relu;
- ops that run on int8 and keep their input's quantization (max-pool, avg-pool, adaptive
  avg-pool, cat, and flatten/view/reshape feeding a quantized op) are annotated when their
  inputs come from quantized patterns, and their outputs share their input's observer;
- QAT graphs (conv + batch norm rewritten by ``prepare_qat_pt2e``) are matched through the
  batch norm, whose output (or its post-op's) is fake-quantized.

    >>> quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    >>> quantizer.set_module_name_qconfig("classifier", None)   # keep in float
    >>> m = prepare_pt2e(torch.export.export(model, example_inputs).module(), quantizer)

Precedence: module-name configs, then operator-type configs (``set_module_type_qconfig`` /
``set_function_type_qconfig`` map modules and functions to aten operators), then the global
config (which covers conv, linear, mul and the propagation ops; matmul only when configured).
QAT and non-QAT configs, or static and dynamic ones, cannot be mixed.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx import GraphModule, Node

from fxquant.fake_quantize import FakeQuantize, FusedMovingAvgObsFakeQuantize
from fxquant.observers import (
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
)
from fxquant.observers.greedy_histogram import GreedyHistogramObserver
from fxquant.pt2e.quantizer.output_aware_observer import (
    PerChannelOutputMSEObserver,
    link_output_aware_weight_observers,
)
from fxquant.pt2e.quantizer.quantization_config import (
    QuantizationConfig,
    get_bias_qspec,
    get_input_act_qspec,
    get_output_act_qspec,
    get_weight_qspec,
)
from fxquant.pt2e.quantizer.quantizer import (
    EdgeOrNode,
    ObserverOrFakeQuantizeConstructor,
    QuantizationAnnotation,
    QuantizationSpec,
    QuantizationSpecBase,
    Quantizer,
    SharedQuantizationSpec,
)
from fxquant.pt2e.quantizer.utils import ANNOTATION_KEY, get_annotation, get_module_name_filter
from fxquant.pt2e.utils import _conv_bn_chain, _is_constant_node

__all__ = [
    "QUANT_ANNOTATION_KEY",
    "X86InductorQuantizer",
    "get_default_x86_inductor_quantization_config",
    "get_x86_inductor_linear_dynamic_fp16_config",
]

QUANT_ANNOTATION_KEY = ANNOTATION_KEY

_aten = torch.ops.aten

# A filter receives all nodes of a candidate pattern and says whether the scope covers it.
FilterFn = Callable[[list[Node]], bool]

_CONV_OPS = frozenset({_aten.conv1d.default, _aten.conv2d.default})
_LINEAR_OPS = frozenset({_aten.linear.default})
_UNARY_POST_OPS = frozenset({
    _aten.relu.default, _aten.relu_.default,
    _aten.hardtanh.default, _aten.hardtanh_.default,
    _aten.hardswish.default, _aten.hardswish_.default,
    _aten.silu.default, _aten.silu_.default,
    _aten.gelu.default,
    _aten.leaky_relu.default, _aten.leaky_relu_.default,
    _aten.tanh.default,
})
_RELU_OPS = frozenset({_aten.relu.default, _aten.relu_.default})
_ADD_OPS = frozenset({_aten.add.Tensor, _aten.add_.Tensor})

# Ops that run on int8 inputs and produce int8 outputs with their input's quantization.
int8_in_int8_out_ops: frozenset[Any] = frozenset({
    _aten.max_pool2d.default,
    _aten.cat.default,
    _aten.avg_pool2d.default,
    _aten.adaptive_avg_pool2d.default,
    _aten.flatten.using_ints,
})
# Shape ops annotated only when they feed a quantizable op (else they would add q/dq pairs
# that lead nowhere).
_SHAPE_OPS = frozenset({_aten.flatten.using_ints, _aten.view.default, _aten.reshape.default})
# Ops whose quantization propagates from quantized inputs.
propagation_quantizable_ops: frozenset[Any] = int8_in_int8_out_ops | _SHAPE_OPS
# Ops the global config quantizes.
default_quantizable_ops: frozenset[Any] = propagation_quantizable_ops | _CONV_OPS | _LINEAR_OPS | {_aten.mul.Tensor}
# Every op a config can quantize (matmul only by an explicit scope).
quantizable_ops: frozenset[Any] = default_quantizable_ops | {_aten.matmul.default}

_EPS = 2**-12


@dataclass
class _X86InductorQuantizationAnnotation(QuantizationAnnotation):
    """An annotation that also records whether the node ends a quantized pattern (its
    consumers may then run on int8 too)."""

    _is_output_of_quantized_pattern: bool = False


# ---------------------------------------------------------------------------------------------
# Configs


@functools.lru_cache
def get_default_x86_inductor_quantization_config(
    is_qat: bool = False, is_dynamic: bool = False, reduce_range: bool = False
) -> QuantizationConfig:
    """uint8 activations (``[0, 127]`` with ``reduce_range``, for CPUs without VNNI), int8
    per-channel symmetric weights ``[-128, 127]``, float bias.

    Observers (PTQ, static): activations use
    :class:`~fxquant.observers.greedy_histogram.GreedyHistogramObserver` (torchao's range
    search, bit for bit: it keeps the outlier features of transformer LayerNorm outputs,
    which the exact least-error search of :class:`~fxquant.observers.HistogramObserver`
    trims — MiniLM-L6 static sentence-embedding cosine 0.9908 with that one, 0.9942 with
    this, torchao 0.9937); weights use
    :class:`~fxquant.pt2e.quantizer.output_aware_observer.PerChannelOutputMSEObserver`, which
    chooses each output channel's clipping range to minimise the error of the *layer's
    output* given the input statistics seen in calibration — beyond upstream, whose
    min/max weights lose the most accuracy on BN-folded CNN weights (EfficientNet-Lite0:
    18.5 dB logits SQNR from weights alone with min/max, 24 dB with this observer; with
    int8 activations too, 17.2 dB → 20.4 dB). On MiniLM-L6 static it adds a little
    (0.9939 → 0.9942). Dynamic (activations quantized per call, so the calibration inputs
    are not what the weights will meet) uses upstream's per-channel min/max weights: there
    the search measured no gain (MiniLM-L6 0.9924–0.9930 against 0.9926–0.9930 with
    min/max, within the noise of the held-out set).
    QAT: fused moving-average fake-quantizers. Dynamic: activation parameters computed per
    call (placeholder observer; a moving-average fake-quantizer in QAT).
    """
    act_args: dict[str, Any] = {"eps": _EPS}
    act_ctr: ObserverOrFakeQuantizeConstructor
    if is_qat and is_dynamic:
        act_ctr = FakeQuantize
        act_args["observer"] = MovingAverageMinMaxObserver.with_args(averaging_constant=1)
    elif is_qat:
        act_ctr = FusedMovingAvgObsFakeQuantize
    else:
        act_ctr = PlaceholderObserver if is_dynamic else GreedyHistogramObserver
    act = QuantizationSpec(
        dtype=torch.uint8,
        quant_min=0,
        quant_max=127 if reduce_range else 255,
        qscheme=torch.per_tensor_affine,
        is_dynamic=is_dynamic,
        observer_or_fake_quant_ctr=act_ctr.with_args(**act_args),
    )
    weight_args: dict[str, Any] = {"eps": _EPS}
    weight_ctr: ObserverOrFakeQuantizeConstructor
    if is_qat:
        weight_ctr = FusedMovingAvgObsFakeQuantize
        weight_args["observer"] = MovingAveragePerChannelMinMaxObserver
    elif is_dynamic:  # the output-aware search measured no gain here (see above)
        weight_ctr = PerChannelMinMaxObserver
    else:
        weight_ctr = PerChannelOutputMSEObserver
    weight = QuantizationSpec(
        dtype=torch.int8,
        quant_min=-128,
        quant_max=127,
        qscheme=torch.per_channel_symmetric,
        ch_axis=0,  # output channels of conv (O, I, kh, kw) and linear (O, I) weights
        is_dynamic=False,
        observer_or_fake_quant_ctr=weight_ctr.with_args(**weight_args),
    )
    return QuantizationConfig(act, act, weight, None, is_qat)


@functools.lru_cache
def get_x86_inductor_linear_dynamic_fp16_config() -> QuantizationConfig:
    """float16 weights for linear (``fp32 input × fp16→fp32 weight → fp32 output``);
    activations stay float."""
    weight = QuantizationSpec(dtype=torch.float16, observer_or_fake_quant_ctr=PlaceholderObserver)
    return QuantizationConfig(None, None, weight, None)


# ---------------------------------------------------------------------------------------------
# Filters (one per configuration scope)


def _create_module_name_filter(module_name: str) -> FilterFn:
    """All nodes of the pattern come from the submodule ``module_name``."""
    in_module = get_module_name_filter(module_name)
    return lambda nodes: all(in_module(n) for n in nodes)


def _create_operator_type_filter(operator_type: Any) -> FilterFn:
    """Exactly one node of the pattern calls ``operator_type``."""

    def operator_type_filter(nodes: list[Node]) -> bool:
        count = sum(n.target == operator_type for n in nodes)
        if count > 1:
            raise NotImplementedError(f"several nodes of one pattern call {operator_type}")
        return count == 1

    return operator_type_filter


def _global_config_filter(nodes: list[Node]) -> bool:
    """Exactly one node of the pattern is an op the global config quantizes."""
    count = sum(n.target in default_quantizable_ops for n in nodes)
    if count > 1:
        raise NotImplementedError("several nodes of one pattern are default-quantizable ops")
    return count == 1


def _module_function_to_aten_operator() -> dict[Any, Any]:
    table: list[tuple[list[Any], Any]] = [
        ([nn.Conv1d, F.conv1d], _aten.conv1d.default),
        ([nn.Conv2d, F.conv2d], _aten.conv2d.default),
        ([nn.Linear, F.linear], _aten.linear.default),
        ([nn.MaxPool2d, F.max_pool2d], _aten.max_pool2d.default),
        ([torch.cat], _aten.cat.default),
        ([nn.AvgPool2d, F.avg_pool2d], _aten.avg_pool2d.default),
        ([nn.AdaptiveAvgPool2d, F.adaptive_avg_pool2d], _aten.adaptive_avg_pool2d.default),
        ([torch.flatten], _aten.flatten.using_ints),
        ([torch.matmul], _aten.matmul.default),
        ([torch.mul], _aten.mul.Tensor),
    ]
    return {source: op for sources, op in table for source in sources}


# ---------------------------------------------------------------------------------------------
# Annotation state helpers


def _is_annotated(node: Node) -> bool:
    annotation = get_annotation(node)
    return annotation is not None and annotation._annotated


def _skip_annotate(nodes: list[Node], filter_fn: FilterFn) -> bool:
    return any(_is_annotated(n) for n in nodes) or not filter_fn(nodes)


def _is_quantized_pattern_output(node: Node) -> bool:
    return bool(getattr(get_annotation(node), "_is_output_of_quantized_pattern", False))


def _set(node: Node, **fields: Any) -> None:
    node.meta[QUANT_ANNOTATION_KEY] = _X86InductorQuantizationAnnotation(_annotated=True, **fields)


def _annotate_nodes_not_quantize(nodes: list[Node]) -> None:
    """Claim ``nodes`` without quantizing them (their scope's config is None)."""
    for node in nodes:
        _set(node)


def _sole_user(node: Node, targets: frozenset[Any]) -> Node | None:
    if len(node.users) != 1:
        return None
    user = next(iter(node.users))
    return user if user.op == "call_function" and user.target in targets else None


def _other_operand(binary: Node, operand: Node) -> Node | None:
    """The other tensor operand of a binary node that consumes ``operand``."""
    a, b = binary.args[0], binary.args[1]
    if a is operand and isinstance(b, Node):
        return b
    if b is operand and isinstance(a, Node):
        return a
    return None


@dataclass(frozen=True, kw_only=True)
class _FusedPattern:
    """A conv/linear with its post-ops: ``body`` runs from the op to the pattern's output."""

    op: Node
    body: list[Node]  # op, [QAT: rescale, bias add, batch_norm], [binary], [unary]
    binary: Node | None = None
    extra_input: Node | None = None  # the binary op's other operand
    is_qat_bn: bool = False


def _fused_patterns(gm: GraphModule, ops: frozenset[Any], *, binary: bool, unary: bool) -> list[_FusedPattern]:
    """Every ``op [→ QAT bn] [→ add] [→ unary]`` chain in ``gm`` with exactly the requested
    post-ops, each intermediate node having a single user."""
    found = []
    for op in gm.graph.nodes:
        if op.op != "call_function" or op.target not in ops:
            continue
        body = (_conv_bn_chain(op) if op.target in _CONV_OPS else None) or [op]
        pattern = _FusedPattern(op=op, body=list(body), is_qat_bn=len(body) > 1)
        if binary:
            add = _sole_user(body[-1], _ADD_OPS)
            extra = _other_operand(add, body[-1]) if add is not None else None
            if add is None or extra is None or extra is body[-1]:
                continue
            pattern = _FusedPattern(op=op, body=[*body, add], binary=add, extra_input=extra, is_qat_bn=pattern.is_qat_bn)
        if unary:
            post_ops = _RELU_OPS if binary else _UNARY_POST_OPS
            post = _sole_user(pattern.body[-1], post_ops)
            if post is None:
                continue
            pattern.body.append(post)
        found.append(pattern)
    return found


# ---------------------------------------------------------------------------------------------
# The quantizer


@dataclass
class _CurrentQuantizationMode:
    """QAT or not, static or dynamic, as fixed by the configs set so far (None: not yet)."""

    qat_state: bool | None
    dynamic_state: bool | None


class X86InductorQuantizer(Quantizer):
    """Annotates a captured graph with the x86 Inductor int8 recipe (see module docs)."""

    module_function_to_aten_operator_type = _module_function_to_aten_operator()

    def __init__(self) -> None:
        super().__init__()
        self.global_config: QuantizationConfig | None = None
        self.operator_type_qconfig: dict[Any, QuantizationConfig | None] = {}
        self.module_name_qconfig: dict[str, QuantizationConfig | None] = {}

    # -- configuration ---------------------------------------------------------------------

    def _get_current_quantization_mode(self) -> _CurrentQuantizationMode:
        mode = _CurrentQuantizationMode(qat_state=None, dynamic_state=None)
        configs = [*self.module_name_qconfig.values(), *self.operator_type_qconfig.values(), self.global_config]
        for config in configs:
            if config is None:
                continue
            mode.qat_state = config.is_qat if mode.qat_state is None else mode.qat_state
            act = config.input_activation
            if act is not None and mode.dynamic_state is None:
                mode.dynamic_state = act.is_dynamic
        return mode

    def _need_skip_config(self, quantization_config: QuantizationConfig | None) -> bool:
        """Whether ``quantization_config`` would mix QAT with PTQ or dynamic with static
        quantization (warns and returns True)."""
        if quantization_config is None:
            return False
        mode = self._get_current_quantization_mode()
        skip = False
        if mode.qat_state is not None and mode.qat_state != quantization_config.is_qat:
            warnings.warn("X86InductorQuantizer: mixing QAT and non-QAT quantization configs is not supported", stacklevel=3)
            skip = True
        act = quantization_config.input_activation
        if mode.dynamic_state is not None and act is not None and mode.dynamic_state != act.is_dynamic:
            warnings.warn("X86InductorQuantizer: mixing dynamic and static quantization configs is not supported", stacklevel=3)
            skip = True
        return skip

    def set_global(self, quantization_config: QuantizationConfig | None) -> X86InductorQuantizer:
        """The config for every default-quantizable op not covered by a narrower scope."""
        if self._need_skip_config(quantization_config):
            warnings.warn("X86InductorQuantizer: skipped the global quantization config", stacklevel=2)
            return self
        self.global_config = quantization_config
        return self

    def get_global_quantization_config(self) -> QuantizationConfig | None:
        if not isinstance(self.global_config, QuantizationConfig):
            warnings.warn(
                "X86InductorQuantizer has no global quantization config; set one with set_global",
                stacklevel=2,
            )
        return self.global_config

    def set_function_type_qconfig(
        self, function_type: Callable[..., Any], quantization_config: QuantizationConfig | None
    ) -> X86InductorQuantizer:
        """The config for calls of ``function_type`` (e.g. ``torch.matmul``, ``F.linear``)."""
        return self._set_source_qconfig(function_type, quantization_config, "function")

    def set_module_type_qconfig(
        self, module_type: type[nn.Module], quantization_config: QuantizationConfig | None
    ) -> X86InductorQuantizer:
        """The config for modules of ``module_type`` (e.g. ``torch.nn.Conv2d``) — applied to
        the aten operator the module calls, wherever it is called from."""
        return self._set_source_qconfig(module_type, quantization_config, "module")

    def set_module_name_qconfig(
        self, module_name: str, quantization_config: QuantizationConfig | None
    ) -> X86InductorQuantizer:
        """The config for the patterns inside the submodule ``module_name`` (e.g.
        ``"blocks.sub"``); ``None`` keeps it in float."""
        if self._need_skip_config(quantization_config):
            warnings.warn(f"X86InductorQuantizer: skipped the quantization config for {module_name}", stacklevel=2)
            return self
        self.module_name_qconfig[module_name] = quantization_config
        return self

    def _set_source_qconfig(self, source: Any, config: QuantizationConfig | None, kind: str) -> X86InductorQuantizer:
        if self._need_skip_config(config):
            warnings.warn(f"X86InductorQuantizer: skipped the quantization config for {source}", stacklevel=3)
            return self
        operator = self.module_function_to_aten_operator_type.get(source)
        if operator is None:
            supported = ", ".join(sorted(getattr(s, "__name__", str(s)) for s in self.module_function_to_aten_operator_type))
            warnings.warn(
                f"X86InductorQuantizer cannot configure {kind} {source}; supported: {supported}",
                stacklevel=3,
            )
            return self
        return self._set_aten_operator_qconfig(operator, config)

    def _set_aten_operator_qconfig(self, operator_type: Any, config: QuantizationConfig | None) -> X86InductorQuantizer:
        if operator_type in quantizable_ops:
            self.operator_type_qconfig[operator_type] = config
        else:
            warnings.warn(f"X86InductorQuantizer cannot quantize operator {operator_type}", stacklevel=3)
        return self

    # -- annotation ------------------------------------------------------------------------

    def annotate(self, model: GraphModule) -> GraphModule:
        """Annotate module-name scopes, then operator types, then the global config (a node
        claimed by one scope is left alone by the next); then give int8-in/int8-out ops
        outputs that share their input's observer."""
        for name, config in self.module_name_qconfig.items():
            self._annotate_with_config(model, config, _create_module_name_filter(name))
        for operator_type, config in self.operator_type_qconfig.items():
            self._annotate_with_config(model, config, _create_operator_type_filter(operator_type))
        if self.global_config is not None:
            self._annotate_with_config(model, self.global_config, _global_config_filter)
        for node in model.graph.nodes:
            self._annotate_output_for_int8_in_int8_out_pattern(node)
        return model

    def _annotate_with_config(self, model: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn) -> None:
        # Step 1: conv/linear patterns (longest first), matmul, mul.
        for ops in (_CONV_OPS, _LINEAR_OPS):
            for binary, unary in ((True, True), (True, False), (False, True), (False, False)):
                for pattern in _fused_patterns(model, ops, binary=binary, unary=unary):
                    self._annotate_fused(pattern, config, filter_fn)
        self._annotate_matmul(model, config, filter_fn)
        self._annotate_mul_tensor(model, config, filter_fn)
        # Step 2: propagate into int8-capable ops fed by quantized patterns, in graph order.
        for node in model.graph.nodes:
            self._annotate_propagation_quantizable_pattern(node, config, filter_fn)

    def _annotate_fused(self, pattern: _FusedPattern, config: QuantizationConfig | None, filter_fn: FilterFn) -> None:
        nodes = pattern.body
        if _skip_annotate(nodes, filter_fn):
            return
        if config is None:
            _annotate_nodes_not_quantize(nodes)
            return
        op, output = pattern.op, nodes[-1]
        _set(op, input_qspec_map=_weighted_op_input_map(op, config), _is_output_of_quantized_pattern=output is op)
        for node in nodes[1:-1]:
            _set(node)  # QAT rescale / bias add / batch norm inside the pattern: not observed
        if pattern.binary is not None and pattern.extra_input is not None:
            # conv: the skip operand is read in int8; linear: kept float (accuracy, as upstream)
            extra_spec = get_input_act_qspec(config) if op.target in _CONV_OPS else None
            binary_map: dict[Node, QuantizationSpecBase | None] = {pattern.extra_input: extra_spec} if extra_spec else {}
            _set(pattern.binary, input_qspec_map=binary_map, _is_output_of_quantized_pattern=pattern.binary is output)
        if output is not op and output is not pattern.binary:
            _set(output, _is_output_of_quantized_pattern=True)
        if pattern.is_qat_bn and config.is_qat:
            # QAT: fake-quantize the pattern's output, as the deployed int8 pattern would
            annotation = get_annotation(output)
            assert annotation is not None
            annotation.output_qspec = get_output_act_qspec(config)
            annotation._is_output_of_quantized_pattern = True  # type: ignore[attr-defined]  # x86 annotation

    def _annotate_matmul(self, model: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn) -> None:
        for node in model.graph.nodes:
            if node.op != "call_function" or node.target != _aten.matmul.default or _skip_annotate([node], filter_fn):
                continue
            if config is None:
                _annotate_nodes_not_quantize([node])
                continue
            input_map = {arg: get_input_act_qspec(config) for arg in node.args if isinstance(arg, Node)}
            _set(node, input_qspec_map=input_map, _is_output_of_quantized_pattern=True)

    def _annotate_mul_tensor(self, model: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn) -> None:
        """mul of two activations of the same shape (an int8 elementwise kernel)."""
        for node in model.graph.nodes:
            if node.op != "call_function" or node.target != _aten.mul.Tensor or _skip_annotate([node], filter_fn):
                continue
            if config is None:
                _annotate_nodes_not_quantize([node])
                continue
            a, b = node.args[0], node.args[1]
            if not (_is_tensor(a) and _is_tensor(b)) or a.meta["val"].shape != b.meta["val"].shape:
                continue
            if _is_constant_node(node):
                continue  # computes a constant (e.g. a QAT BN-scaled weight), not an activation
            spec = get_input_act_qspec(config)
            _set(node, input_qspec_map={a: spec, b: spec}, _is_output_of_quantized_pattern=True)

    def _annotate_propagation_quantizable_pattern(
        self, node: Node, config: QuantizationConfig | None, filter_fn: FilterFn
    ) -> None:
        if node.op != "call_function" or node.target not in propagation_quantizable_ops or _is_annotated(node):
            return
        if _skip_annotate([node], filter_fn):
            return
        if config is None:
            _annotate_nodes_not_quantize([node])
            return
        inputs = node.all_input_nodes if node.target == _aten.cat.default else node.all_input_nodes[:1]
        if not inputs or not all(_is_quantized_pattern_output(n) for n in inputs):
            return
        if node.target in _SHAPE_OPS and not any(_reads_quantized(user, node) for user in node.users):
            return  # nothing downstream reads int8: quantizing here would only add q/dq
        if node.target == _aten.cat.default:
            self._annotate_cat(node, config)
            return
        _set(node, input_qspec_map={inputs[0]: get_input_act_qspec(config)}, _is_output_of_quantized_pattern=True)

    def _annotate_cat(self, cat: Node, config: QuantizationConfig) -> None:
        inputs = [x for x in cat.args[0] if isinstance(x, Node)]  # type: ignore[union-attr]  # cat's first arg is a list
        first = inputs[0]
        shared = SharedQuantizationSpec((first, cat))
        input_map: dict[Node, QuantizationSpecBase | None] = {first: get_input_act_qspec(config)}
        for other in inputs[1:]:
            input_map.setdefault(other, shared)  # cat([x, x]) lists x once
        _set(cat, input_qspec_map=input_map, _is_output_of_quantized_pattern=True)

    def _annotate_output_for_int8_in_int8_out_pattern(self, node: Node) -> None:
        """An int8-in/int8-out op (or shape op) that ends a quantized pattern outputs with its
        first input edge's quantization."""
        if node.target not in propagation_quantizable_ops or not _is_quantized_pattern_output(node):
            return
        annotation = get_annotation(node)
        source = node.all_input_nodes[0]
        if annotation is None or source not in annotation.input_qspec_map:
            return
        annotation.output_qspec = SharedQuantizationSpec((source, node))

    def prepare_obs_or_fq_callback(self, model: GraphModule, edge_or_node_to_obs_or_fq: dict[EdgeOrNode, Any]) -> None:
        """Give each output-aware weight observer the input statistics of its layer (see
        :class:`~fxquant.pt2e.quantizer.output_aware_observer.PerChannelOutputMSEObserver`)."""
        link_output_aware_weight_observers(edge_or_node_to_obs_or_fq)

    def validate(self, model: GraphModule) -> None:
        """Nothing to check: every annotated pattern has an x86 int8 lowering."""


def _weighted_op_input_map(op: Node, config: QuantizationConfig) -> dict[Node, QuantizationSpecBase | None]:
    """Input activation, weight (whatever computes it) and bias edges of a conv/linear."""
    act, weight = op.args[0], op.args[1]
    if not isinstance(act, Node) or not isinstance(weight, Node):
        raise TypeError(f"expected the input and weight of {op.format_node()} to be graph nodes")
    input_map: dict[Node, QuantizationSpecBase | None] = {
        act: get_input_act_qspec(config),
        weight: get_weight_qspec(config),
    }
    bias = op.args[2] if len(op.args) > 2 else None
    if isinstance(bias, Node):
        input_map[bias] = get_bias_qspec(config)
    return input_map


def _reads_quantized(user: Node, source: Node) -> bool:
    """Whether ``user`` was annotated to read ``source`` quantized (conv/linear/matmul/mul
    patterns are annotated before propagation), or propagates quantization itself."""
    annotation = get_annotation(user)
    if annotation is not None and annotation.input_qspec_map.get(source) is not None:
        return True
    return user.op == "call_function" and user.target in int8_in_int8_out_ops


def _is_tensor(arg: object) -> bool:
    return isinstance(arg, Node) and isinstance(arg.meta.get("val"), torch.Tensor)
