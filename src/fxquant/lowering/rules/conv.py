"""Rules lowering int8 convolutions to oneDNN kernels with pre-packed weights.

* ``conv2d``:  ``q(act?(conv2d(dq(x), dq(W), b)))`` -> ``quantized::conv2d[_relu](x, packed)``
  where ``act`` is relu, or relu6 when the output range makes the fusion exact, called
  through :func:`fxquant.lowering.kernels.conv2d` / ``conv2d_relu`` (the same op, without a
  7 us probe of the packed weight per call). A depthwise conv reading a ``zero_pad`` of its
  input (TF-style asymmetric "same" padding, as before EfficientNet-Lite's strided
  depthwise convs) reads the input itself: the pad becomes the kernel's symmetric padding
  plus zero taps on the side that pads less (bit-exact; saves the padded copy). The same for
  an image stem (at most 4 input channels) reading a padded image.
* ``conv2d_add``: ``q(relu?(conv2d(dq(x), dq(W), b) + dq(y)))`` -> oneDNN's
  ``quantized::conv2d_add[_relu](x, y, packed)`` (see :mod:`fxquant.lowering.kernels`). The
  kernel accumulates into ``y``'s buffer when it is channels-last: ``y`` is cloned first
  unless this is its last reader.
* ``conv1d_3d``: the same pattern around ``conv1d`` / ``conv3d`` ->
  ``onednn.qconv_pointwise`` on the integers (:func:`fxquant.lowering.kernels.onednn_conv`),
  with the input's quantization folded into the packed weight. torch's 3-d oneDNN conv
  takes no relu post-op: a relu/relu6 is fused only when the output's zero point is its
  ``qmin``, where the saturating requantization is the relu.

Why 2-d convolutions go through ``quantized::conv2d`` rather than ``onednn.qconv_pointwise``
(what Inductor emits), measured on EfficientNet-Lite0 at batch 1, one thread: the
quantized-tensor op costs less per call (its packed weight caches the oneDNN primitive; the
functional op rebuilds the primitive descriptor on every call). Running the 16 pointwise
convs whose input zero point is not 0 through ``qconv_pointwise`` (which precomputes the
zero-point compensation) made the model 0.6 ms slower, the 9 fused conv+adds through
``qconv2d_pointwise.binary`` 0.5 ms slower; fbgemm-packed 1x1 convs were no faster either.
"""

from __future__ import annotations

import logging

import torch
from torch.fx import GraphModule, Node

from fxquant.lowering.graph import add_constant, constant_value, qmeta, set_qmeta
from fxquant.lowering.kernels import (
    HAS_ONEDNN,
    conv2d,
    conv2d_add,
    conv2d_add_relu,
    conv2d_relu,
    onednn_conv,
    onednn_conv_relu,
    pack_conv2d,
    pack_onednn_conv,
    zero_pad,
)
from fxquant.lowering.rule import (
    LoweringRule,
    Match,
    arg,
    call_packed_kernel,
    dequantized_input,
    is_activation,
    relu_fusion_is_exact,
    sole_user_is,
)
from fxquant.lowering.weights import quantized_weight

__all__ = ["CONV_RULES"]

A = torch.ops.aten
logger = logging.getLogger(__name__)
_SPATIAL_DIMS = {A.conv1d.default: 1, A.conv2d.default: 2, A.conv3d.default: 3}


def _conv_weight(conv: object, targets: tuple[object, ...], gm: GraphModule) -> Match | None:
    """Input quantized-tensor node, int8 weight, float bias and geometry
    ``(stride, padding, dilation, groups)`` of ``convNd(dq(x), dq(W), b, ...)``."""
    if not isinstance(conv, Node) or conv.target not in targets:
        return None
    dims = _SPATIAL_DIMS[conv.target]  # type: ignore[index]  # checked against targets above
    x = dequantized_input(conv.args[0])
    weight = quantized_weight(gm, arg(conv, 1, "weight"))
    bias_node = arg(conv, 2, "bias")
    bias = constant_value(gm, bias_node)
    x_meta = qmeta(x)
    if x is None or x_meta is None or x_meta.dtype != torch.quint8 or weight is None:
        return None
    if weight.dim() != dims + 2 or (bias_node is not None and bias is None):
        return None
    padding = arg(conv, 4, "padding", [0] * dims)
    if isinstance(padding, str):  # "same" / "valid": not a kernel argument
        return None
    geometry = (
        _ints(arg(conv, 3, "stride", [1] * dims), dims), _ints(padding, dims),
        _ints(arg(conv, 5, "dilation", [1] * dims), dims), int(arg(conv, 6, "groups", 1)),
    )
    return {"x": x, "x_meta": x_meta, "weight": weight, "bias": bias, "geometry": geometry}


def _ints(value: object, dims: int) -> list[int]:
    """A stride/padding/dilation argument as one int per spatial dim."""
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value] * (dims if len(value) == 1 else 1)
    return [int(value)] * dims  # type: ignore[call-overload]  # a plain int in the graph


