"""fxquant.save / fxquant.load: bit-exact round trips (also in a fresh process without the
model's class) and clear refusals of foreign, modified, incompatible or unsafe files."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from pt2e_helpers import ConvBnReLUNet, FnQuantizer, annotate_conv_linear, export, op_counts
from torch.export import ExportedProgram

from fxquant.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
from fxquant.serialization import (
    FORMAT_NAME,
    FORMAT_VERSION,
    CorruptFileError,
    FxquantFileError,
    IncompatibleVersionError,
    NotAnFxquantFileError,
    UnsafeFileError,
    _canonical_json,
    _checksum,
    load,
    read_header,
    save,
)

SRC = str(Path(__file__).resolve().parents[1] / "src")
MAGIC = b"FXQUANT\x00"


@pytest.fixture(scope="module")
def converted() -> tuple[torch.fx.GraphModule, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    model = torch.export.export(ConvBnReLUNet().eval(), (x,)).module()
    prepared = prepare_pt2e(model, FnQuantizer(annotate_conv_linear))
    for _ in range(3):
        prepared(torch.randn(2, 3, 8, 8))
    return convert_pt2e(prepared), x


@pytest.fixture(scope="module")
def saved(converted, tmp_path_factory) -> Path:
    model, x = converted
    path = tmp_path_factory.mktemp("fxq") / "model.fxq"
    save(model, path, example_inputs=(x,))
    return path


def split(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    return json.loads(data[start:start + length]), data[start + length:]


def write(path: Path, header: dict, payload: bytes, *, resign: bool) -> Path:
    """Write a file from parts; ``resign`` recomputes the checksum like a forger would."""
    if resign:
        header = {**header, "sha256": _checksum(header, payload)}
    raw = _canonical_json(header)
    path.write_bytes(MAGIC + struct.pack("<I", len(raw)) + raw + payload)
    return path


def test_round_trip_is_bit_exact_in_process(converted, saved):
    model, x = converted
    loaded = load(saved)
    assert isinstance(loaded, torch.fx.GraphModule)
    for inp in (x, torch.randn(2, 3, 8, 8) * 3):
        assert torch.equal(loaded(inp), model(inp))
    # the loaded graph still computes in int8: the same q/dq ops are there
    assert op_counts(loaded)["quantize_per_tensor"] == op_counts(model)["quantize_per_tensor"] == 4


def test_header_records_versions_and_inputs(saved):
    header = read_header(saved)
    assert header["format"] == FORMAT_NAME and header["format_version"] == FORMAT_VERSION
    assert header["torch_version"] == torch.__version__
    assert header["kind"] == "graph_module"
    assert header["example_inputs"] == [{"shape": [2, 3, 8, 8], "dtype": "torch.float32"}]


FRESH_PROCESS = """
import sys, torch, fxquant.serialization as s
model = s.load(sys.argv[1])
x = torch.load(sys.argv[2], weights_only=True)
torch.save(model(x), sys.argv[3])
"""


def test_fresh_process_without_the_model_class_gives_identical_outputs(converted, saved, tmp_path):
    model, _ = converted
    x = torch.randn(2, 3, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    env = {**os.environ, "PYTHONPATH": SRC}
    run = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(saved), str(tmp_path / "x.pt"),
                          str(tmp_path / "y.pt")], check=False, env=env, cwd=tmp_path,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert torch.equal(torch.load(tmp_path / "y.pt", weights_only=True), model(x))


def test_exported_program_round_trips_as_exported_program(converted, tmp_path):
    model, x = converted
    program = torch.export.export(model, (x,))
    save(program, tmp_path / "ep.fxq")
    loaded = load(tmp_path / "ep.fxq")
    assert isinstance(loaded, ExportedProgram)
    assert torch.equal(loaded.module()(x), model(x))


def test_example_inputs_default_to_placeholder_shapes(converted, tmp_path):
    model, x = converted
    save(model, tmp_path / "m.fxq")
    assert torch.equal(load(tmp_path / "m.fxq")(x), model(x))


def test_save_refuses_non_modules(tmp_path):
    with pytest.raises(TypeError, match="nn.Module or an ExportedProgram"):
        save({"weight": torch.ones(1)}, tmp_path / "x.fxq")  # type: ignore[arg-type]


def test_save_refuses_a_prepared_model_naming_an_observer_and_the_remedy(tmp_path):
    x = torch.randn(2, 3, 8, 8)
    prepared = prepare_pt2e(torch.export.export(ConvBnReLUNet().eval(), (x,)).module(),
                            FnQuantizer(annotate_conv_linear))
    prepared(x)
    with pytest.raises(FxquantFileError, match=r"prepared model .*activation_post_process.*state_dict"):
        save(prepared, tmp_path / "prepared.fxq", example_inputs=(x,))
    assert not (tmp_path / "prepared.fxq").exists()


@pytest.mark.parametrize("where", ["payload_middle", "payload_last_byte", "header_kind"])
def test_a_changed_byte_is_refused(saved, tmp_path, where):
    data = bytearray(saved.read_bytes())
    _, payload = split(saved)
    if where == "payload_middle":
        index = len(data) - len(payload) // 2
    elif where == "payload_last_byte":
        index = len(data) - 1
    else:  # "graph_module" -> "graph_modulf": still valid JSON, different meaning
        index = bytes(data).index(b'"graph_module"') + len('"graph_modul')
    data[index] ^= 0x01
    tampered = tmp_path / "tampered.fxq"
    tampered.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="checksum mismatch|unknown saved kind"):
        load(tampered)


@pytest.mark.parametrize("keep", [0.5, 0.99], ids=["half", "all_but_1pct"])
def test_a_truncated_file_is_refused(saved, tmp_path, keep):
    data = saved.read_bytes()
    truncated = tmp_path / "truncated.fxq"
    truncated.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CorruptFileError, match="modified or truncated"):
        load(truncated)


def test_a_truncated_header_is_refused(saved, tmp_path):
    short = tmp_path / "short.fxq"
    short.write_bytes(saved.read_bytes()[:40])
    with pytest.raises(CorruptFileError, match="header length .* does not fit"):
        load(short)


def test_another_format_version_is_refused_naming_both_versions(saved, tmp_path):
    header, payload = split(saved)
    path = write(tmp_path / "v2.fxq", {**header, "format_version": 2}, payload, resign=True)
    with pytest.raises(IncompatibleVersionError, match=r"format version 2 .*reads format version 1"):
        load(path)


@pytest.mark.parametrize("torch_version", ["99.0.0", "3.0.0", "2.99.0"])
def test_a_newer_torch_is_refused_naming_both_versions(saved, tmp_path, torch_version):
    header, payload = split(saved)
    path = write(tmp_path / "t.fxq", {**header, "torch_version": torch_version}, payload, resign=True)
    with pytest.raises(IncompatibleVersionError, match=rf"torch {re.escape(torch_version)}.*torch {re.escape(torch.__version__)}"):
        load(path)


def test_non_fxquant_files_are_refused(converted, tmp_path):
    model, x = converted
    torch.save(model.state_dict(), tmp_path / "state.pt")
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "plain.pt2")
    for name in ("state.pt", "plain.pt2"):
        with pytest.raises(NotAnFxquantFileError, match="not an fxquant model file"):
            load(tmp_path / name)
    other = write(tmp_path / "other.fxq", {"format": "other"}, b"", resign=True)
    with pytest.raises(NotAnFxquantFileError, match="'other' is not"):
        load(other)


def _rezip(payload: bytes, edit) -> bytes:
    """The payload archive with ``edit(name, data) -> data | None`` applied per entry
    (None drops it), plus whatever ``edit.extra`` adds."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(payload)) as src, zipfile.ZipFile(out, "w") as dst:
        root = src.namelist()[0].split("/")[0]
        for name in src.namelist():
            data = edit(name, src.read(name))
            if data is not None:
                dst.writestr(name, data)
        for name, data in getattr(edit, "extra", {}).items():
            dst.writestr(f"{root}/{name}", data)
    return out.getvalue()


