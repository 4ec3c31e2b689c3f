"""JSON-schema ``parameters`` for a Python function, derived from its type hints.

Simple hints only: ``str``, ``int``, ``float``, ``bool``, ``None``, ``Literal[...]``, an
``Enum``, ``list[T]`` / ``tuple[T, ...]`` / ``Sequence[T]``, ``dict`` / ``Mapping``, unions
(``T | None``), and ``Annotated[T, "a description"]``. Anything else is a ``TypeError``
that asks for the schema to be given explicitly.
"""

from __future__ import annotations

import collections.abc
import enum
import inspect
import types
import typing
from collections.abc import Callable
from typing import Any

_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARRAYS = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Iterable)
_OBJECTS = (dict, collections.abc.Mapping)


def description_of(function: Callable[..., Any]) -> str:
    """The first paragraph of the function's docstring, on one line."""
    doc = inspect.getdoc(function) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def parameters_of(function: Callable[..., Any]) -> dict[str, Any]:
    """The JSON schema of the function's keyword arguments."""
    name = getattr(function, "__name__", repr(function))
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except (NameError, TypeError) as exc:
        raise TypeError(f"{name}: cannot read its type hints ({exc}); pass parameters=") from None
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(function).parameters.items():
        pname, spec = param
        if spec.kind in (spec.VAR_POSITIONAL, spec.VAR_KEYWORD, spec.POSITIONAL_ONLY):
            raise TypeError(
                f"{name}: parameter {pname!r} cannot be passed by name; pass parameters="
            )
        if pname not in hints:
            raise TypeError(f"{name}: parameter {pname!r} has no type hint; pass parameters=")
        try:
            schema = schema_of(hints[pname])
        except TypeError as exc:
            raise TypeError(f"{name}: parameter {pname!r}: {exc}; pass parameters=") from None
        if spec.default is spec.empty:
            required.append(pname)
        elif isinstance(spec.default, str | int | float | bool):
            schema["default"] = spec.default
        properties[pname] = schema
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def schema_of(hint: Any) -> dict[str, Any]:
    """The JSON schema of one type hint."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        schema = schema_of(args[0])
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if hint is None or hint is type(None):
        return {"type": "null"}
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    if origin is typing.Literal:
        return _enum(list(args))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum([member.value for member in hint])
    if origin in (typing.Union, types.UnionType):
        choices = [schema_of(arg) for arg in args if arg is not type(None)]
        nullable = len(choices) < len(args)
        if len(choices) == 1 and not nullable:
            return choices[0]
        return {"anyOf": [*choices, {"type": "null"}] if nullable else choices}
    if hint in _ARRAYS or origin in _ARRAYS:
        items = [a for a in args if a is not Ellipsis]
        if origin is tuple and len(items) > 1:
            raise TypeError(f"fixed-length tuples are not supported: {hint!r}")
        return {"type": "array", "items": schema_of(items[0])} if items else {"type": "array"}
    if hint in _OBJECTS or origin in _OBJECTS:
        return {"type": "object"}
    if hint is Any:
        return {}
    raise TypeError(f"no JSON schema for {hint!r}")


def _enum(values: list[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": values}
    kinds = {_SCALARS.get(type(v)) for v in values}
    if len(kinds) == 1 and None not in kinds:
        schema["type"] = kinds.pop()
    return schema