def _conv2d_operands(conv: object, gm: GraphModule) -> Match | None:
    """Input quantized-tensor node and ``quantized::conv2d`` packed weights of a 2-d conv."""
    m = _conv_weight(conv, (A.conv2d.default,), gm)
    if m is None:
        return None
    m = _absorb_zero_pad(m) or m
    try:
        packed = pack_conv2d(m["weight"], m["bias"], *m["geometry"])
    except RuntimeError as e:  # the kernel library refuses this weight (e.g. asymmetric)
        assert isinstance(conv, Node)
        logger.debug("%s stays in float: %s", conv.format_node(), e)
        return None
    return {"x": m["x"], "packed": packed}


# a conv with at most this many input channels (an image stem) reads its input unpadded too:
# its input is the NCHW image, which the kernel turns channels-last itself; padding it
# first costs a second transposing copy (Lite0's 3x224x224 stem: 0.09-0.14 ms less)
_STEM_CHANNELS = 4


def _absorb_zero_pad(m: Match) -> Match | None:
    """For a depthwise or image-stem conv (no padding of its own, no dilation; see
    ``_STEM_CHANNELS``) reading ``zero_pad(x, pad)`` only, the same conv on ``x`` itself: an
    asymmetric pad ``(lo, hi)`` of a dim is the symmetric padding ``max(lo, hi)`` with
    ``|hi - lo|`` zero taps added to the kernel on the side that pads less (TF-style "same" padding before a strided conv, as in EfficientNet-
    Lite: ``(0, 1)`` around a 3x3 kernel becomes padding 1 around a 4x4 kernel whose first
    row and column are 0). The integer sums are the same, so are the outputs, bit for bit;
    the pad's copy of the activations is saved (at Lite0's shapes the larger depthwise kernel
    costs less than the pad). None when this does not apply."""
    x, weight = m["x"], m["weight"]
    stride, padding, dilation, groups = m["geometry"]
    if not (isinstance(x, Node) and x.op == "call_function" and x.target is zero_pad):
        return None
    if len(x.users) != 1 or any(len(dq.users) != 1 for dq in x.users):  # read by this conv only
        return None
    source, pad = x.args
    if not isinstance(source, Node) or not isinstance(pad, (list, tuple)) or len(pad) != 4:
        return None
    sides = [v for v in pad if isinstance(v, int)]
    if len(sides) != 4:
        return None
    out_channels, in_channels = weight.shape[0], weight.shape[1] * groups
    depthwise = groups > 1 and weight.shape[1] == 1 and out_channels == groups
    if not (depthwise or in_channels <= _STEM_CHANNELS):
        return None
    if any(padding) or any(d != 1 for d in dilation) or min(sides) < 0:
        return None
    if bool(_weight_zero_points(weight).ne(0).any()):  # added taps must be real zeros
        return None
    left, right, top, bottom = sides
    taps = [max(right - left, 0), max(left - right, 0), max(bottom - top, 0), max(top - bottom, 0)]
    ints = torch.nn.functional.pad(weight.int_repr(), taps)  # F.pad order: W front/back, H front/back
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        wider = torch._make_per_channel_quantized_tensor(
            ints, weight.q_per_channel_scales(), weight.q_per_channel_zero_points(), weight.q_per_channel_axis()
        )
    else:
        wider = torch._make_per_tensor_quantized_tensor(ints, weight.q_scale(), weight.q_zero_point())
    geometry = (stride, [max(top, bottom), max(left, right)], dilation, groups)
    return {**m, "x": source, "weight": wider, "geometry": geometry}


def _weight_zero_points(weight: torch.Tensor) -> torch.Tensor:
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return weight.q_per_channel_zero_points()
    return torch.tensor([weight.q_zero_point()])


def _onednn_operands(conv: object, gm: GraphModule) -> Match | None:
    """Input quantized-tensor node and :class:`OnednnConv` of a 1-d or 3-d conv."""
    if not HAS_ONEDNN:
        return None
    m = _conv_weight(conv, (A.conv1d.default, A.conv3d.default), gm)
    if m is None:
        return None
    x_meta = m["x_meta"]
    try:
        packed = pack_onednn_conv(m["weight"], m["bias"], m["geometry"], x_meta.scale, x_meta.zero_point)
    except (RuntimeError, ValueError) as e:  # e.g. asymmetric weights
        assert isinstance(conv, Node)
        logger.debug("%s stays in float: %s", conv.format_node(), e)
        return None
    return {"x": m["x"], "packed": packed}


