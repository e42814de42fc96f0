"""The checkpoint's JSON documents and their schemas (``schemas/<name>-v<N>.schema.json``).

The checkpoint format is owned here, by the Python package: one JSON Schema
file per document and version says every member, its type and meaning. The
readers (``manifest.load_manifest``, ``state_doc.load_state``) check a
document's version first (a newer one is refused with "upgrade
cedana-gpu"), then validate it against its version's schema, then build
their dataclasses from what is known to be well-formed. The native
controller writes and reads ``gpu/state.json`` in C
(``gpu/controller/state_doc.c``); the tests hold both sides to the schema.

The validator is written here rather than taken from the ``jsonschema``
package, for three reasons: a checkpoint's state document may list 100,000
allocations and a restore should not spend seconds validating them; the
messages must be the project's one line that names the member ("job: no
'segment_name'", "'streams' is not an integer"), which the tests pin; and no
new dependency (``jsonschema`` brings ``referencing`` and the native
``rpds-py``). It implements the part of JSON Schema 2020-12 the schema files
use, and ``load_schema`` refuses a schema that uses anything else, so a
schema can never say more than is checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from cedana_gpu.errors import CorruptCheckpoint

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

Schema = Mapping[str, Any]

# What the validator enforces; annotations it reads past.
_CHECKED = frozenset(
    {
        "type",
        "const",
        "enum",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "$ref",
    }
)
_ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description"})

_TYPE_NAMES = {
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "null": "null",
}


def schema_path(document: str, version: int) -> Path:
    """The schema file of ``document`` (``manifest``, ``gpu-state``) at ``version``."""
    return SCHEMA_DIR / f"{document}-v{version}.schema.json"


@cache
def load_schema(document: str, version: int) -> Schema:
    """The schema of ``document`` at ``version``, checked to use only what is enforced.

    A missing file is a bug of the installation (every version this
    cedana-gpu reads ships its schema), so it raises ``FileNotFoundError``.
    """
    path = schema_path(document, version)
    schema = json.loads(path.read_text(encoding="utf-8"))
    _check_schema(schema, schema, path.name)
    return schema


def _check_schema(node: Any, root: Schema, where: str) -> None:
    if not isinstance(node, dict):
        raise ValueError(f"{where}: a schema must be an object")
    for key, sub in node.items():
        if key not in _CHECKED and key not in _ANNOTATIONS:
            raise ValueError(f"{where}: the validator does not implement {key!r}")
        if key == "$ref":
            _resolve(root, sub)
        elif key == "$defs":
            for name, d in sub.items():
                _check_schema(d, root, f"{where}/$defs/{name}")
        elif key == "properties":
            for name, p in sub.items():
                _check_schema(p, root, f"{where}/{name}")
        elif key in ("items", "additionalProperties") and isinstance(sub, dict):
            _check_schema(sub, root, f"{where}/{key}")
        elif key == "prefixItems":
            for i, p in enumerate(sub):
                _check_schema(p, root, f"{where}/{i}")
        elif key == "type":
            names = sub if isinstance(sub, list) else [sub]
            if any(n not in _TYPE_NAMES for n in names):
                raise ValueError(f"{where}: unknown type {sub!r}")


def _resolve(root: Schema, ref: str) -> Schema:
    if not ref.startswith("#/$defs/"):
        raise ValueError(f"only local references into $defs are supported, not {ref!r}")
    return root["$defs"][ref.removeprefix("#/$defs/")]


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    return value is None


def _same(a: Any, b: Any) -> bool:
    """JSON equality: 1 is not true, lists and tuples of equal items are equal."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


