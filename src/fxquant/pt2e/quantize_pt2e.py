"""The PT2E entry points: ``prepare_pt2e``, ``prepare_qat_pt2e``, ``convert_pt2e``.

    >>> m = torch.export.export(float_model, example_inputs).module()
    >>> m = prepare_pt2e(m, X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config()))
    >>> for batch in calibration_data:
    ...     m(batch)                      # calibration is just calling the model
    >>> m = convert_pt2e(m)               # q/dq reference model
"""

from __future__ import annotations

from torch import nn
from torch.fx import GraphModule

from fxquant.engine.convert import convert_observers_to_qdq
from fxquant.engine.duplicate_dq import duplicate_dequantize_per_user
from fxquant.engine.fold_bn import fold_bn_into_conv_and_linear
from fxquant.engine.fold_quantize import fold_constant_quantize
from fxquant.engine.prepare import prepare_annotated
from fxquant.engine.qat_conv_bn import fold_conv_bn_qat
from fxquant.pt2e._qat import prepare_qat_pt2e
from fxquant.pt2e.export_utils import _disallow_eval_train, _plain_graph_module
from fxquant.pt2e.quantizer.quantizer import Quantizer

__all__ = ["NotAGraphModuleError", "convert_pt2e", "prepare_pt2e", "prepare_qat_pt2e"]


class NotAGraphModuleError(TypeError):
    """prepare was handed an eager module instead of a captured graph."""


def _require_graph_module(model: nn.Module, fn: str) -> GraphModule:
    if isinstance(model, GraphModule):
        return model
    raise NotAGraphModuleError(
        f"{fn} expects the graph captured by torch.export, got {type(model).__name__}. "
        "Capture it first: model = torch.export.export(model, example_inputs).module()"
    )


def prepare_pt2e(model: GraphModule, quantizer: Quantizer) -> GraphModule:
    """Annotate ``model`` with ``quantizer`` and insert observers for post-training
    quantization. Batch norms following convs/linears are folded first. Returns a plain
    ``GraphModule`` over the (mutated) graph, as torchao does — use the returned model,
    and calibrate it by calling it on representative data."""
    model = _require_graph_module(model, "prepare_pt2e")
    original_meta = dict(model.meta)
    model = quantizer.transform_for_annotation(model)
    fold_bn_into_conv_and_linear(model)
    quantizer.annotate(model)
    quantizer.validate(model)
    model = _plain_graph_module(prepare_annotated(model, quantizer, is_qat=False))
    model.meta.update({k: v for k, v in original_meta.items() if k not in model.meta})
    # .eval()/.train() would change nothing in an exported graph: make them say so
    return _disallow_eval_train(model)


def convert_pt2e(
    model: GraphModule,
    use_reference_representation: bool = False,
    fold_quantize: bool = True,
) -> GraphModule:
    """Turn a calibrated (or QAT-trained) model into the reference quantized model: each
    observer becomes a ``quantized_decomposed`` quantize/dequantize pair, QAT conv-bn patterns
    are folded into plain convs, each dequantize read by several quantized ops is duplicated
    per reader (torchao's rules, :mod:`fxquant.engine.duplicate_dq`), and (``fold_quantize``)
    constant weights are stored quantized. Returns a new plain ``GraphModule`` (``model``'s
    graph is consumed): use the returned model."""
    model = _require_graph_module(model, "convert_pt2e")
    model = _plain_graph_module(model)
    convert_observers_to_qdq(model)
    fold_conv_bn_qat(model)  # QAT conv-bn patterns: BN folded into the quantized weight
    duplicate_dequantize_per_user(model)
    if fold_quantize:
        fold_constant_quantize(model)
    if use_reference_representation:
        from fxquant.engine.reference_representation import rewrite_to_reference_representation

        rewrite_to_reference_representation(model)
    return _disallow_eval_train(model)

