"""QAT modules, mirroring ``torch.ao.nn.qat``: float modules whose weights pass through a
fake-quantizer (``qconfig.weight()``) in forward, so training sees the rounding of the
quantized model. ``from_float`` builds one from a float module with a ``qconfig``;
``to_float`` gives the plain float module back.

``fxquant.nn.qat.dynamic`` holds the QAT ``Linear`` for dynamic quantization.
"""

from fxquant.nn.qat import dynamic
from fxquant.nn.qat.conv import Conv1d, Conv2d, Conv3d
from fxquant.nn.qat.embedding_ops import Embedding, EmbeddingBag
from fxquant.nn.qat.linear import Linear
from fxquant.nn.qat.validation import QATModuleError

__all__ = [
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "Embedding",
    "EmbeddingBag",
    "Linear",
    "QATModuleError",
    "dynamic",
]
