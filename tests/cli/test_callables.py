"""``module:callable`` references: parsing, literal arguments, resolution, clear errors."""

from __future__ import annotations

import pytest

from fxquant.cli.callables import call_ref, is_callable_ref, parse_callable_ref, resolve_callable
from fxquant.cli.errors import BadInputError


@pytest.mark.parametrize(
    "text, target, attr, args, kwargs",
    [
        ("fxquant.zoo:efficientnet_lite0", "fxquant.zoo", "efficientnet_lite0", (), {}),
        ("models.py:build", "models.py", "build", (), {}),
        ("dir/models.py:Factory.make", "dir/models.py", "Factory.make", (), {}),
        ('fxquant.zoo:imagenet_photos(48, split="holdout")', "fxquant.zoo", "imagenet_photos", (48,), {"split": "holdout"}),
        ("m:f((1, 2), [3], {'a': None}, flag=True)", "m", "f", ((1, 2), [3], {"a": None}), {"flag": True}),
    ],
    ids=["module", "file", "dotted-attr", "literal-args", "nested-literals"],
)
def test_parse(text, target, attr, args, kwargs):
    ref = parse_callable_ref(text)
    assert (ref.target, ref.attr, ref.args, ref.kwargs) == (target, attr, args, kwargs)
    assert is_callable_ref(text)


@pytest.mark.parametrize(
    "text", ["no_colon", "C:\\models\\net.py", "m:f(os.system('x'))", "m:f(*args)", "m:f(**kw)", "m:f(1,"],
    ids=["no-colon", "windows-drive", "code-in-args", "starred", "double-starred", "unbalanced"],
)
def test_rejects_non_references_and_code(text):
    with pytest.raises(BadInputError) as info:
        parse_callable_ref(text)
    assert "module:callable" in str(info.value) or "literals" in str(info.value)


def test_resolves_and_calls_with_literal_arguments():
    ref = parse_callable_ref("fxquant.zoo:real_sentences(3, split='holdout')")
    sentences = call_ref(ref, "data")
    assert len(sentences) == 3 and all(isinstance(s, str) for s in sentences)


def test_missing_module_and_attribute_are_named():
    with pytest.raises(BadInputError, match="cannot import module 'no_such_pkg_xyz'"):
        resolve_callable(parse_callable_ref("no_such_pkg_xyz:build"))
    with pytest.raises(BadInputError, match="did you mean.*efficientnet_lite0"):
        resolve_callable(parse_callable_ref("fxquant.zoo:efficientnet_lit0"))


def test_file_reference(tmp_path):
    path = tmp_path / "factory.py"
    path.write_text("def make(n=2):\n    return list(range(n))\nVALUE = 3\n")
    assert call_ref(parse_callable_ref(f"{path}:make(4)"), "data") == [0, 1, 2, 3]
    with pytest.raises(BadInputError, match="not a callable"):
        resolve_callable(parse_callable_ref(f"{path}:VALUE"))
    with pytest.raises(BadInputError, match="no such Python file"):
        resolve_callable(parse_callable_ref(f"{tmp_path / 'missing.py'}:make"))
    with pytest.raises(BadInputError, match="calling .* failed"):
        call_ref(parse_callable_ref(f"{path}:make(1, 2, 3)"), "data")
