"""convert, first half: the reference model. Each quantized weighted module becomes its
reference module — the one the ``BackendConfig`` names for its root (float weight plus weight
qparams observed now, from ``qconfig.weight()``, or from the QAT module's weight
fake-quantizer; recurrent modules get one set of qparams per weight), QAT modules left
unquantized become float modules again — and the engine turns
every activation observer into ``quantized_decomposed`` quantize/dequantize nodes (dynamic
observers into choose_qparams → quantize → dequantize)."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.fx import GraphModule

from fxquant.eager.mappings import get_embedding_qat_module_mappings, get_static_quant_module_class
from fxquant.engine.convert import convert_observers_to_qdq
from fxquant.fx.annotate import QUANT_MODE_META_KEY, WEIGHTED_MODULES_META_KEY
from fxquant.fx.module_attributes import detach_swapped_module_attributes
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


def _recurrent_weight_qparams(module: nn.Module, qconfig: Any) -> dict[str, Any]:
    """One qparams entry per weight of an RNN / LSTM / GRU (cell), each observed on its own."""
    if qconfig is None or qconfig.weight is None:
        raise ValueError(f"{type(module).__name__} has no weight qconfig; cannot quantize its weights")
    names = getattr(module, "_flat_weights_names", None) or [
        name for name, _ in module.named_parameters(recurse=False)]
    result: dict[str, Any] = {"is_decomposed": False}
    for name in names:
        if name.startswith("weight"):
            observer = qconfig.weight()
            observer(getattr(module, name))
            result[name] = weight_qparams_from_observer(observer)
    return result


def to_reference_module(module: nn.Module, qconfig: Any, reference_class: Any = None) -> nn.Module:
    """The reference module for a float / fused / QAT weighted module (fused containers keep
    their type with the reference module inside). ``reference_class``: the class the backend
    names for the root module (default: the eager reference mapping)."""
    if isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
        ref_class = reference_class or get_static_quant_module_class(type(module), is_reference=True)
        return ref_class.from_float(module, _recurrent_weight_qparams(module, qconfig))
    float_module, observer = _float_and_weight_observer(module, qconfig)
    inner = float_module[0] if isinstance(float_module, _FusedModule) else float_module
    ref_class = reference_class or get_static_quant_module_class(type(inner), is_reference=True)
    ref = ref_class.from_float(inner, weight_qparams_from_observer(observer))
    if isinstance(float_module, _FusedModule):
        float_module[0] = ref
        return float_module
    return ref


def _qat_modules(gm: GraphModule) -> list[str]:
    """The QAT modules ``gm`` calls (convert swaps each for a reference or float module)."""
    qat_classes = tuple(set(get_embedding_qat_module_mappings().values()))
    return [str(n.target) for n in gm.graph.nodes
            if n.op == "call_module" and isinstance(gm.get_submodule(str(n.target)), qat_classes)]


def _unquantized_qat_modules_to_float(gm: GraphModule, quantized: set[str]) -> None:
    """A QAT module whose weight is not quantized (its op stayed in float, e.g. a conv under
    a dynamic qconfig) becomes its float module again, as upstream's convert does: the
    converted model does not fake-quantize weights."""
    qat_classes = tuple(set(get_embedding_qat_module_mappings().values()))
    for node in gm.graph.nodes:
        if node.op != "call_module" or str(node.target) in quantized:
            continue
        module = gm.get_submodule(str(node.target))
        if isinstance(module, qat_classes):
            gm.add_submodule(str(node.target), module.to_float())


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
    """Swap weighted modules for reference modules and observers for q/dq, in place; each
    swapped module's call node records how it is quantized (``QUANT_MODE_META_KEY``) for
    the lowering. Tensors the graph reads directly from a swapped module (``F.linear(x,
    self.fc.weight)`` next to ``self.fc(x)``) are re-homed first, so they stay readable."""
    weighted = gm.meta.pop(WEIGHTED_MODULES_META_KEY, {})
    detach_swapped_module_attributes(gm, [*state.weighted_qconfigs, *_qat_modules(gm)])
    modes: dict[str, str] = {}
    for name, qconfig in state.weighted_qconfigs.items():
        mode, reference_class = weighted.get(name, (None, None))
        gm.add_submodule(name, to_reference_module(gm.get_submodule(name), qconfig, reference_class))
        if mode is not None:
            modes[name] = mode
    _unquantized_qat_modules_to_float(gm, set(state.weighted_qconfigs))
    for node in gm.graph.nodes:
        if node.op == "call_module" and str(node.target) in modes:
            node.meta[QUANT_MODE_META_KEY] = modes[str(node.target)]
    _dequantize_quantized_inputs(gm, state.input_quantized_indexes)
    return convert_observers_to_qdq(gm)