def _conv_and_activation(node: Node) -> tuple[Node, Node | None] | None:
    """``(conv, act)`` of ``q(act?(conv))`` when each is read by the next only and the
    activation fuses exactly into the kernel's requantization."""
    out = qmeta(node)
    y, act = node.args[0], None
    if out is None or not isinstance(y, Node):
        return None
    if is_activation(y) and sole_user_is(y, node):
        if not relu_fusion_is_exact(y, out):
            return None
        act, y = y, y.args[0]
    if not isinstance(y, Node) or not sole_user_is(y, node if act is None else act):
        return None
    return y, act


def _match_conv(node: Node, gm: GraphModule) -> Match | None:
    found = _conv_and_activation(node)
    operands = None if found is None else _conv2d_operands(found[0], gm)
    return None if operands is None or found is None else {**operands, "relu": found[1] is not None}


def _rewrite_conv(node: Node, m: Match, gm: GraphModule) -> Node:
    kernel = conv2d_relu if m["relu"] else conv2d
    return call_packed_kernel(node, gm, kernel, m["x"], m["packed"], "packed_conv")


def _match_conv_nd(node: Node, gm: GraphModule) -> Match | None:
    found = _conv_and_activation(node)
    if found is None:
        return None
    conv, act = found
    relu = act is not None
    if relu and conv.target == A.conv3d.default:
        # no relu post-op for oneDNN's 3-d conv; with zero_point = qmin the saturating
        # requantization clamps negative values to q(0) already, else the relu stays apart
        out = qmeta(node)
        if out is None or out.zero_point != out.qmin:
            return None
        relu = False
    operands = _onednn_operands(conv, gm)
    return None if operands is None else {**operands, "relu": relu}


def _rewrite_conv_nd(node: Node, m: Match, gm: GraphModule) -> Node:
    out = qmeta(node)
    assert out is not None
    packed = add_constant(gm, "onednn_conv", m["packed"], node)
    kernel = onednn_conv_relu if m["relu"] else onednn_conv
    new = gm.graph.call_function(kernel, (m["x"], packed, out.scale, out.zero_point))
    return set_qmeta(new, out)


def _match_conv_add(node: Node, gm: GraphModule) -> Match | None:
    out = qmeta(node)
    total, reader = node.args[0], node
    if out is None or not isinstance(total, Node) or not HAS_ONEDNN:
        return None
    if total.target == A.relu.default and sole_user_is(total, node):
        reader, total = total, total.args[0]
    if not isinstance(total, Node) or total.target != A.add.Tensor or total.kwargs:
        return None
    if not sole_user_is(total, reader):
        return None
    relu = reader is not node
    for conv, other in (total.args, total.args[::-1]):
        y = dequantized_input(other)
        if y is not None and sole_user_is(conv, total):
            operands = _conv2d_operands(conv, gm)
            if operands is not None:
                fresh = operands["x"] is not y and _read_last_here(y, total, node)
                return {**operands, "y": y, "relu": relu, "overwrite_y": fresh}
    return None


def _read_last_here(y: Node, add: Node, anchor: Node) -> bool:
    """Whether every other reader of ``y`` (directly or through a dequantize) runs before
    ``anchor``: then the kernel may accumulate into ``y``'s buffer."""
    order = {n: i for i, n in enumerate(anchor.graph.nodes)}
    readers = [u for d in y.users for u in (d.users if d.target == A.dequantize.self else [d])]
    return all(u is add or order[u] < order[anchor] for u in readers)


def _rewrite_conv_add(node: Node, m: Match, gm: GraphModule) -> Node:
    out = qmeta(node)
    assert out is not None
    packed = add_constant(gm, "packed_conv", m["packed"], node)
    y = m["y"]
    if not m["overwrite_y"]:  # oneDNN sums into the residual's buffer (channels-last) in place
        y = set_qmeta(gm.graph.call_function(A.clone.default, (y,)), qmeta(y))  # type: ignore[arg-type]  # y is quantized
    kernel = conv2d_add_relu if m["relu"] else conv2d_add
    new = gm.graph.call_function(kernel, (m["x"], y, packed, out.scale, out.zero_point))
    return set_qmeta(new, out)


_QUANTIZE = frozenset({A.quantize_per_tensor.default})

CONV_RULES: tuple[LoweringRule, ...] = (
    LoweringRule(name="conv2d", anchors=_QUANTIZE, match=_match_conv, rewrite=_rewrite_conv,
                 doc="q(act?(conv2d(dq x, dq W))) -> kernels.conv2d[_relu] (quantized::conv2d[_relu])"),
    LoweringRule(name="conv2d_add", anchors=_QUANTIZE, match=_match_conv_add,
                 rewrite=_rewrite_conv_add,
                 doc="q(relu?(conv2d(dq x, dq W) + dq y)) -> quantized::conv2d_add[_relu]"),
    LoweringRule(name="conv1d_3d", anchors=_QUANTIZE, match=_match_conv_nd, rewrite=_rewrite_conv_nd,
                 doc="q(act?(conv1d|conv3d(dq x, dq W))) -> onednn.qconv_pointwise[relu]"),
)
