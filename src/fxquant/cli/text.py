"""Read a text file (one sentence per line) as token-id inputs for a text model.

The tokenizer is given as ``module:callable`` returning a tokenizer object; by default the
zoo's MiniLM-L6 WordPiece tokenizer (``fxquant.zoo:minilm_tokenizer``), whose outputs
``(input_ids, attention_mask)`` are what ``fxquant.zoo:minilm_l6`` takes. The tokenizer is
used as:

- ``tok.encode(sentences, max_length=L)`` if it has an ``encode`` method and is not callable
  (fxquant's zoo tokenizers), or
- ``tok(sentences)`` if it is callable (e.g. a Hugging Face tokenizer), whose result may be a
  tensor, a tuple of tensors, or a mapping (values taken in order, e.g.
  ``input_ids, token_type_ids, attention_mask``).

All sentences are tokenized in one call, so every sample is padded to one common length
(captured graphs have static shapes).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from fxquant.cli.callables import call_ref, parse_callable_ref
from fxquant.cli.errors import BadInputError

__all__ = ["DEFAULT_TOKENIZER", "load_text_file", "read_sentences", "tokenize"]

DEFAULT_TOKENIZER = "fxquant.zoo:minilm_tokenizer"


def read_sentences(path: Path, limit: int | None = None) -> list[str]:
    """The non-blank lines of ``path`` (stripped), at most ``limit`` of them."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise BadInputError(f"{path}: cannot read it as UTF-8 text ({e})") from e
    sentences = [line.strip() for line in lines if line.strip()]
    if not sentences:
        raise BadInputError(f"{path}: the file holds no sentences; write one sentence per line")
    return sentences[:limit] if limit is not None else sentences


def tokenize(tokenizer: Any, sentences: list[str], *, max_length: int, source: str) -> tuple[Tensor, ...]:
    """Token tensors ``[N, T]`` for ``sentences`` (see the module docstring for the protocol)."""
    if callable(tokenizer):
        result = tokenizer(sentences)
    elif hasattr(tokenizer, "encode"):
        try:
            result = tokenizer.encode(sentences, max_length=max_length)
        except ValueError as e:
            raise BadInputError(f"tokenizing {source} failed: {e}") from e
    else:
        raise BadInputError(
            f"the tokenizer ({type(tokenizer).__name__}) is neither callable nor has an "
            "encode(sentences, max_length=...) method"
        )
    if isinstance(result, Mapping):
        result = tuple(result.values())
    if isinstance(result, Tensor):
        result = (result,)
    if not isinstance(result, (tuple, list)):
        raise BadInputError(
            f"the tokenizer returned a {type(result).__name__}; it must return a tensor, a tuple "
            "of tensors or a mapping of tensors"
        )
    tensors = tuple(torch.as_tensor(t) for t in result)
    if any(t.dim() != 2 or t.shape[0] != len(sentences) for t in tensors):
        raise BadInputError(
            f"the tokenizer must return [num_sentences, seq_len] tensors padded to one length, "
            f"got shapes {[tuple(t.shape) for t in tensors]}"
        )
    return tensors


def load_text_file(
    path: Path, *, tokenizer: str | None, max_length: int, limit: int | None = None
) -> tuple[Tensor, ...]:
    """Sentences of ``path`` tokenized with ``tokenizer`` (a ``module:callable``; ``None`` =
    :data:`DEFAULT_TOKENIZER`)."""
    sentences = read_sentences(path, limit)
    tok = call_ref(parse_callable_ref(tokenizer or DEFAULT_TOKENIZER), "tokenizer")
    return tokenize(tok, sentences, max_length=max_length, source=str(path))
