"""QAT ``Embedding`` and ``EmbeddingBag``: the table goes through a fake-quantizer (per row,
float zero points) in forward."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fxquant.nn.qat.validation import (
    require_float_module,
    require_float_qparams_weight,
    require_qat_qconfig,
)

__all__ = ["Embedding", "EmbeddingBag"]


class Embedding(nn.Embedding):
    """``nn.Embedding`` that looks rows up in ``weight_fake_quant(weight)``.

    The qconfig's weight observer must use ``torch.per_channel_affine_float_qparams``
    (``fxquant.default_embedding_qat_qconfig``).
    """

    _FLOAT_MODULE: type[nn.Module] = nn.Embedding

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: torch.Tensor | None = None,
        device: Any = None,
        dtype: Any = None,
        qconfig: Any = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__(
            num_embeddings, embedding_dim, padding_idx, max_norm, norm_type,
            scale_grad_by_freq, sparse, _weight, **factory_kwargs,
        )  # fmt: skip
        owner = f"qat.{type(self).__name__}"
        require_qat_qconfig(qconfig, owner)
        require_float_qparams_weight(qconfig, owner)
        self.qconfig = qconfig
        self.weight_fake_quant = qconfig.weight(factory_kwargs=factory_kwargs)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.embedding(
            input, self.weight_fake_quant(self.weight), self.padding_idx, self.max_norm,
            self.norm_type, self.scale_grad_by_freq, self.sparse,
        )  # fmt: skip

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        """Build the QAT module from a float ``nn.Embedding`` with a ``qconfig``; it shares
        the float module's table."""
        owner = f"qat.{cls.__name__}"
        qconfig = require_float_module(mod, cls._FLOAT_MODULE, owner)
        require_float_qparams_weight(qconfig, owner)
        assert isinstance(mod, nn.Embedding)
        return cls(
            mod.num_embeddings, mod.embedding_dim, mod.padding_idx, mod.max_norm,
            mod.norm_type, mod.scale_grad_by_freq, mod.sparse, mod.weight, qconfig=qconfig,
        )  # fmt: skip

    def to_float(self) -> nn.Module:
        """A plain ``nn.Embedding`` with a copy of the trained table."""
        embedding = nn.Embedding(
            self.num_embeddings, self.embedding_dim, self.padding_idx, self.max_norm,
            self.norm_type, self.scale_grad_by_freq, self.sparse, None,
        )  # fmt: skip
        embedding.weight = nn.Parameter(self.weight.detach())
        embedding.train(self.training)
        return embedding


class EmbeddingBag(nn.EmbeddingBag):
    """``nn.EmbeddingBag`` that reduces rows of ``weight_fake_quant(weight)``.

    The qconfig's weight observer must use ``torch.per_channel_affine_float_qparams``.
    """

    _FLOAT_MODULE: type[nn.Module] = nn.EmbeddingBag

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        mode: str = "mean",
        sparse: bool = False,
        _weight: torch.Tensor | None = None,
        include_last_offset: bool = False,
        padding_idx: int | None = None,
        qconfig: Any = None,
        device: Any = None,
        dtype: Any = None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__(
            num_embeddings, embedding_dim, max_norm, norm_type, scale_grad_by_freq, mode,
            sparse, _weight, include_last_offset, padding_idx, **factory_kwargs,
        )  # fmt: skip
        owner = f"qat.{type(self).__name__}"
        require_qat_qconfig(qconfig, owner)
        require_float_qparams_weight(qconfig, owner)
        self.qconfig = qconfig
        self.weight_fake_quant = qconfig.weight(factory_kwargs=factory_kwargs)

    def forward(
        self,
        input: torch.Tensor,
        offsets: torch.Tensor | None = None,
        per_sample_weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return F.embedding_bag(
            input, self.weight_fake_quant(self.weight), offsets, self.max_norm,
            self.norm_type, self.scale_grad_by_freq, self.mode, self.sparse,
            per_sample_weights, self.include_last_offset, self.padding_idx,
        )  # fmt: skip

    @classmethod
    def from_float(cls, mod: nn.Module, use_precomputed_fake_quant: bool = False) -> Any:
        """Build the QAT module from a float ``nn.EmbeddingBag`` with a ``qconfig``; it
        shares the float module's table."""
        owner = f"qat.{cls.__name__}"
        qconfig = require_float_module(mod, cls._FLOAT_MODULE, owner)
        require_float_qparams_weight(qconfig, owner)
        assert isinstance(mod, nn.EmbeddingBag)
        return cls(
            mod.num_embeddings, mod.embedding_dim, mod.max_norm, mod.norm_type,
            mod.scale_grad_by_freq, mod.mode, mod.sparse, mod.weight,
            mod.include_last_offset, mod.padding_idx, qconfig=qconfig,
        )  # fmt: skip

    def to_float(self) -> nn.Module:
        """A plain ``nn.EmbeddingBag`` with a copy of the trained table."""
        bag = nn.EmbeddingBag(
            self.num_embeddings, self.embedding_dim, self.max_norm, self.norm_type,
            self.scale_grad_by_freq, self.mode, self.sparse, None, self.include_last_offset,
            self.padding_idx,
        )  # fmt: skip
        bag.weight = nn.Parameter(self.weight.detach())
        bag.train(self.training)
        return bag
