"""Standalone modules in FX graph mode (``PrepareCustomConfig.set_standalone_module_name`` /
``set_standalone_module_class``): a submodule prepared and converted as its own
``GraphModule``, with its own qconfig mapping, example inputs, custom config and backend
config, and called as one opaque module by its parent.

The boundary follows the standalone module's ``input_quantized_indexes`` /
``output_quantized_indexes``: the parent observes the arguments at the quantized input
indexes (and feeds them as quantized tensors after convert); a quantized output arrives
quantized for the parent's ops (dequantized for float users after convert). Other inputs and
outputs are float; the standalone module observes them inside.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.fx import GraphModule, Node

from fxquant.fx.custom_module import annotate_inputs, dequantize_results, feed_quantized_inputs
from fxquant.numerics.ops import quantized_decomposed as qd
from fxquant.qconfig.mapping import QConfigMapping
from fxquant.qconfig.qconfig import QConfigAny

__all__ = [
    "StandaloneModuleError",
    "annotate_standalone_modules",
    "convert_standalone_modules",
    "keep_reference_outputs_quantized",
    "prepare_standalone_modules",
    "quantized_outputs",
    "standalone_module_config",
]

_STORAGE_TO_QDTYPE = {torch.uint8: torch.quint8, torch.int8: torch.qint8, torch.int32: torch.qint32}

# prepare_fx's own recursion: (module, mapping, example inputs, custom config, backend config)
PrepareFn = Callable[[nn.Module, QConfigMapping, tuple[Any, ...], Any, Any], GraphModule]
ConvertFn = Callable[[GraphModule], GraphModule]


class StandaloneModuleError(ValueError):
    """A standalone module that cannot be prepared as configured."""


def standalone_module_config(
    name: str, module: nn.Module, config: Any, parent_qconfig: QConfigAny, parent_backend_config: Any,
) -> tuple[QConfigMapping, tuple[Any, ...], Any, Any] | None:
    """(qconfig mapping, example inputs, prepare custom config, backend config) for the
    submodule ``name``, or None if it is not standalone. The name entry wins over the class
    entry; missing parts fall back as upstream's do (the parent's qconfig for that module as
    global qconfig, an empty custom config, the parent's backend config)."""
    from fxquant.fx.custom_config import PrepareCustomConfig

    entry = config.standalone_module_names.get(name) or config.standalone_module_classes.get(type(module))
    if entry is None:
        return None
    mapping, example_inputs, custom, backend_config = entry
    if isinstance(custom, dict):
        custom = PrepareCustomConfig.from_dict(custom)
    return (
        mapping if mapping is not None else QConfigMapping().set_global(parent_qconfig),
        tuple(example_inputs or ()),
        custom or PrepareCustomConfig(),
        backend_config or parent_backend_config,
    )


