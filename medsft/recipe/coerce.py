"""A recipe value checked against its dataclass field's type: YAML's and the command line's values coerced where the
type allows (a scalar for a list, `1e-4` read as a string), TypeError otherwise; and the type named for the user."""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, Literal


def type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return "one of " + ", ".join(str(e.value) for e in hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(type_name(h) for h in typing.get_args(hint))
    origin = typing.get_origin(hint) or hint
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}.get(
        origin, getattr(origin, "__name__", str(origin))
    )


def coerce(value: Any, hint: Any) -> Any:
    """Return `value` as the field type `hint` wants it, or raise TypeError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for member in args:
            try:
                return coerce(value, member)
            except TypeError:
                pass
        raise TypeError
    if hint is type(None):
        if value is None:
            return None
        raise TypeError
    if origin is Literal:
        if value in args:
            return value
        raise TypeError
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        if value in {e.value for e in hint}:
            return value
        raise TypeError
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise TypeError
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise TypeError from None
        raise TypeError
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError
    if origin is list or hint is list:
        inner = args[0] if args else Any
        if isinstance(value, list):
            return [coerce(v, inner) for v in value]
        if isinstance(value, (dict, set, tuple)):
            raise TypeError
        return [coerce(value, inner)]  # a scalar is a list of one (lora_target_modules: all-linear), never sliced
    if origin is dict or hint is dict:
        if isinstance(value, dict):
            return value
        raise TypeError
    return value  # a type we do not know how to check: let the library decide
