"""Save and load quantized models as one file: a ``torch.export`` program behind a checked
header.

    >>> fxquant.save(convert_pt2e(prepared), "model.fxq", example_inputs=(x,))
    >>> model = fxquant.load("model.fxq")      # any process; the model's class is not needed
    >>> torch.equal(model(x), quantized(x))
    True

File layout (all integers little-endian)::

    b"FXQUANT\\0"                 8 bytes of magic
    header length                 uint32
    header                        canonical JSON (sorted keys, no spaces), see below
    payload                       the bytes torch.export.save writes (a PT2 zip archive)

The header holds the format name and version, the fxquant and torch versions that wrote the
file, what was saved (``graph_module`` or ``exported_program``), the example inputs' shapes
and dtypes, and ``sha256``: the SHA-256 of the header without that field followed by the
payload, so a changed or truncated byte anywhere is refused.

Loading executes no code from the file: before ``torch.export.load`` sees the payload, every
archive entry must be one of the plain kinds torch writes for tensors and graphs (JSON, raw
tensor bytes, and sample inputs that load with ``torch.load(weights_only=True)``); pickled
weights, constants or custom objects are refused, every graph node must call an operator
(``torch.ops.*``, ``_operator.*``, ``math.*``, symbolic-int helpers), and the input guards
(Python source that ``ExportedProgram.module()`` executes) must be plain shape comparisons. The checksum detects accidents, not forgeries: a
file from an untrusted source is only as safe as that scan.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import io
import json
import os
import re
import struct
import zipfile
from typing import Any

import torch
from torch import nn
from torch.export import ExportedProgram
from torch.fx import GraphModule
from torch.utils import _pytree as pytree

import fxquant.numerics.ops  # noqa: F401  (registers the quantized_decomposed ops the graphs call)

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "CorruptFileError",
    "FxquantFileError",
    "IncompatibleVersionError",
    "NotAnFxquantFileError",
    "UnsafeFileError",
    "load",
    "read_header",
    "save",
]

FORMAT_NAME = "fxquant.exported_program"
FORMAT_VERSION = 1
_MAGIC = b"FXQUANT\x00"
_LENGTH = struct.Struct("<I")
_MAX_HEADER_BYTES = 1 << 20
_CHECKSUM_KEY = "sha256"
_KINDS = ("graph_module", "exported_program")


class FxquantFileError(ValueError):
    """A file that :func:`load` refuses."""


class NotAnFxquantFileError(FxquantFileError):
    """The file was not written by :func:`save`."""


class CorruptFileError(FxquantFileError):
    """The file was changed or truncated after it was written."""


class IncompatibleVersionError(FxquantFileError):
    """The file was written in a format (or by a torch) this installation cannot read."""


class UnsafeFileError(FxquantFileError):
    """The payload holds entries whose loading would run pickled code."""


# ---------------------------------------------------------------------------------- saving


def _refuse_lowered(model: nn.Module) -> None:
    """A model lowered to torch's quantized CPU kernels holds packed weights that
    ``torch.export`` cannot serialize: save the converted model and lower after loading."""
    meta = getattr(model, "meta", None)
    if isinstance(meta, dict) and "fxquant_lowering_report" in meta:
        raise FxquantFileError(
            "fxquant.save cannot write a model lowered by fxquant.lowering.lower_to_int8 (its packed "
            "int8 weights are not exportable); save the converted model (the output of convert_pt2e) "
            "and call lower_to_int8 on fxquant.load's result"
        )


def _refuse_prepared(model: nn.Module) -> None:
    """A prepared (calibrating) model holds observers whose data-dependent branches cannot be
    exported: its calibration is saved as a state dict, the quantized model after convert."""
    from fxquant.observers.state import is_activation_post_process

    observer = next((name for name, m in model.named_modules() if is_activation_post_process(m)), None)
    if observer is not None:
        raise FxquantFileError(
            f"fxquant.save cannot write a prepared model (it still holds observers, e.g. "
            f"{observer!r}); save its calibration with torch.save(model.state_dict(), ...) and "
            "load it into a freshly prepared model, or convert it first and save the converted model"
        )


def save(model: nn.Module | ExportedProgram, path: str | os.PathLike[str], *,
         example_inputs: tuple[Any, ...] | None = None) -> None:
    """Write ``model`` (a converted PT2E ``GraphModule``, any exportable module, or an
    ``ExportedProgram``) to ``path`` as one file that :func:`load` reads back.

    A module is re-captured with ``torch.export.export(model, example_inputs)``; without
    ``example_inputs`` they are made (zeros) from the shapes recorded on the graph's
    placeholders, which ``torch.export``-captured graph modules have.

        >>> fxquant.save(quantized, "model.fxq", example_inputs=(torch.randn(1, 3, 224, 224),))
    """
    if isinstance(model, ExportedProgram):
        program, kind = model, "exported_program"
    elif isinstance(model, nn.Module):
        _refuse_lowered(model)
        _refuse_prepared(model)
        inputs = example_inputs if example_inputs is not None else _inputs_from_placeholders(model)
        # compact copies: a view (e.g. data[:8]) would otherwise store its whole base tensor
        inputs = pytree.tree_map(
            lambda t: t.detach().clone() if isinstance(t, torch.Tensor) else t, tuple(inputs)
        )
        program, kind = torch.export.export(_private_copy(model), inputs), "graph_module"
    else:
        raise TypeError(f"fxquant.save expects an nn.Module or an ExportedProgram, got {type(model).__name__}")
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    payload = buffer.getvalue()
    try:  # refuse now what load would refuse later
        _check_payload_is_safe(payload, path)
    except UnsafeFileError as e:
        raise UnsafeFileError(
            f"fxquant.save cannot store this model safely ({e}); save the reference q/dq model "
            "(before lowering to packed kernels) instead"
        ) from e
    header: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "fxquant_version": _fxquant_version(),
        "torch_version": torch.__version__,
        "kind": kind,
        "example_inputs": _describe_inputs(program.example_inputs),
    }
    header[_CHECKSUM_KEY] = _checksum(header, payload)
    header_bytes = _canonical_json(header)
    with open(path, "wb") as f:
        f.write(_MAGIC + _LENGTH.pack(len(header_bytes)) + header_bytes + payload)


def _private_copy(model: nn.Module) -> nn.Module:
    """A deep copy whose nodes own their ``meta["custom"]`` dicts: graph copies share them
    (node meta is copied shallowly), and export tracing writes into them."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, GraphModule):
            for node in module.graph.nodes:
                if isinstance(node.meta.get("custom"), dict):
                    node.meta["custom"] = copy.deepcopy(node.meta["custom"])
    return model


