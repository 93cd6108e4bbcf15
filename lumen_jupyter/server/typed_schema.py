"""JSON Schema (2020-12, as OpenAPI 3.1 uses it) derived from the wire TypedDicts.

Only the forms :mod:`lumen_jupyter.core.wire` uses are understood (``int``,
``str``, ``bool``, ``float``, ``None``, unions, ``list``, ``dict[str, X]``,
``Literal``, ``Annotated[str, "<format>"]`` and TypedDicts); anything else is a
``TypeError`` so a new form cannot slip into the document as an empty schema.
Every TypedDict becomes a named, closed schema (``additionalProperties: false``)
whose ``required`` list is the keys the class requires.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

_SIMPLE = {int: "integer", str: "string", bool: "boolean", float: "number", type(None): "null"}


def is_typeddict(value: Any) -> bool:
    return isinstance(value, type) and typing.is_typeddict(value)


class SchemaBuilder:
    """Collects the named schemas of TypedDicts met while converting annotations."""

    def __init__(self, ref_prefix: str = "#/components/schemas/", open_names: Any = ()) -> None:
        self.ref_prefix = ref_prefix
        self.open_names = frozenset(open_names)
        self.named: dict[str, dict[str, Any]] = {}

    def schema(self, annotation: Any) -> dict[str, Any]:
        if is_typeddict(annotation):
            self._define(annotation)
            return {"$ref": self.ref_prefix + annotation.__name__}
        if annotation in _SIMPLE:
            return {"type": _SIMPLE[annotation]}
        origin = get_origin(annotation)
        args = get_args(annotation)
        if origin is typing.Annotated:
            base, *extras = args
            if base is not str or not extras or not isinstance(extras[0], str):
                raise TypeError(f"unsupported annotation {annotation!r}")
            return {"type": "string", "format": extras[0]}
        if origin is Literal:
            return {"enum": list(args)}
        if origin in (Union, types.UnionType):
            return self._union(args)
        if origin is list:
            return {"type": "array", "items": self.schema(args[0])}
        if origin is dict:
            if args[0] is not str:
                raise TypeError(f"JSON object keys are strings, not {args[0]!r}")
            return {"type": "object", "additionalProperties": self.schema(args[1])}
        raise TypeError(f"unsupported annotation {annotation!r}")

    def _union(self, args: tuple[Any, ...]) -> dict[str, Any]:
        parts = [self.schema(arg) for arg in args]
        if all(set(part) == {"type"} for part in parts):
            return {"type": [part["type"] for part in parts]}
        enums = [part for part in parts if set(part) == {"enum"}]
        if len(enums) == 1 and len(parts) == 2 and {"type": "null"} in parts:
            return {"enum": [*enums[0]["enum"], None]}
        formatted = [part for part in parts if part.get("format")]
        if len(formatted) == 1 and len(parts) == 2 and {"type": "null"} in parts:
            return {"type": [formatted[0]["type"], "null"], "format": formatted[0]["format"]}
        return {"anyOf": parts}

    def _define(self, cls: Any) -> None:
        name = cls.__name__
        if name in self.named:
            return
        self.named[name] = {}  # placeholder: a recursive reference finds the name taken
        hints = get_type_hints(cls, include_extras=True)
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {field: self.schema(hint) for field, hint in hints.items()},
            "required": sorted(cls.__required_keys__),
        }
        if name not in self.open_names:
            schema["additionalProperties"] = False
        doc = (cls.__doc__ or "").strip()
        if doc and not doc.startswith(f"{name}("):
            schema["description"] = " ".join(doc.split())
        self.named[name] = schema


def schema_of(annotation: Any, builder: SchemaBuilder) -> dict[str, Any]:
    """The schema of ``annotation``; named TypedDict schemas land in ``builder.named``."""
    return builder.schema(annotation)