def test_payload_with_an_extra_pickle_is_refused_even_when_resigned(saved, tmp_path):
    header, payload = split(saved)

    def add_pickle(name, data):
        return data

    add_pickle.extra = {"data/constants/opaque_obj_0": b"\x80\x04cos\nsystem\n."}  # type: ignore[attr-defined]
    path = write(tmp_path / "evil.fxq", header, _rezip(payload, add_pickle), resign=True)
    with pytest.raises(UnsafeFileError, match="opaque_obj_0"):
        load(path)


def test_payload_with_pickled_weights_is_refused(saved, tmp_path):
    header, payload = split(saved)

    def pickle_first_weight(name, data):
        if name.endswith("_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"]))
            config["config"][first]["use_pickle"] = True
            return json.dumps(config).encode()
        return data

    path = write(tmp_path / "evil.fxq", header, _rezip(payload, pickle_first_weight), resign=True)
    with pytest.raises(UnsafeFileError, match="stored pickled"):
        load(path)


class Gadget:
    """A class not on torch's weights-only allow-list (unpickling it means running code)."""


def test_sample_inputs_that_need_unpickling_are_refused(saved, tmp_path):
    header, payload = split(saved)

    buffer = io.BytesIO()
    torch.save(((Gadget(),), {}), buffer)

    def swap_inputs(name, data):
        return buffer.getvalue() if "/data/sample_inputs/" in name else data

    path = write(tmp_path / "evil.fxq", header, _rezip(payload, swap_inputs), resign=True)
    with pytest.raises(UnsafeFileError, match="weights_only=True"):
        load(path)


