"""QAT modules for dynamic quantization, mirroring ``torch.ao.nn.qat.dynamic``."""

from fxquant.nn.qat.dynamic.linear import Linear

__all__ = ["Linear"]
