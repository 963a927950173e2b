"""Which quantized engine packs and runs a kernel: whether oneDNN is available, and a scope
that selects it.

torch's quantized kernels run on the engine their weight was packed for, and the prepack ops
pack for ``torch.backends.quantized.engine``. Code that wants oneDNN for some kernels (the
lowering's convolutions, depthwise convs under the ``x86`` engine) switches the engine for
the pack (or the call) only, with :class:`onednn_engine`.
"""

from __future__ import annotations

import torch

__all__ = ["HAS_ONEDNN", "onednn_engine"]

# oneDNN's quantized engine (quantized::conv2d on oneDNN-packed weights) and its int8 ops
HAS_ONEDNN = "onednn" in torch.backends.quantized.supported_engines and torch.backends.mkldnn.is_available()
# by id: torch.backends.quantized.engine's setter maps the name to the id on every
# assignment (~2 us; the ids are fixed for the process)
_ONEDNN_ENGINE_ID = torch.backends.quantized._get_qengine_id("onednn") if HAS_ONEDNN else -1


class onednn_engine:
    """Select torch's ``onednn`` quantized engine inside the block (restored after, also on
    error). A plain class rather than a generator: it sits on the hot path of lowered convs."""

    __slots__ = ("_previous",)

    def __enter__(self) -> None:
        if not HAS_ONEDNN:
            raise RuntimeError(
                "this torch build has no oneDNN quantized engine "
                f"(supported: {torch.backends.quantized.supported_engines}); check HAS_ONEDNN first"
            )
        self._previous = torch._C._get_qengine()
        torch._C._set_qengine(_ONEDNN_ENGINE_ID)

    def __exit__(self, *exc: object) -> None:
        torch._C._set_qengine(self._previous)