class _Validator:
    """One validation: the root schema (for ``$ref``) and where the document came from."""

    def __init__(self, root: Schema, where: str) -> None:
        self.root = root
        self.where = where

    def fail(self, parent: str, name: str, what: str) -> CorruptCheckpoint:
        """``<file>: <parent>: <name> <what>: the checkpoint is corrupt ...``, one line."""
        at = f"{self.where}: {parent}" if parent else self.where
        said = f"{name} {what}" if what else name
        return CorruptCheckpoint(f"{at}: {said}: the checkpoint is corrupt or not from cedana-gpu")

    def check(self, value: Any, schema: Schema, parent: str, name: str) -> None:
        """Check ``value`` (called ``name``, inside ``parent``) against ``schema``."""
        ref = schema.get("$ref")
        if ref is not None:
            self.check(value, _resolve(self.root, ref), parent, name)
        types = schema.get("type")
        if types is not None:
            names = types if isinstance(types, list) else [types]
            if not any(_is_type(value, t) for t in names):
                raise self.fail(
                    parent, name, f"is not {' or '.join(_TYPE_NAMES[t] for t in names)}"
                )
        if "const" in schema and not _same(value, schema["const"]):
            raise self.fail(parent, name, f"is {_show(value)}, not {_show(schema['const'])}")
        if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
            choices = ", ".join(_show(e) for e in schema["enum"])
            raise self.fail(parent, name, f"is {_show(value)}, not one of {choices}")
        if _is_type(value, "number"):
            self._number(value, schema, parent, name)
        elif isinstance(value, str):
            self._string(value, schema, parent, name)
        elif isinstance(value, dict):
            self._object(value, schema, parent, name)
        elif isinstance(value, list):
            self._array(value, schema, parent, name)

    def _number(self, value: float, schema: Schema, parent: str, name: str) -> None:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is not None and value < lo:
            raise self.fail(parent, name, f"is {value}, less than {lo}")
        if hi is not None and value > hi:
            raise self.fail(parent, name, f"is {value}, more than {hi}")

    def _string(self, value: str, schema: Schema, parent: str, name: str) -> None:
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if lo is not None and len(value) < lo:
            raise self.fail(parent, name, f"is shorter than {lo} characters")
        if hi is not None and len(value) > hi:
            raise self.fail(parent, name, f"is longer than {hi} characters")
        pattern = schema.get("pattern")
        if pattern is not None and not _regex(pattern).search(value):
            raise self.fail(parent, name, f"is {_show(value)}, which is not of the expected form")

    def _object(self, value: dict[str, Any], schema: Schema, parent: str, name: str) -> None:
        inner = _join(parent, name)
        for key in schema.get("required", ()):
            if key not in value:
                raise self.fail(inner, f"no '{key}'", "")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, v in value.items():
            sub = props.get(key)
            if sub is not None:
                self.check(v, sub, inner, f"'{key}'")
            elif extra is False:
                raise self.fail(inner, f"'{key}'", "is not a known member")
            elif isinstance(extra, dict):
                self.check(v, extra, inner, f"'{key}'")

    def _array(self, value: list[Any], schema: Schema, parent: str, name: str) -> None:
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        if (lo is not None and len(value) < lo) or (hi is not None and len(value) > hi):
            want = f"{lo}" if lo == hi else f"{lo or 0} to {hi if hi is not None else 'any'}"
            raise self.fail(parent, name, f"has {len(value)} items, not {want}")
        prefix = schema.get("prefixItems", ())
        items = schema.get("items")
        inner = _join(parent, name)
        if items is not None and not prefix:
            fast = _fast_check(self.root, items)
            if fast is not None:
                for i, v in enumerate(value):
                    if not fast(v):
                        self.check(v, items, inner, f"item {i}")  # raises, saying why
                return
        for i, v in enumerate(value):
            sub = prefix[i] if i < len(prefix) else items
            if sub is not None:
                self.check(v, sub, inner, f"item {i}")


Check = Callable[[Any], bool]


def _fast_check(root: Schema, schema: Schema) -> Check | None:
    """A yes/no test equivalent to ``schema``, for the long lists (allocation rows,
    regions), or None where the schema is more than the test knows. Only a "no"
    goes through the full walk, which finds the reason."""
    key = id(schema)
    if key not in _FAST:
        _FAST[key] = (schema, _compile(root, schema))
    return _FAST[key][1]


_FAST: dict[int, tuple[Schema, Check | None]] = {}  # keeps the schema alive: ids stay unique


def _compile(root: Schema, schema: Schema) -> Check | None:
    keys = schema.keys() - _ANNOTATIONS
    if keys == {"$ref"}:
        return _compile(root, _resolve(root, schema["$ref"]))
    kind = schema.get("type")
    if kind == "integer" and keys <= {"type", "minimum", "maximum"}:
        lo, hi = schema.get("minimum"), schema.get("maximum")
        lo = -(1 << 128) if lo is None else lo
        hi = 1 << 128 if hi is None else hi
        return lambda v: type(v) is int and lo <= v <= hi
    if kind == "string" and keys == {"type"}:
        return lambda v: type(v) is str
    if kind == "boolean" and keys == {"type"}:
        return lambda v: type(v) is bool
    if kind == "array" and keys <= {"type", "prefixItems", "minItems", "maxItems"}:
        parts = [_compile(root, p) for p in schema.get("prefixItems", ())]
        n = len(parts)
        if None in parts or schema.get("minItems") != n or schema.get("maxItems") != n:
            return None
        tests = [p for p in parts if p is not None]
        return lambda v: (
            type(v) is list and len(v) == n and all(t(x) for t, x in zip(tests, v, strict=True))
        )
    if kind == "object" and keys <= {"type", "properties", "required"}:
        required = tuple(schema.get("required", ()))
        props = []
        for name, sub in schema.get("properties", {}).items():
            test = _compile(root, sub)
            if test is None:
                return None
            props.append((name, test))

        def check_object(v: Any) -> bool:
            if type(v) is not dict or any(k not in v for k in required):
                return False
            return all(t(v[k]) for k, t in props if k in v)

        return check_object
    return None


def _join(parent: str, name: str) -> str:
    """The path of a member: ``job``, ``regions[3]``, ``functions[0].params``."""
    if name.startswith("item "):
        return f"{parent}[{name[5:]}]"
    key = name.strip("'")
    return f"{parent}.{key}" if parent else key


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


@cache
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def validate(document: Any, schema: Schema, where: str) -> None:
    """Refuse ``document`` (``CorruptCheckpoint``, one line naming the member) unless
    it is what ``schema`` says; ``where`` starts the message (the file's path)."""
    if not isinstance(document, dict):
        raise CorruptCheckpoint(
            f"{where}: not a JSON object: the checkpoint is corrupt or not from cedana-gpu"
        )
    validate_against(document, schema, schema, where)


def validate_against(value: Any, schema: Schema, root: Schema, where: str) -> None:
    """``validate`` with a part of a schema: ``root`` resolves its ``$ref``s."""
    _Validator(root, where).check(value, schema, "", "")
