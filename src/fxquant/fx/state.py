"""What prepare_fx leaves on the observed model for convert_fx."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch.fx import GraphModule

from fxquant.fx.custom_module import CustomModuleSites
from fxquant.qconfig.qconfig import QConfigAny

__all__ = ["FX_STATE_META_KEY", "FxObservedState", "observed_state"]

FX_STATE_META_KEY = "fxquant_fx_observed"


@dataclass
class FxObservedState:
    """``weighted_qconfigs``: qconfig of each quantized conv/linear module (by name), whose
    weight convert observes; ``left_in_float``: node name → why prepare left it in float;
    the model inputs that arrive quantized and the outputs that stay quantized; the custom
    modules; the standalone modules (module path → their quantized input/output indexes);
    the input-weight equalization sites (see :mod:`fxquant.fx.equalization`)."""

    is_qat: bool
    weighted_qconfigs: dict[str, QConfigAny] = field(default_factory=dict)
    left_in_float: dict[str, str] = field(default_factory=dict)
    preserved_attributes: list[str] = field(default_factory=list)
    input_quantized_indexes: list[int] = field(default_factory=list)
    output_quantized_indexes: list[int] = field(default_factory=list)
    custom_modules: CustomModuleSites = field(default_factory=CustomModuleSites)
    standalone_modules: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    equalization: dict[str, tuple[str, Any]] = field(default_factory=dict)


def observed_state(model: object) -> FxObservedState:
    """The state prepare_fx stored on ``model``; a clear error for anything else."""
    state = model.meta.get(FX_STATE_META_KEY) if isinstance(model, GraphModule) else None
    if not isinstance(state, FxObservedState):
        raise TypeError(
            f"convert_fx expects the model returned by prepare_fx / prepare_qat_fx, got "
            f"{type(model).__name__}; run prepare_fx first (and calibrate the result)"
        )
    return state
