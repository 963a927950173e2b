"""The ``fxquant`` parser: help texts that read like a manual, and exit codes for bad input
(in-process through ``main``; the subprocess runs are in test_end_to_end.py)."""

from __future__ import annotations

import argparse

import pytest
import torch
from torch import nn

import fxquant
from fxquant.cli import build_parser, main
from fxquant.cli.errors import ExitCode

COMMANDS = ("quantize", "report", "compare")


def _subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_help_mentions_every_option_with_its_default(command):
    parser = _subparser(command)
    text = parser.format_help()
    options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
    assert options
    for action in options:
        assert action.option_strings[-1] in text, f"{action.option_strings} missing from the help"
        said = "required" if action.required else "default"
        assert action.help and said in action.help, f"{action.option_strings[-1]}: no {said!r} in its help"
    for positional in (a for a in parser._actions if not a.option_strings):
        assert positional.metavar in text
    for section in ("examples:", "exit codes:", "fxquant " + command):
        assert section in text


def test_top_level_help_lists_commands_and_exit_codes():
    text = build_parser().format_help()
    for word in (*COMMANDS, "exit codes:", "4  the quantized model misses --accuracy-budget"):
        assert word in text


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["quantize", "fxquant.zoo:efficientnet_lite0"])  # --data missing
    assert info.value.code == ExitCode.USAGE
    assert "--data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["quantize", "m:f", "--data", "d", "--backend", "tpu"])
    assert info.value.code == ExitCode.USAGE


@pytest.mark.parametrize(
    "argv, message",
    [
        (["quantize", "no_such_pkg_xyz:build", "--data", "{tmp}"], "cannot import module 'no_such_pkg_xyz'"),
        (["quantize", "fxquant.zoo:not_there", "--data", "{tmp}"], "has no attribute 'not_there'"),
        (["quantize", "{tmp}/missing.fxq", "--data", "{tmp}"], "no such model file"),
        (["quantize", "{tmp}/factory.py:net", "--data", "{tmp}/empty"], "holds no images"),
        (["quantize", "{tmp}/factory.py:net", "--data", "{tmp}/nothing_here"], "no such file or folder"),
        (["compare", "{tmp}/factory.py:net", "{tmp}/tampered.fxq", "--data", "{tmp}/x.pt"], "checksum mismatch"),
        (["compare", "{tmp}/factory.py:net", "{tmp}/net.fxq", "--data", "{tmp}/wrong.pt"], "expects samples of shape [4]"),
        (["report", "{tmp}/missing.json"], "no such report file"),
        (["report", "{tmp}/x.pt"], "cannot read the report"),
    ],
    ids=["missing-module", "missing-callable", "missing-file", "empty-folder", "missing-data",
         "tampered-fxq", "shape-mismatch", "missing-report", "not-a-report"],
)
def test_bad_input_exits_3_with_one_clear_message(tmp_path, capsys, argv, message):
    (tmp_path / "factory.py").write_text("from torch import nn\ndef net():\n    return nn.Sequential(nn.Linear(4, 3))\n")
    (tmp_path / "empty").mkdir()
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    fxquant.save(model, tmp_path / "net.fxq", example_inputs=(torch.randn(2, 4),))
    raw = bytearray((tmp_path / "net.fxq").read_bytes())
    raw[len(raw) // 2] ^= 0x40
    (tmp_path / "tampered.fxq").write_bytes(bytes(raw))
    torch.save(torch.randn(6, 4), tmp_path / "x.pt")
    torch.save(torch.randn(6, 5), tmp_path / "wrong.pt")
    code = main([a.replace("{tmp}", str(tmp_path)) for a in argv] + ["--no-progress"])
    err = capsys.readouterr().err
    assert code == ExitCode.BAD_INPUT, err
    assert message in err and "Traceback" not in err
    assert err.count("error:") == 1


def test_debug_shows_the_traceback(tmp_path, capsys):
    code = main(["report", str(tmp_path / "missing.json"), "--debug"])
    assert code == ExitCode.BAD_INPUT and "Traceback" in capsys.readouterr().err
