"""EmbeddingQuantizer: weight-only per-row quantization of embedding tables."""

from __future__ import annotations

from collections import Counter

import torch
from helpers import assert_sqnr
from torch import nn

from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.pt2e.quantizer import ComposableQuantizer
from fxquant.pt2e.quantizer.embedding_quantizer import (
    EmbeddingQuantizer,
    get_embedding_operators_config,
)
from fxquant.pt2e.quantizer.utils import ANNOTATION_KEY
from fxquant.pt2e.quantizer.xnnpack_quantizer import (
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)

aten = torch.ops.aten
qd = torch.ops.quantized_decomposed


class Embed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.fc = nn.Embedding(20, 8), nn.Linear(8, 4)

    def forward(self, ids):
        return self.fc(self.emb(ids))


IDS = torch.randint(0, 20, (2, 6))


def _export() -> torch.fx.GraphModule:
    torch.manual_seed(0)
    return torch.export.export(Embed().eval(), (IDS,)).module()


def test_config_is_uint8_float_qparams_per_row():
    config, operators = get_embedding_operators_config()
    weight = config.weight
    assert (weight.dtype, weight.qscheme, weight.ch_axis) == (torch.uint8, torch.per_channel_affine_float_qparams, 0)
    assert config.input_activation is None and config.output_activation is None
    assert [nn.Embedding] in operators
    assert EmbeddingQuantizer.get_supported_operator_for_quantization_config(config) == operators


def test_annotates_only_the_table_edge():
    gm = EmbeddingQuantizer().annotate(_export())
    embedding = next(n for n in gm.graph.nodes if n.target == aten.embedding.default)
    annotation = embedding.meta[ANNOTATION_KEY]
    assert list(annotation.input_qspec_map) == [embedding.args[0]]  # not the indices
    assert annotation.output_qspec is None and annotation._annotated
    linear = next(n for n in gm.graph.nodes if n.target == aten.linear.default)
    assert ANNOTATION_KEY not in linear.meta


@torch.no_grad()
def test_composed_with_dynamic_linear_end_to_end():
    gm = _export()
    reference = gm(IDS)
    quantizer = ComposableQuantizer([
        EmbeddingQuantizer(),
        XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)),
    ])
    prepared = prepare_pt2e(gm, quantizer)
    prepared(IDS)
    converted = convert_pt2e(prepared)
    counts = Counter(n.target for n in converted.graph.nodes if n.op == "call_function")
    assert counts[qd.dequantize_per_channel.default] == 2  # the table and the linear weight
    assert counts[qd.choose_qparams.tensor] == 1  # the linear input, per call
    dequant_table = next(n for n in converted.graph.nodes if n.target == aten.embedding.default).args[0]
    assert dequant_table.target == qd.dequantize_per_channel.default and dequant_table.args[-1] == torch.uint8
    assert_sqnr(reference, converted(IDS), min_db=30)
