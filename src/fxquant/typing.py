"""Type aliases shared across flows."""

from __future__ import annotations

from fxquant.fake_quantize.base import FakeQuantizeBase
from fxquant.observers.base import ObserverBase

__all__ = ["ObserverOrFakeQuantize"]

# Anything the engine can insert on an edge: an observer (PTQ) or a fake-quantizer (QAT).
ObserverOrFakeQuantize = ObserverBase | FakeQuantizeBase
