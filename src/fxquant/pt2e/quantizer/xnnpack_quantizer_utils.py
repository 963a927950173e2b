"""The XNNPACK annotators: one function per operator pattern, registered in ``OP_TO_ANNOTATOR``.

Each annotator walks the graph, finds its pattern (matched on aten ops, so it works for
modules and functional calls alike), and writes annotations for a
:class:`~fxquant.pt2e.quantizer.quantization_config.QuantizationConfig`:

=====================  =========================================================================
pattern                what is quantized
=====================  =========================================================================
linear / conv          input activation, weight, bias (float) and the op's output
X_relu                 same, with the output observed after the fused clamp (relu, relu6 /
                       hardtanh), never before it
conv_bn[_relu] (QAT)   conv inputs; output after the batch norm (or its clamp)
add / mul [_relu]      both tensor inputs and the output (after the clamp when fused)
cat                    first input; the other inputs and the output share its observer
adaptive_avg_pool2d    output shares the input's observer
gru_io_only            a GRU's inputs and outputs (its internals stay float)
=====================  =========================================================================

An annotator skips nodes already claimed (``is_annotated``) and nodes rejected by
``filter_fn``, so scoped configs (module name, module type) applied first take precedence.
:func:`propagate_annotation` then lets shape/selection ops (max-pool, view, flatten, ...) share
their input's quantization.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch.fx import GraphModule, Node
from torch.fx.passes.utils.source_matcher_utils import get_source_partitions

from fxquant.pt2e.quantizer.quantization_config import (
    OperatorConfig,
    OperatorPatternType,
    QuantizationConfig,
    get_bias_qspec,
    get_input_act_qspec,
    get_output_act_qspec,
    get_weight_qspec,
)
from fxquant.pt2e.quantizer.quantizer import (
    QuantizationAnnotation,
    QuantizationSpecBase,
    SharedQuantizationSpec,
)
from fxquant.pt2e.quantizer.utils import (
    get_annotation,
    is_annotated,
    mark_nodes_as_annotated,
    set_annotation,
)
from fxquant.pt2e.utils import (
    _conv_bn_chain,
    _is_constant_node,
    _is_conv_node,
    _is_conv_transpose_node,
    _is_float_tensor_node,
    _is_linear_node,
    get_new_attr_name_with_prefix,
)

__all__ = [
    "OP_TO_ANNOTATOR",
    "AnnotatorType",
    "OperatorConfig",
    "OperatorPatternType",
    "QuantizationConfig",
    "get_bias_qspec",
    "get_input_act_qspec",
    "get_output_act_qspec",
    "get_weight_qspec",
    "propagate_annotation",
    "register_annotator",
]

_aten = torch.ops.aten

FilterFn = Callable[[Node], bool]
AnnotatorType = Callable[[GraphModule, "QuantizationConfig | None", "FilterFn | None"], "list[list[Node]] | None"]

# Pattern name ("conv_relu", ...) -> annotator.
OP_TO_ANNOTATOR: dict[str, AnnotatorType] = {}

# Clamps a conv/linear/add/mul can fuse: the output is observed after them.
_CLAMP_OPS = frozenset({_aten.relu.default, _aten.relu_.default, _aten.hardtanh.default, _aten.hardtanh_.default})
_ADD_OPS = frozenset({_aten.add.Tensor, _aten.add_.Tensor})
_MUL_OPS = frozenset({_aten.mul.Tensor, _aten.mul_.Tensor})

# torch.histc, which histogram observers use, fails beyond this magnitude.
_HISTC_UPPER_BOUND = 3.4028235e15

# Ops whose output keeps its input's quantization (they move or select values).
_SHARE_INPUT_QUANTIZATION_OPS = frozenset({
    _aten.relu.default,
    _aten.hardtanh.default,
    _aten.hardtanh_.default,
    _aten.max_pool2d.default,
    _aten.mean.default,
    _aten.mean.dim,
    _aten.permute.default,
    _aten.permute_copy.default,
    _aten.squeeze.dim,
    _aten.squeeze_copy.dim,
    _aten.adaptive_avg_pool2d.default,
    _aten.view_copy.default,
    _aten.view.default,
    _aten.slice_copy.Tensor,
    _aten.flatten.using_ints,
})


def register_annotator(op: str) -> Callable[[AnnotatorType], AnnotatorType]:
    """Register the decorated function as the annotator of pattern ``op``."""

    def decorator(annotator: AnnotatorType) -> AnnotatorType:
        OP_TO_ANNOTATOR[op] = annotator
        return annotator

    return decorator


# ---------------------------------------------------------------------------------------------
# Node helpers


def _calls(gm: GraphModule, targets: frozenset[object]) -> list[Node]:
    return [n for n in gm.graph.nodes if n.op == "call_function" and n.target in targets]


def _sole_user(node: Node, targets: frozenset[object]) -> Node | None:
    """The one user of ``node`` if it calls one of ``targets``, else None."""
    if len(node.users) != 1:
        return None
    user = next(iter(node.users))
    return user if user.op == "call_function" and user.target in targets else None


def _accepted(filter_fn: FilterFn | None, nodes: list[Node]) -> bool:
    return filter_fn is None or all(filter_fn(n) for n in nodes)


# ---------------------------------------------------------------------------------------------
# conv / linear patterns


def _weighted_op_input_map(op: Node, config: QuantizationConfig | None) -> dict[Node, QuantizationSpecBase | None]:
    """Input activation, weight (whatever computes it: a parameter or, in QAT, the
    BN-scaled product) and bias edges of a conv/linear node."""
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


def _annotate_weighted_pattern(
    op: Node, chain: list[Node], config: QuantizationConfig | None, filter_fn: FilterFn | None
) -> list[Node] | None:
    """Annotate ``chain`` (``op`` first, the pattern's output last): inputs on ``op``, the
    output spec on the last node, nothing in between. Returns the partition, or None if
    skipped."""
    if is_annotated(chain) or not _accepted(filter_fn, chain):
        return None
    input_map = _weighted_op_input_map(op, config)
    output = get_output_act_qspec(config)
    set_annotation(op, QuantizationAnnotation(input_qspec_map=input_map, output_qspec=output if len(chain) == 1 else None))
    if len(chain) > 1:
        set_annotation(chain[-1], QuantizationAnnotation(output_qspec=output))
    partition = [*chain, *input_map.keys() - {op.args[0]}]
    mark_nodes_as_annotated(partition)
    return partition


def _annotate_weighted(
    gm: GraphModule,
    config: QuantizationConfig | None,
    filter_fn: FilterFn | None,
    is_op: Callable[[Node], bool],
    *,
    through_bn: bool,
    with_clamp: bool,
) -> list[list[Node]]:
    partitions: list[list[Node]] = []
    for op in list(gm.graph.nodes):
        if not is_op(op):
            continue
        chain = [op]
        if through_bn:
            bn_chain = _conv_bn_chain(op)
            if bn_chain is None:
                continue
            chain = bn_chain
        if with_clamp:
            clamp = _sole_user(chain[-1], _CLAMP_OPS)
            if clamp is None:
                continue
            chain.append(clamp)
        partition = _annotate_weighted_pattern(op, chain, config, filter_fn)
        if partition is not None:
            partitions.append(partition)
    return partitions


@register_annotator("linear")
def _annotate_linear(gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None) -> list[list[Node]]:
    return _annotate_weighted(gm, config, filter_fn, _is_linear_node, through_bn=False, with_clamp=False)


@register_annotator("linear_relu")
def _annotate_linear_relu(gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None) -> list[list[Node]]:
    return _annotate_weighted(gm, config, filter_fn, _is_linear_node, through_bn=False, with_clamp=True)


@register_annotator("conv")
def _annotate_conv(gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None) -> list[list[Node]]:
    return _annotate_weighted(gm, config, filter_fn, _is_conv_node, through_bn=False, with_clamp=False)


@register_annotator("conv_relu")
def _annotate_conv_relu(gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None) -> list[list[Node]]:
    return _annotate_weighted(gm, config, filter_fn, _is_conv_node, through_bn=False, with_clamp=True)


@register_annotator("conv_transpose_relu")
def _annotate_conv_transpose_relu(
    gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None
) -> list[list[Node]]:
    return _annotate_weighted(gm, config, filter_fn, _is_conv_transpose_node, through_bn=False, with_clamp=True)


@register_annotator("conv_bn")
def _annotate_conv_bn(gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None) -> list[list[Node]]:
    """conv + batch norm, for QAT (in PTQ the batch norm is folded before annotation)."""
    return _annotate_weighted(gm, config, filter_fn, _is_conv_node, through_bn=True, with_clamp=False)


@register_annotator("conv_bn_relu")
def _annotate_conv_bn_relu(gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None) -> list[list[Node]]:
    """conv + batch norm + clamp, for QAT."""
    return _annotate_weighted(gm, config, filter_fn, _is_conv_node, through_bn=True, with_clamp=True)


@register_annotator("conv_transpose_bn")
def _annotate_conv_transpose_bn(
    gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None
) -> list[list[Node]]:
    return _annotate_weighted(gm, config, filter_fn, _is_conv_transpose_node, through_bn=True, with_clamp=False)


@register_annotator("conv_transpose_bn_relu")
def _annotate_conv_transpose_bn_relu(
    gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None
) -> list[list[Node]]:
    return _annotate_weighted(gm, config, filter_fn, _is_conv_transpose_node, through_bn=True, with_clamp=True)


# ---------------------------------------------------------------------------------------------
# Binary ops


def _is_large_scalar(node: Node, gm: GraphModule) -> bool:
    """A one-element constant too large for histogram observers (torch.histc)."""
    if node.op != "get_attr":
        return False
    value = _attr(gm, str(node.target))
    return isinstance(value, torch.Tensor) and value.numel() == 1 and abs(float(value)) > _HISTC_UPPER_BOUND


def _attr(gm: GraphModule, qualified_name: str) -> object:
    module_path, _, name = qualified_name.rpartition(".")
    return getattr(gm.get_submodule(module_path), name)


def _binary_input_map(op: Node, gm: GraphModule, config: QuantizationConfig | None) -> dict[Node, QuantizationSpecBase | None] | None:
    """Both tensor operands get the input spec; None (skip the op) when an operand is not a
    float tensor or is a constant too large to observe, or when the op only computes a
    constant (such as the BN-scaled weight of a QAT conv)."""
    if _is_constant_node(op):
        return None
    input_map: dict[Node, QuantizationSpecBase | None] = {}
    for operand in op.args[:2]:
        if not isinstance(operand, Node):
            continue
        if _is_large_scalar(operand, gm) or not _is_float_tensor_node(operand):
            return None
        input_map[operand] = get_input_act_qspec(config)
    return input_map


def _annotate_binary(
    gm: GraphModule,
    config: QuantizationConfig | None,
    filter_fn: FilterFn | None,
    targets: frozenset[object],
    *,
    with_clamp: bool,
) -> list[list[Node]]:
    partitions: list[list[Node]] = []
    for op in _calls(gm, targets):
        chain = [op]
        if with_clamp:
            clamp = _sole_user(op, _CLAMP_OPS)
            if clamp is None:
                continue
            chain.append(clamp)
        if is_annotated(chain) or not _accepted(filter_fn, chain):
            continue
        input_map = _binary_input_map(op, gm, config)
        if input_map is None:
            continue
        output = get_output_act_qspec(config)
        set_annotation(op, QuantizationAnnotation(input_qspec_map=input_map, output_qspec=None if with_clamp else output, _annotated=True))
        if with_clamp:
            set_annotation(chain[-1], QuantizationAnnotation(output_qspec=output, _annotated=True))
        partitions.append([*chain, *input_map])
    return partitions


@register_annotator("add")
def _annotate_add(gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None) -> list[list[Node]]:
    return _annotate_binary(gm, config, filter_fn, _ADD_OPS, with_clamp=False)


@register_annotator("add_relu")
def _annotate_add_relu(gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None) -> list[list[Node]]:
    return _annotate_binary(gm, config, filter_fn, _ADD_OPS, with_clamp=True)


@register_annotator("mul")
def _annotate_mul(gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None) -> list[list[Node]]:
    return _annotate_binary(gm, config, filter_fn, _MUL_OPS, with_clamp=False)


@register_annotator("mul_relu")
def _annotate_mul_relu(gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None) -> list[list[Node]]:
    return _annotate_binary(gm, config, filter_fn, _MUL_OPS, with_clamp=True)


# ---------------------------------------------------------------------------------------------
# Ops sharing one observer among inputs and output


@register_annotator("cat")
def _annotate_cat(gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None) -> list[list[Node]]:
    """The first input is quantized; the other inputs and the output share its observer, so
    concatenation needs no requantization."""
    partitions: list[list[Node]] = []
    for cat in _calls(gm, frozenset({_aten.cat.default})):
        if is_annotated(cat) or not _accepted(filter_fn, [cat]):
            continue
        inputs = [x for x in cat.args[0] if isinstance(x, Node)]  # type: ignore[union-attr]  # cat's first arg is a list
        if not inputs:
            continue
        first = inputs[0]
        shared = SharedQuantizationSpec((first, cat))
        input_map: dict[Node, QuantizationSpecBase | None] = {first: get_input_act_qspec(config)}
        for other in inputs[1:]:
            input_map.setdefault(other, shared)  # cat([x, x]) lists x once
        set_annotation(cat, QuantizationAnnotation(input_qspec_map=input_map, output_qspec=shared, _annotated=True))
        partitions.append([cat])
    return partitions


@register_annotator("adaptive_avg_pool2d")
def _annotate_adaptive_avg_pool2d(
    gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None
) -> list[list[Node]]:
    """Averaging keeps the range: the output shares the input edge's observer, which itself
    shares the producer's output observer when the producer is quantized."""
    partitions: list[list[Node]] = []
    for pool in _calls(gm, frozenset({_aten.adaptive_avg_pool2d.default})):
        if is_annotated(pool) or not _accepted(filter_fn, [pool]):
            continue
        source = pool.args[0]
        assert isinstance(source, Node)
        producer = get_annotation(source)
        quantized_producer = producer is not None and producer._annotated and producer.output_qspec is not None
        input_spec = SharedQuantizationSpec(source) if quantized_producer else get_input_act_qspec(config)
        set_annotation(pool, QuantizationAnnotation(
            input_qspec_map={source: input_spec},
            output_qspec=SharedQuantizationSpec((source, pool)),
            _annotated=True,
        ))
        partitions.append([pool])
    return partitions


@register_annotator("gru_io_only")
def _annotate_gru_io_only(gm: GraphModule, config: QuantizationConfig | None, filter_fn: FilterFn | None = None) -> list[list[Node]]:
    """Quantize a GRU's input, hidden state and outputs; its gates stay in float."""
    found = get_source_partitions(gm.graph, [torch.nn.GRU], filter_fn)
    partitions: list[list[Node]] = []
    for gru in itertools.chain.from_iterable(found.values()):
        inputs, outputs = gru.input_nodes, gru.output_nodes
        if len(inputs) < 2 or len(outputs) != 2 or is_annotated(inputs + outputs):
            continue
        for source in inputs[:2]:
            first_user = next(iter(source.users))
            set_annotation(first_user, QuantizationAnnotation(input_qspec_map={source: get_input_act_qspec(config)}, _annotated=True))
        for out in outputs:
            set_annotation(out, QuantizationAnnotation(output_qspec=get_output_act_qspec(config), _annotated=True))
        mark_nodes_as_annotated(list(gru.nodes))
        partitions.append(list(gru.nodes))
    return partitions


def propagate_annotation(model: GraphModule) -> None:
    """Let each unannotated shape/selection op (max-pool, view, flatten, relu left unfused,
    ...) whose producer has a quantized output share that observer for its input and output,
    so that no requantization happens around it."""
    for node in model.graph.nodes:
        if node.op != "call_function" or node.target not in _SHARE_INPUT_QUANTIZATION_OPS:
            continue
        producer = node.args[0]
        if not isinstance(producer, Node) or is_annotated(node):
            continue
        producer_annotation = get_annotation(producer)
        if producer_annotation is None or producer_annotation.output_qspec is None:
            continue
        shared = SharedQuantizationSpec(producer)
        set_annotation(node, QuantizationAnnotation(input_qspec_map={producer: shared}, output_qspec=shared, _annotated=True))


def _convert_scalars_to_attrs(model: GraphModule) -> GraphModule:
    """Turn the Python-number operands of ``aten.add.Tensor`` / ``aten.mul.Tensor`` into
    tensor constants (``get_attr`` of a new buffer), so they can be annotated like tensors."""
    new_name = get_new_attr_name_with_prefix("_tensor_constant_")
    for node in _calls(model, frozenset({_aten.add.Tensor, _aten.mul.Tensor})):
        new_args = list(node.args)
        for i, arg in enumerate(node.args):
            if isinstance(arg, Node) or not isinstance(arg, (int, float)):
                continue
            name = new_name(model)
            constant = torch.tensor(float(arg))
            model.register_buffer(name, constant)
            with model.graph.inserting_before(node):
                attr = model.graph.get_attr(name)
            fake_mode = getattr(node.meta.get("val"), "fake_mode", None)
            attr.meta["val"] = fake_mode.from_tensor(constant, static_shapes=True) if fake_mode is not None else constant
            new_args[i] = attr
        node.args = tuple(new_args)
    model.recompile()
    return model
