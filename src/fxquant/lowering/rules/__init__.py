"""The rules of the lowering table, grouped by the ops they lower: ``boundaries``, ``conv``,
``linear``, ``elementwise``, ``folding`` for exported (PT2E) graphs, ``fx_*`` for FX graphs
(``fx_modules``, ``fx_functional``, ``fx_ops``; ``fx_quantized_tensor_ops`` says which torch
ops run on quantized tensors). ``boundaries`` holds the rules both dialects share."""

__all__: list[str] = []
