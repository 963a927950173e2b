"""Weight-only quantized ``Embedding`` and ``EmbeddingBag`` (8-bit ``quint8`` and 4-bit
``quint4x2`` rows, one float scale and zero point per row).

Rows are packed by ``torch.ops.quantized.embedding_bag_prepack``; lookups run
``embedding_byte`` / ``embedding_4bit`` and ``embedding_bag_byte`` / ``embedding_bag_4bit``
and return float tensors. State dict layout (upstream's)::

    <prefix>_packed_params.dtype            torch.quint8 or torch.quint4x2
    <prefix>_packed_params._packed_weight   the quantized weight
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fxquant.nn.packed_call import packed_kernel
from fxquant.nn.quantized.utils import (
    FromFloatError,
    quantize_weight,
    repr_without_packed_params,
    require_type,
)
from fxquant.qconfig.defaults import float_qparams_weight_only_qconfig

__all__ = ["Embedding", "EmbeddingBag", "EmbeddingPackedParams"]

_EMBEDDING_DTYPES = (torch.quint8, torch.quint4x2)
_EMBEDDING_BYTE = packed_kernel(torch.ops.quantized.embedding_byte.default)
_EMBEDDING_4BIT = packed_kernel(torch.ops.quantized.embedding_4bit.default)
_EMBEDDING_BAG_BYTE = packed_kernel(torch.ops.quantized.embedding_bag_byte.default)
_EMBEDDING_BAG_4BIT = packed_kernel(torch.ops.quantized.embedding_bag_4bit.default)


def _check_dtype(dtype: torch.dtype, what: str) -> None:
    if dtype not in _EMBEDDING_DTYPES:
        raise NotImplementedError(
            f"{what} supports torch.quint8 and torch.quint4x2 weights, got {dtype}"
        )


def _empty_rowwise_weight(num_embeddings: int, embedding_dim: int, dtype: torch.dtype) -> Tensor:
    return torch._empty_per_channel_affine_quantized(
        [num_embeddings, embedding_dim],
        scales=torch.ones(num_embeddings, dtype=torch.float),
        zero_points=torch.zeros(num_embeddings, dtype=torch.float),
        axis=0,
        dtype=dtype,
    )


class EmbeddingPackedParams(nn.Module):
    """Holds an embedding table packed for the quantized lookup kernels."""

    _version = 1

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype = torch.quint8) -> None:
        super().__init__()
        _check_dtype(dtype, "EmbeddingPackedParams")
        self.dtype = dtype
        self.set_weight(_empty_rowwise_weight(num_embeddings, embedding_dim, dtype))

    def set_weight(self, weight: Tensor) -> None:
        """Pack a row-wise quantized weight."""
        self._packed_weight = torch.ops.quantized.embedding_bag_prepack(weight)

    def _weight(self) -> Tensor:
        return torch.ops.quantized.embedding_bag_unpack(self._packed_weight)

    def forward(self, x: Tensor) -> Tensor:
        return x

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "dtype"] = self.dtype
        destination[prefix + "_packed_weight"] = self._weight()

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        self.dtype = state_dict.pop(prefix + "dtype")
        self.set_weight(state_dict.pop(prefix + "_packed_weight"))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, False, missing_keys, unexpected_keys, error_msgs
        )

    def __repr__(self) -> str:
        return repr(self._weight())


def _embedding_weight_observer(mod: Any, cls_name: str) -> Any:
    """The weight observer ``from_float`` uses, validated: float-qparams per row, 8 or 4 bit."""
    if hasattr(mod, "weight_fake_quant"):
        observer = mod.weight_fake_quant
    else:
        qconfig = getattr(mod, "qconfig", None)
        if not hasattr(mod, "qconfig"):
            raise FromFloatError(
                f"{cls_name}.from_float: {type(mod).__name__} has no qconfig; use "
                f"float_qparams_weight_only_qconfig"
            )
        if qconfig is not None and qconfig.weight is not None:
            observer = qconfig.weight()
        else:
            observer = float_qparams_weight_only_qconfig.weight()
    if observer.qscheme != torch.per_channel_affine_float_qparams:
        raise FromFloatError(
            f"{cls_name} quantization needs per-row float qparams "
            f"(float_qparams_weight_only_qconfig), got qscheme {observer.qscheme}"
        )
    if observer.dtype not in _EMBEDDING_DTYPES:
        raise FromFloatError(
            f"{cls_name} supports torch.quint8 and torch.quint4x2 weights, got {observer.dtype}"
        )
    return observer


class Embedding(nn.Module):
    """Quantized ``nn.Embedding``: integer indices in, float rows out.

    >>> m = Embedding(10, 12)
    >>> m(torch.tensor([1, 2, 9])).shape
    torch.Size([3, 12])
    """

    _version = 1

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: Tensor | None = None,
        dtype: torch.dtype = torch.quint8,
    ) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.dtype = dtype
        if _weight is None:
            qweight = _empty_rowwise_weight(num_embeddings, embedding_dim, torch.quint8)
        elif list(_weight.shape) != [num_embeddings, embedding_dim]:
            raise ValueError(
                f"{self._get_name()}: weight shape {list(_weight.shape)} does not match "
                f"[num_embeddings, embedding_dim] = {[num_embeddings, embedding_dim]}"
            )
        else:
            qweight = _weight
        self._packed_params = EmbeddingPackedParams(num_embeddings, embedding_dim, dtype)
        self._packed_params.set_weight(qweight)

    def forward(self, indices: Tensor) -> Tensor:
        packed = self._packed_params._packed_weight
        if self.dtype == torch.quint4x2:
            return _EMBEDDING_4BIT(packed, indices)
        return _EMBEDDING_BYTE(packed, indices)

    def _get_name(self) -> str:
        return "QuantizedEmbedding"

    def __repr__(self) -> str:
        return repr_without_packed_params(self, EmbeddingPackedParams)

    def extra_repr(self) -> str:
        return (
            f"num_embeddings={self.num_embeddings}, embedding_dim={self.embedding_dim}, "
            f"dtype={self._packed_params.dtype}, qscheme={self.weight().qscheme()}"
        )

    def set_weight(self, w: Tensor) -> None:
        """Re-pack a row-wise quantized weight."""
        self._packed_params.set_weight(w)

    def weight(self) -> Tensor:
        """The quantized weight (unpacked)."""
        return self._packed_params._weight()

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> Any:
        """Quantize a float ``Embedding`` (or QAT ``Embedding``) with its qconfig's weight
        observer, which must be per-row float-qparams (``float_qparams_weight_only_qconfig``)."""
        if not hasattr(mod, "weight_fake_quant"):
            require_type(mod, nn.Embedding, cls.__name__)
        observer = _embedding_weight_observer(mod, cls.__name__)
        observer(mod.weight)
        qweight = quantize_weight(mod.weight.float(), observer)
        qembedding = Embedding(
            int(mod.num_embeddings), int(mod.embedding_dim), dtype=observer.dtype
        )
        qembedding.set_weight(qweight)
        return qembedding

    @classmethod
    def from_reference(cls, ref_embedding: Any) -> Any:
        """Build from a reference ``Embedding`` (float weight + per-row qparams)."""
        return cls(
            ref_embedding.num_embeddings, ref_embedding.embedding_dim, ref_embedding.padding_idx,
            ref_embedding.max_norm, ref_embedding.norm_type, ref_embedding.scale_grad_by_freq,
            ref_embedding.sparse, ref_embedding.get_quantized_weight(), ref_embedding.weight_dtype,
        )


class EmbeddingBag(Embedding):
    """Quantized ``nn.EmbeddingBag`` (``sum`` pooling in the kernels; ``per_sample_weights``
    supported)."""

    _version = 1

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "sum",
        sparse: bool = False,
        _weight: Tensor | None = None,
        include_last_offset: bool = False,
        dtype: torch.dtype = torch.quint8,
    ) -> None:
        super().__init__(num_embeddings, embedding_dim, _weight=_weight, dtype=dtype)
        self.mode = mode
        self.pruned_weights = False
        self.include_last_offset = include_last_offset
        self.dtype = dtype

    def forward(
        self,
        indices: Tensor,
        offsets: Tensor | None = None,
        per_sample_weights: Tensor | None = None,
        compressed_indices_mapping: Tensor | None = None,
    ) -> Tensor:
        op = _EMBEDDING_BAG_4BIT if self.dtype == torch.quint4x2 else _EMBEDDING_BAG_BYTE
        return op(
            self._packed_params._packed_weight, indices, offsets, False, 0, self.pruned_weights,
            per_sample_weights, compressed_indices_mapping, self.include_last_offset,
        )

    def _get_name(self) -> str:
        return "QuantizedEmbeddingBag"

    @classmethod
    def from_float(cls, mod: Any, use_precomputed_fake_quant: bool = False) -> Any:
        """Quantize a float ``EmbeddingBag`` (or QAT one) with a per-row float-qparams
        weight observer (8-bit or 4-bit)."""
        if not hasattr(mod, "weight_fake_quant"):
            require_type(mod, nn.EmbeddingBag, cls.__name__)
        observer = _embedding_weight_observer(mod, cls.__name__)
        observer(mod.weight)
        qweight = quantize_weight(mod.weight.float(), observer)
        qbag = EmbeddingBag(
            int(mod.num_embeddings), int(mod.embedding_dim),
            max_norm=mod.max_norm, norm_type=mod.norm_type,
            scale_grad_by_freq=mod.scale_grad_by_freq, mode=mod.mode,
            sparse=mod.sparse, include_last_offset=mod.include_last_offset,
            dtype=observer.dtype,
        )
        qbag.set_weight(qweight)
        return qbag

    @classmethod
    def from_reference(cls, ref_embedding_bag: Any) -> Any:
        """Build from a reference ``EmbeddingBag`` (float weight + per-row qparams)."""
        r = ref_embedding_bag
        return cls(
            r.num_embeddings, r.embedding_dim, r.max_norm, r.norm_type, r.scale_grad_by_freq,
            r.mode, r.sparse, r.get_quantized_weight(), r.include_last_offset, r.weight_dtype,
        )
