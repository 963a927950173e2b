"""convert, first half: the reference model. Each quantized conv/linear module becomes its
reference module (float weight plus weight qparams observed now, from ``qconfig.weight()``,
or from the QAT module's weight fake-quantizer), and the engine turns every activation
observer into ``quantized_decomposed`` quantize/dequantize nodes."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.fx import GraphModule

from fxquant.eager.mappings import get_static_quant_module_class
from fxquant.engine.convert import convert_observers_to_qdq
from fxquant.fx.state import FxObservedState
from fxquant.nn.intrinsic import _FusedModule
from fxquant.nn.quantized.reference import weight_qparams_from_observer

__all__ = ["convert_to_reference_graph", "to_reference_module"]


def _float_and_weight_observer(module: nn.Module, qconfig: Any) -> tuple[nn.Module, nn.Module]:
    """The float form of ``module`` and an observer that has seen its (final) weight."""
    fake_quant = getattr(module, "weight_fake_quant", None)
    if fake_quant is not None:  # a QAT module: its fake-quantizer holds the trained ranges
        float_module = module.to_float()  # type: ignore[operator]  # every QAT module has it
        weight_owner = float_module[0] if isinstance(float_module, _FusedModule) else float_module
        fake_quant(weight_owner.weight)  # batch norm folding changed the weight
        return float_module, fake_quant
    weight_owner = module[0] if isinstance(module, _FusedModule) else module
    if qconfig is None or qconfig.weight is None:
        raise ValueError(f"{type(module).__name__} has no weight qconfig; cannot quantize its weight")
    observer = qconfig.weight()
    observer(weight_owner.weight)
    return module, observer


def to_reference_module(module: nn.Module, qconfig: Any) -> nn.Module:
    """The reference module for a float / fused / QAT conv or linear (fused containers keep
    their type with the reference module inside)."""
    float_module, observer = _float_and_weight_observer(module, qconfig)
    inner = float_module[0] if isinstance(float_module, _FusedModule) else float_module
    ref_class: Any = get_static_quant_module_class(type(inner), is_reference=True)
    ref = ref_class.from_float(inner, weight_qparams_from_observer(observer))
    if isinstance(float_module, _FusedModule):
        float_module[0] = ref
        return float_module
    return ref


def _dequantize_quantized_inputs(gm: GraphModule, indexes: list[int]) -> None:
    """Inputs that arrive quantized are dequantized before their float users."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for i in indexes:
        node = placeholders[i]
        with gm.graph.inserting_after(node):
            dq = gm.graph.call_method("dequantize", (node,))
        for user in list(node.users):
            if user is not dq:
                user.replace_input_with(node, dq)


def convert_to_reference_graph(gm: GraphModule, state: FxObservedState) -> GraphModule:
    """Swap weighted modules for reference modules and observers for q/dq, in place."""
    for name, qconfig in state.weighted_qconfigs.items():
        gm.add_submodule(name, to_reference_module(gm.get_submodule(name), qconfig))
    _dequantize_quantized_inputs(gm, state.input_quantized_indexes)
    return convert_observers_to_qdq(gm)
