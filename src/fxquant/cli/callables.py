"""Resolve ``module:callable`` and ``path/to/file.py:callable`` references given on the command
line, optionally with literal arguments: ``fxquant.zoo:imagenet_photos(48, split="holdout")``.

Arguments are parsed with :func:`ast.literal_eval` (numbers, strings, tuples, lists, dicts,
booleans, ``None``), never evaluated as code; the referenced module itself is imported, which
runs its code as any ``import`` does.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fxquant.cli.errors import BadInputError

__all__ = ["CallableRef", "call_ref", "is_callable_ref", "parse_callable_ref", "resolve_callable"]

# "target:attr" or "target:attr(...)": the attribute is a dotted Python name.
_REF = re.compile(r"^(?P<target>[^()]+):(?P<attr>[A-Za-z_][\w.]*)(?P<call>\(.*\))?$", re.DOTALL)


@dataclass(frozen=True, kw_only=True)
class CallableRef:
    """A parsed reference: where the callable lives and the literal arguments to call it with."""

    target: str
    attr: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_file(self) -> bool:
        """Whether ``target`` names a Python file rather than an importable module."""
        return self.target.endswith(".py") or "/" in self.target or "\\" in self.target

    def __str__(self) -> str:
        call = ", ".join([repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()])
        return f"{self.target}:{self.attr}" + (f"({call})" if self.args or self.kwargs else "")


def is_callable_ref(text: str) -> bool:
    """Whether ``text`` looks like ``module:callable`` (a ``C:\\path`` alone does not)."""
    return _REF.match(text.strip()) is not None


def parse_callable_ref(text: str) -> CallableRef:
    """Split ``module:callable(args)`` into its parts.

    Raises:
        BadInputError: not of that form, or the arguments are not Python literals.
    """
    match = _REF.match(text.strip())
    if match is None:
        raise BadInputError(
            f"{text!r} is not a 'module:callable' reference; write e.g. 'fxquant.zoo:efficientnet_lite0' "
            "or 'path/to/models.py:build_model' (optionally with literal arguments: 'pkg.mod:fn(8, size=96)')"
        )
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    if match["call"]:
        args, kwargs = _literal_call_arguments(text, match["call"])
    return CallableRef(target=match["target"], attr=match["attr"], args=args, kwargs=kwargs)


def _literal_call_arguments(text: str, call: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    try:
        node = ast.parse(f"f{call}", mode="eval").body
        if not isinstance(node, ast.Call) or any(isinstance(a, ast.Starred) for a in node.args):
            raise ValueError("not a plain call")
        args = tuple(ast.literal_eval(a) for a in node.args)
        kwargs = {}
        for keyword in node.keywords:
            if keyword.arg is None:
                raise ValueError("**kwargs are not supported")
            kwargs[keyword.arg] = ast.literal_eval(keyword.value)
    except (SyntaxError, ValueError) as e:
        raise BadInputError(
            f"the arguments in {text!r} must be Python literals (numbers, strings, tuples, lists, "
            f"dicts, True/False/None), as in 'fxquant.zoo:imagenet_photos(48, split=\"holdout\")': {e}"
        ) from e
    return args, kwargs


def _import_target(ref: CallableRef) -> Any:
    if ref.is_file:
        path = Path(ref.target)
        if not path.is_file():
            raise BadInputError(f"{ref.target}: no such Python file; check the path in '{ref}'")
        # A unique module name per file, so two files named models.py do not collide.
        name = f"_fxquant_cli_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise BadInputError(f"{ref.target}: cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        # The file's folder goes on sys.path so that it can import its neighbours.
        sys.path.insert(0, str(path.resolve().parent))
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(ref.target)
    except ModuleNotFoundError as e:
        raise BadInputError(
            f"cannot import module {ref.target!r} (from '{ref}'): {e}; check the spelling, install "
            "the package, or give a file path instead ('path/to/file.py:callable')"
        ) from e


def resolve_callable(ref: CallableRef) -> Callable[..., Any]:
    """Import ``ref.target`` and return the (dotted) attribute ``ref.attr``; it must be callable.

    Raises:
        BadInputError: the module/file cannot be imported, or has no such callable.
    """
    obj = _import_target(ref)
    for part in ref.attr.split("."):
        if not hasattr(obj, part):
            public = sorted(n for n in dir(obj) if not n.startswith("_"))
            close = difflib.get_close_matches(part, public, n=5, cutoff=0.5)
            hint = f"; did you mean one of {close}?" if close else ""
            raise BadInputError(f"{ref.target!r} has no attribute {ref.attr!r} (from '{ref}'){hint}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise BadInputError(f"'{ref.target}:{ref.attr}' is a {type(obj).__name__}, not a callable")
    return obj


def call_ref(ref: CallableRef, what: str) -> Any:
    """Resolve and call ``ref`` with its literal arguments; failures name ``what`` was loaded."""
    fn = resolve_callable(ref)
    try:
        return fn(*ref.args, **ref.kwargs)
    except TypeError as e:
        raise BadInputError(
            f"calling '{ref}' to get the {what} failed: {e}; pass its arguments as literals, "
            "e.g. 'pkg.mod:fn(8, size=96)'"
        ) from e