def test_numeric_debug_handles_survive_save_and_load(tmp_path):
    from fxquant.pt2e._numeric_debugger import (
        CUSTOM_KEY,
        NUMERIC_DEBUG_HANDLE_KEY,
        generate_numeric_debug_handle,
    )

    x = torch.randn(2, 3, 8, 8)
    program = torch.export.export(ConvBnReLUNet().eval(), (x,))
    generate_numeric_debug_handle(program)
    prepared = prepare_pt2e(program.module(), FnQuantizer(annotate_conv_linear))
    prepared(x)
    model = convert_pt2e(prepared)
    save(model, tmp_path / "tagged.fxq", example_inputs=(x,))

    def handles(gm):
        return {n.name: n.meta[CUSTOM_KEY][NUMERIC_DEBUG_HANDLE_KEY] for n in gm.graph.nodes
                if n.name in ("conv2d", "relu", "mean", "linear")}

    # conv 0, bn 1, relu 2, mean 3, linear 4; the folded conv computes the BN's output, so it
    # carries the BN's handle
    assert handles(load(tmp_path / "tagged.fxq")) == handles(model) == {"conv2d": 1, "relu": 2, "mean": 3, "linear": 4}
    # saving traced a private copy: the saved model's metadata holds nothing new
    assert all(set(n.meta.get(CUSTOM_KEY, {})) <= {NUMERIC_DEBUG_HANDLE_KEY} for n in model.graph.nodes)


def _edit_program(edit):
    def apply(name, data):
        if "/models/" in name and name.endswith(".json"):
            program = json.loads(data)
            edit(program)
            return json.dumps(program).encode()
        return data
    return apply


def test_a_graph_calling_a_non_operator_is_refused(saved, tmp_path):
    header, payload = split(saved)

    def retarget(program):
        program["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"

    path = write(tmp_path / "evil.fxq", header, _rezip(payload, _edit_program(retarget)), resign=True)
    with pytest.raises(UnsafeFileError, match="'torch.os.system' .* is not an operator"):
        load(path)


def test_guards_holding_code_are_refused(saved, tmp_path):
    header, payload = split(saved)

    def inject(program):
        program["guards_code"] = ["__import__('os').system('true') == 0"]

    path = write(tmp_path / "evil.fxq", header, _rezip(payload, _edit_program(inject)), resign=True)
    with pytest.raises(UnsafeFileError, match="not a plain shape comparison"):
        load(path)


@pytest.mark.parametrize(("guard", "safe"), [
    ("L['x'].size()[0] <= 64", True),
    ("2 <= L['x'].size()[0] and L['x'].stride()[1] == 1", True),
    ("L['x'].size.__globals__['os'] == 1", False),
    ("open('/etc/passwd') == 1", False),
    ("L['x'].size()[0] == (lambda: 1)()", False),
], ids=["size_bound", "size_and_stride", "dunder_walk", "builtin_call", "lambda"])
def test_shape_guard_allow_list(guard, safe):
    from fxquant.serialization import _is_shape_guard

    assert _is_shape_guard(guard) is safe


def test_example_inputs_given_as_views_do_not_store_their_base(tmp_path):
    """A slice of a big batch must not drag the whole batch into the file."""
    model = torch.nn.Linear(16, 4).eval()
    big = torch.randn(10_000, 16)  # 640 kB of data
    save(export(model, big[:2]), tmp_path / "small.fxq", example_inputs=(big[:2],))
    assert (tmp_path / "small.fxq").stat().st_size < 200_000
    out = load(tmp_path / "small.fxq")(big[:2])
    assert torch.equal(out, model(big[:2]))