def _inputs_from_placeholders(model: nn.Module) -> tuple[torch.Tensor, ...]:
    if not isinstance(model, GraphModule):
        raise TypeError(f"fxquant.save needs example_inputs to export a {type(model).__name__}")
    inputs = []
    for node in model.graph.find_nodes(op="placeholder"):
        value = node.meta.get("val")
        if not isinstance(value, torch.Tensor) or not all(isinstance(d, int) for d in value.shape):
            raise ValueError(
                f"fxquant.save: placeholder {node.format_node()} records no static tensor shape; "
                "pass example_inputs=(...) as given to torch.export.export"
            )
        inputs.append(torch.zeros(tuple(value.shape), dtype=value.dtype))
    return tuple(inputs)


def _describe_inputs(example_inputs: Any) -> list[dict[str, Any]]:
    """Shapes and dtypes of the example input leaves (args, then kwargs)."""
    if example_inputs is None:
        return []
    leaves = pytree.tree_leaves(example_inputs)
    return [
        {"shape": list(leaf.shape), "dtype": str(leaf.dtype)} if isinstance(leaf, torch.Tensor)
        else {"value": repr(leaf)}
        for leaf in leaves
    ]


def _fxquant_version() -> str:
    import fxquant  # at call time: fxquant's __init__ may be importing this module

    return str(getattr(fxquant, "__version__", "unknown"))


