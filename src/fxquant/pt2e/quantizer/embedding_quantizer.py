"""``EmbeddingQuantizer``: weight-only quantization of embedding tables.

Each row of the table (one token's vector) gets its own float scale and zero point
(``per_channel_affine_float_qparams`` along axis 0, uint8), the scheme of torch's quantized
embedding kernels. The indices and the looked-up vectors are not quantized. Combine it with an
activation quantizer through ``ComposableQuantizer([EmbeddingQuantizer(), ...])``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.fx import GraphModule, Node

from fxquant.observers import PerChannelMinMaxObserver
from fxquant.pt2e.quantizer.quantization_config import (
    OperatorConfig,
    OperatorPatternType,
    QuantizationConfig,
)
from fxquant.pt2e.quantizer.quantizer import QuantizationAnnotation, QuantizationSpec, Quantizer
from fxquant.pt2e.quantizer.utils import is_annotated, set_annotation

__all__ = ["EmbeddingQuantizer", "get_embedding_operators_config"]


_EMBEDDING_WEIGHT = QuantizationSpec(
    dtype=torch.uint8,
    qscheme=torch.per_channel_affine_float_qparams,
    ch_axis=0,
    observer_or_fake_quant_ctr=PerChannelMinMaxObserver.with_args(eps=2**-12),
)


def get_embedding_operators_config() -> OperatorConfig:
    """uint8 weights with per-row float scale/zero point, for ``nn.Embedding`` and
    ``F.embedding``. Configs from separate calls compare equal (one spec object)."""
    operators: list[OperatorPatternType] = [[torch.nn.Embedding], [F.embedding]]
    return OperatorConfig(config=QuantizationConfig(None, None, _EMBEDDING_WEIGHT, None), operators=operators)


class EmbeddingQuantizer(Quantizer):
    """Annotates the weight edge of every ``aten.embedding`` call (see module docs).

    >>> quantizer = ComposableQuantizer([EmbeddingQuantizer(), XNNPACKQuantizer().set_global(config)])
    """

    @classmethod
    def get_supported_quantization_configs(cls) -> list[QuantizationConfig]:
        return list({config for config, _ in cls.get_supported_operators()})

    @classmethod
    def get_supported_operator_for_quantization_config(
        cls, quantization_config: QuantizationConfig
    ) -> list[OperatorPatternType]:
        for config, operators in cls.get_supported_operators():
            if config == quantization_config:
                return operators
        return []

    @classmethod
    def get_supported_operators(cls) -> list[OperatorConfig]:
        return [get_embedding_operators_config()]

    def annotate(self, model: GraphModule) -> GraphModule:
        """Quantize the table of each embedding lookup not already claimed by another
        quantizer."""
        weight_spec = get_embedding_operators_config().config.weight
        assert weight_spec is not None
        for node in model.graph.nodes:
            if node.op != "call_function" or node.target != torch.ops.aten.embedding.default:
                continue
            table = node.args[0]
            if not isinstance(table, Node) or is_annotated(node):
                continue
            set_annotation(node, QuantizationAnnotation(input_qspec_map={table: weight_spec}, _annotated=True))
        return model

    def validate(self, model: GraphModule) -> None:
        """Nothing to check: embedding lookups run on any table quantized this way."""
