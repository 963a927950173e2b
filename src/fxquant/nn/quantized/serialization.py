"""Loading whole quantized models with ``torch.load(..., weights_only=True)``.

State dicts of quantized modules load with ``weights_only=True`` as they are. A pickled
*module* names its classes, which ``weights_only`` loading refuses unless they are
allowlisted; the packed weights additionally pickle as ``torch.ScriptObject`` (torch's packed
parameter classes rebuild themselves from the unpacked weights). ``quantized_module_globals()``
lists what a model made of fxquant's quantized modules needs; add your own container classes::

    with torch.serialization.safe_globals([*quantized_module_globals(), MyModel]):
        model = torch.load(path, weights_only=True)
"""

from __future__ import annotations

import importlib

import torch

__all__ = ["quantized_module_globals"]

_PACKAGES = (
    "fxquant.nn.quantized",
    "fxquant.nn.quantized.reference",
    "fxquant.nn.intrinsic.quantized",
)
_EXTRA = (
    ("fxquant.nn.quantized.linear", "LinearPackedParams"),
    ("fxquant.nn.quantized.embedding_ops", "EmbeddingPackedParams"),
)


def quantized_module_globals() -> list[object]:
    """The classes (plus ``torch.ScriptObject`` for packed weights) to allowlist for
    ``torch.load(weights_only=True)`` of a whole model built from fxquant's static quantized,
    reference and fused quantized modules, and the ``torch.nn`` containers they sit in."""
    classes: list[object] = [torch.ScriptObject, torch.nn.Sequential, torch.nn.ModuleList,
                             torch.nn.ModuleDict, torch.nn.Identity, torch.nn.ReLU]
    for package_name in _PACKAGES:
        package = importlib.import_module(package_name)
        classes += [getattr(package, name) for name in package.__all__
                    if isinstance(getattr(package, name), type)]
    for module_name, name in _EXTRA:
        classes.append(getattr(importlib.import_module(module_name), name))
    return classes