def _canonical_json(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _checksum(header: dict[str, Any], payload: bytes) -> str:
    unsigned = {k: v for k, v in header.items() if k != _CHECKSUM_KEY}
    return hashlib.sha256(_canonical_json(unsigned) + payload).hexdigest()


# --------------------------------------------------------------------------------- loading


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header of an fxquant file (versions, kind, example input shapes), checked for
    format and version but without reading the model."""
    header, _ = _read(path)
    return header


def load(path: str | os.PathLike[str]) -> nn.Module | ExportedProgram:
    """Read a file written by :func:`save`: a ``GraphModule`` for a saved module, an
    ``ExportedProgram`` for a saved program. Refuses (with :class:`FxquantFileError`
    subclasses) files that are not fxquant's, were modified or truncated, come from an
    incompatible format or torch version, or whose payload would unpickle objects.

        >>> model = fxquant.load("model.fxq")
        >>> model(torch.randn(1, 3, 224, 224))
    """
    header, payload = _read(path)
    if header["sha256"] != _checksum(header, payload):
        raise CorruptFileError(
            f"{os.fspath(path)}: checksum mismatch, the file was modified or truncated after "
            "fxquant.save wrote it; save the model again"
        )
    _check_payload_is_safe(payload, path)
    program = torch.export.load(io.BytesIO(payload))
    return program.module() if header["kind"] == "graph_module" else program


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes]:
    name = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(_MAGIC):
        raise NotAnFxquantFileError(f"{name} is not an fxquant model file (no fxquant header); "
                                    "write models with fxquant.save")
    start = len(_MAGIC) + _LENGTH.size
    if len(data) < start:
        raise CorruptFileError(f"{name}: the file is truncated inside its header")
    (length,) = _LENGTH.unpack_from(data, len(_MAGIC))
    if length > _MAX_HEADER_BYTES or start + length > len(data):
        raise CorruptFileError(f"{name}: header length {length} does not fit the file; it is "
                               "truncated or corrupted")
    try:
        header = json.loads(data[start:start + length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFileError(f"{name}: the header is not valid JSON; the file is corrupted") from e
    _check_header(header, name)
    return header, data[start + length:]


def _check_header(header: object, name: str) -> None:
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        found = header.get("format") if isinstance(header, dict) else None
        raise NotAnFxquantFileError(f"{name}: header format {found!r} is not {FORMAT_NAME!r}")
    written_by = (f"fxquant {header.get('fxquant_version')!s} with torch "
                  f"{header.get('torch_version')!s}")
    if header.get("format_version") != FORMAT_VERSION:
        raise IncompatibleVersionError(
            f"{name}: format version {header.get('format_version')!r} (written by {written_by}); "
            f"this fxquant {_fxquant_version()} reads format version {FORMAT_VERSION} only. "
            "Load it with the fxquant version that wrote it, or save the model again"
        )
    file_torch, our_torch = _major_minor(header.get("torch_version")), _major_minor(torch.__version__)
    if file_torch is None or our_torch is None or file_torch[0] != our_torch[0] or file_torch > our_torch:
        raise IncompatibleVersionError(
            f"{name}: written by {written_by}; torch {torch.__version__} cannot read programs "
            "serialized by a newer or different-major torch. Upgrade torch or save the model again"
        )
    for key, kind in (("kind", str), (_CHECKSUM_KEY, str)):
        if not isinstance(header.get(key), kind):
            raise CorruptFileError(f"{name}: header field {key!r} is missing or malformed")
    if header["kind"] not in _KINDS:
        raise CorruptFileError(f"{name}: unknown saved kind {header['kind']!r} (expected one of {_KINDS})")


def _major_minor(version: object) -> tuple[int, int] | None:
    match = re.match(r"(\d+)\.(\d+)", version) if isinstance(version, str) else None
    return (int(match.group(1)), int(match.group(2))) if match else None


# ----------------------------------------------------------------- payload safety (no pickle)

# Archive entries (below the archive's root folder) that hold JSON or raw bytes only.
_PLAIN_ENTRIES = re.compile(
    r"(archive_format|archive_version|byteorder|\.data/version|\.data/serialization_id"
    r"|models/[\w.-]+\.json|data/weights/weight_\d+|data/weights/[\w.-]+_weights_config\.json"
    r"|data/constants/tensor_\d+|data/constants/[\w.-]+_constants_config\.json)"
)
_SAMPLE_INPUTS = re.compile(r"data/sample_inputs/[\w.-]+\.pt")
_CONFIG = re.compile(r"data/(weights|constants)/[\w.-]+_config\.json")
_PROGRAM = re.compile(r"models/[\w.-]+\.json")
# graph node targets torch resolves by getattr on torch/operator/math: only operators
_SAFE_TARGET_PREFIXES = ("torch.ops.", "_operator.", "math.", "torch.sym_", "torch._sym_")
# input guards are Python source that ExportedProgram.module() execs: only shape comparisons
_GUARD_NODES = (ast.Expression, ast.Compare, ast.BoolOp, ast.BinOp, ast.UnaryOp, ast.Subscript,
                ast.Constant, ast.Name, ast.Attribute, ast.Call, ast.Load, ast.operator, ast.cmpop,
                ast.boolop, ast.unaryop)
_GUARD_NAMES = frozenset({"L"})
_GUARD_ATTRIBUTES = frozenset({"size", "stride", "storage_offset", "dim"})


def _check_payload_is_safe(payload: bytes, path: str | os.PathLike[str]) -> None:
    """Refuse payload entries that torch.export.load would unpickle."""
    name = os.fspath(path)
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except zipfile.BadZipFile as e:
        raise CorruptFileError(f"{name}: the payload is not a torch.export archive") from e
    with archive:
        for entry in archive.namelist():
            inner = entry.split("/", 1)[1] if "/" in entry else entry
            if _SAMPLE_INPUTS.fullmatch(inner):
                _check_sample_inputs(archive.read(entry), name, entry)
            elif not _PLAIN_ENTRIES.fullmatch(inner):
                raise UnsafeFileError(f"{name}: payload entry {entry!r} is not a plain tensor or graph "
                                      "entry (it could hold pickled code); refusing to load it")
            elif _CONFIG.fullmatch(inner):
                _check_payload_config(archive.read(entry), name, entry)
            elif _PROGRAM.fullmatch(inner):
                _check_program(archive.read(entry), name, entry)


def _check_payload_config(raw: bytes, name: str, entry: str) -> None:
    try:
        config = json.loads(raw)["config"]
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptFileError(f"{name}: payload entry {entry!r} is not a valid config") from e
    for fqn, meta in config.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False \
                or not re.fullmatch(r"(weight|tensor)_\d+", str(meta.get("path_name"))):
            raise UnsafeFileError(f"{name}: {fqn!r} in {entry!r} is stored pickled; fxquant.load "
                                  "only reads plain tensors")


def _check_program(raw: bytes, name: str, entry: str) -> None:
    try:
        program = json.loads(raw)
    except ValueError as e:
        raise CorruptFileError(f"{name}: payload entry {entry!r} is not valid JSON") from e
    for target in _node_targets(program):
        if not target.startswith(_SAFE_TARGET_PREFIXES):
            raise UnsafeFileError(f"{name}: graph node target {target!r} in {entry!r} is not an "
                                  "operator; refusing to load it")
    for guard in program.get("guards_code", []) if isinstance(program, dict) else []:
        if not _is_shape_guard(guard):
            raise UnsafeFileError(f"{name}: input guard {guard!r} in {entry!r} is not a plain shape "
                                  "comparison; refusing to load it")


def _node_targets(tree: object) -> list[str]:
    """The ``target`` of every serialized graph node (dicts with target/inputs/outputs), at any
    depth (control-flow subgraphs included)."""
    found: list[str] = []
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if {"target", "inputs", "outputs"} <= item.keys():
                found.append(str(item["target"]))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _is_shape_guard(guard: object) -> bool:
    if not isinstance(guard, str):
        return False
    try:
        tree = ast.parse(guard, mode="eval")
    except SyntaxError:
        return False
    for node in ast.walk(tree):
        if not isinstance(node, _GUARD_NODES):
            return False
        if isinstance(node, ast.Name) and node.id not in _GUARD_NAMES:
            return False
        if isinstance(node, ast.Attribute) and node.attr not in _GUARD_ATTRIBUTES:
            return False
        if isinstance(node, ast.Call) and (node.keywords or not isinstance(node.func, ast.Attribute)):
            return False
    return True


def _check_sample_inputs(raw: bytes, name: str, entry: str) -> None:
    try:
        torch.load(io.BytesIO(raw), weights_only=True)
    except Exception as e:  # torch.load raises many types; all mean "not weights-only data"
        raise UnsafeFileError(f"{name}: payload entry {entry!r} does not load with "
                              "torch.load(weights_only=True); refusing to load it") from e