def _captured_inputs(gm: GraphModule, targets: list[str], example_inputs: tuple[Any, ...]) -> dict[str, tuple]:
    """The positional arguments each submodule in ``targets`` receives when ``gm`` runs
    ``example_inputs``."""
    captured: dict[str, tuple] = {}
    handles = []
    for target in targets:
        def hook(_module: nn.Module, args: tuple, _target: str = target) -> None:
            captured.setdefault(_target, args)
        handles.append(gm.get_submodule(target).register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            gm(*example_inputs)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def prepare_standalone_modules(
    gm: GraphModule, qconfigs: dict[Node, QConfigAny], config: Any, backend_config: Any,
    example_inputs: tuple[Any, ...], prepare: PrepareFn,
) -> dict[Node, Any]:
    """Prepare every standalone submodule (with a qconfig) of ``gm`` in place; returns each
    standalone node's prepare custom config. Example inputs not given in the config are
    captured by running ``example_inputs`` through ``gm``."""
    found: dict[Node, tuple[QConfigMapping, tuple[Any, ...], Any, Any]] = {}
    for node in gm.graph.nodes:
        if node.op != "call_module" or qconfigs.get(node) is None:
            continue
        module = gm.get_submodule(str(node.target))
        entry = standalone_module_config(str(node.target), module, config, qconfigs[node], backend_config)
        if entry is not None:
            found[node] = entry
    missing = [str(n.target) for n, entry in found.items() if not entry[1]]
    captured = _captured_inputs(gm, missing, example_inputs) if missing else {}
    result: dict[Node, Any] = {}
    for node, (mapping, sm_inputs, custom, sm_backend) in found.items():
        name = str(node.target)
        sm_inputs = sm_inputs or captured.get(name, ())
        if not sm_inputs:
            raise StandaloneModuleError(
                f"standalone module {name} is not called when the example inputs run; give its "
                "example inputs in set_standalone_module_name/_class"
            )
        gm.add_submodule(name, prepare(gm.get_submodule(name), mapping, sm_inputs, custom, sm_backend))
        result[node] = custom
    return result


def annotate_standalone_modules(
    standalone: dict[Node, Any], qconfigs: dict[Node, QConfigAny], arriving_quantized: set[Node]
) -> dict[str, tuple[list[int], list[int]]]:
    """Observe the arguments at each standalone module's quantized input indexes; returns
    module path → (input, output quantized indexes) for convert."""
    sites: dict[str, tuple[list[int], list[int]]] = {}
    for node, custom in standalone.items():
        inputs = list(custom.input_quantized_indexes)
        producers = [node.args[i] for i in inputs if i < len(node.args) and isinstance(node.args[i], Node)]
        annotate_inputs(node, producers, qconfigs[node], arriving_quantized)
        sites[str(node.target)] = (inputs, list(custom.output_quantized_indexes))
    return sites


def quantized_outputs(standalone: dict[Node, Any]) -> list[Node]:
    """Standalone-module nodes whose (single) output stays quantized."""
    return [node for node, custom in standalone.items() if 0 in custom.output_quantized_indexes]


def convert_standalone_modules(
    gm: GraphModule, sites: dict[str, tuple[list[int], list[int]]], convert: ConvertFn
) -> None:
    """Convert each standalone submodule with ``convert`` and make the parent feed it
    quantized tensors / dequantize its quantized output."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or str(node.target) not in sites:
            continue
        inputs, outputs = sites[str(node.target)]
        producers = [node.args[i] for i in inputs if i < len(node.args) and isinstance(node.args[i], Node)]
        feed_quantized_inputs(gm, node, producers)
        gm.add_submodule(str(node.target), convert(gm.get_submodule(str(node.target))))  # type: ignore[arg-type]  # prepared GraphModule
        if 0 in outputs:
            dequantize_results(gm, [node])


def keep_reference_outputs_quantized(gm: GraphModule, indexes: list[int]) -> None:
    """In a reference model, return the outputs at ``indexes`` as quantized tensors (the
    final ``dequantize(quantize(x))`` becomes ``torch.quantize_per_tensor(x)``)."""
    if not indexes:
        return
    output = next(n for n in reversed(gm.graph.nodes) if n.op == "output")
    value = output.args[0]
    values = list(value) if isinstance(value, (tuple, list)) else [value]
    for i in indexes:
        dq = values[i] if i < len(values) else None
        if not (isinstance(dq, Node) and dq.target == qd.dequantize_per_tensor.default):
            continue
        q = dq.args[0]
        assert isinstance(q, Node) and q.target == qd.quantize_per_tensor.default
        x, scale, zero_point, _, _, dtype = q.args
        with gm.graph.inserting_before(output):
            values[i] = gm.graph.call_function(
                torch.quantize_per_tensor, (x, float(scale), int(zero_point), _STORAGE_TO_QDTYPE[dtype])  # type: ignore[arg-type,index]  # q/dq constants
            )
    output.args = (type(value)(values) if isinstance(value, (tuple, list)) else values[0],)
    gm.graph.eliminate_dead_code()
    gm.recompile()
