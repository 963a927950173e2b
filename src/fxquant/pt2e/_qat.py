"""``prepare_qat_pt2e``: prepare an exported model for quantization-aware training."""

from __future__ import annotations

from torch import nn
from torch.fx import GraphModule

from fxquant.engine.prepare import prepare_annotated
from fxquant.engine.qat_conv_bn import rewrite_conv_bn_for_qat
from fxquant.pt2e.export_utils import _disallow_eval_train, _plain_graph_module
from fxquant.pt2e.quantizer.quantizer import Quantizer

__all__ = ["prepare_qat_pt2e"]


def prepare_qat_pt2e(model: GraphModule, quantizer: Quantizer) -> GraphModule:
    """Annotate ``model`` with ``quantizer`` and insert fake-quantizers for training.

    Each conv followed by a batch norm is first rewritten so that training sees the folded
    weight: the conv weight is scaled by the batch-norm factor ``γ / sqrt(σ² + ε)`` before it
    is fake-quantized and the conv output is rescaled, while the batch norm keeps using and
    updating batch statistics (see :mod:`fxquant.engine.qat_conv_bn`); ``convert_pt2e`` folds
    it into the conv. Returns a plain ``GraphModule`` over the (mutated) graph, as torchao
    does: use the returned model. ``model.train()`` /
    ``model.eval()`` raise on the result: use ``move_exported_model_to_train`` /
    ``move_exported_model_to_eval`` (or ``allow_exported_model_train_eval``).

    >>> m = torch.export.export(float_model.train(), example_inputs).module()
    >>> quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_qat=True))
    >>> m = prepare_qat_pt2e(m, quantizer)
    >>> train(m)                              # the usual training loop
    >>> move_exported_model_to_eval(m)
    >>> m = convert_pt2e(m)
    """
    if not isinstance(model, GraphModule):
        raise TypeError(
            f"prepare_qat_pt2e expects the graph captured by torch.export, got "
            f"{type(model).__name__ if isinstance(model, nn.Module) else type(model)}. Capture it "
            "first: model = torch.export.export(model, example_inputs).module()"
        )
    original_meta = dict(model.meta)
    model = quantizer.transform_for_annotation(model)
    rewrite_conv_bn_for_qat(model)
    quantizer.annotate(model)
    quantizer.validate(model)
    model = _plain_graph_module(prepare_annotated(model, quantizer, is_qat=True))
    model.meta.update({k: v for k, v in original_meta.items() if k not in model.meta})
    return _disallow_eval_train(model)
