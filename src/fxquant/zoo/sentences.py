"""Real English sentences for calibrating and evaluating text models, available offline.

The sentences live in ``data/sentences.txt`` next to this module (390 of them, 3 to ~120
words), frozen so results never change with installed packages. They are human-written prose
from four kinds of source, recorded per line and in the file's header: opening sentences of
public-domain books and documents, the Python Language Reference shipped with the standard
library, numpy docstrings, scikit-learn's dataset descriptions, and the all-MiniLM-L6-v2
model card.

The ``"calibration"`` split is the even-numbered lines of the file and ``"holdout"`` the
odd-numbered ones (the file is deduplicated), so the two never share a sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import torch

__all__ = [
    "SENTENCE_SPLITS",
    "SourcedSentence",
    "real_sentences",
    "sentence_pool",
]

SENTENCE_SPLITS: tuple[str, ...] = ("calibration", "holdout")

_DATA_FILE = "sentences.txt"
# Mixed with the user's seed so each split gets its own random order.
_SPLIT_STREAM = {"calibration": 0x5E47_CA1B, "holdout": 0x5E47_401D}


@dataclass(frozen=True, kw_only=True)
class SourcedSentence:
    """One sentence of the bundled corpus and where it comes from."""

    text: str
    source: str


@cache
def _corpus() -> tuple[SourcedSentence, ...]:
    path = resources.files("fxquant.zoo").joinpath("data", _DATA_FILE)
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        source, sep, text = line.partition("\t")
        if not sep or not text:
            raise RuntimeError(f"malformed line in fxquant/zoo/data/{_DATA_FILE}: {line!r}")
        records.append(SourcedSentence(text=text, source=source))
    return tuple(records)


def _check_split(split: str) -> None:
    if split not in _SPLIT_STREAM:
        raise ValueError(f"split must be one of {SENTENCE_SPLITS}, got {split!r}")


def sentence_pool(split: str = "calibration") -> tuple[SourcedSentence, ...]:
    """Every sentence of ``split``, in file order, with its source.

    Raises:
        ValueError: ``split`` is not ``"calibration"`` or ``"holdout"``.
    """
    _check_split(split)
    return _corpus()[SENTENCE_SPLITS.index(split) :: 2]


def real_sentences(n: int, *, split: str = "calibration", seed: int = 0) -> list[str]:
    """``n`` distinct real English sentences from ``split``, in a seeded random order.

    Deterministic for a given ``(split, seed)``; the first ``k`` sentences do not depend on
    ``n``. ``"calibration"`` and ``"holdout"`` never share a sentence, so a text model can be
    calibrated on one and measured on the other. Works offline.

    Example::

        >>> from fxquant.zoo.sentences import real_sentences
        >>> calib = real_sentences(32, split="calibration")
        >>> held_out = real_sentences(64, split="holdout")
        >>> set(calib).isdisjoint(held_out)
        True

    Raises:
        ValueError: bad ``split``, or ``n`` negative or larger than the split
            (:func:`sentence_pool` gives its size).
    """
    pool = sentence_pool(split)
    if not 0 <= n <= len(pool):
        raise ValueError(
            f"n must be in [0, {len(pool)}] (the size of the {split!r} split), got {n}"
        )
    gen = torch.Generator().manual_seed((seed * 1_000_003 + _SPLIT_STREAM[split]) % 2**63)
    order = torch.randperm(len(pool), generator=gen)[:n].tolist()
    return [pool[i].text for i in order]
