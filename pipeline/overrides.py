"""Command-line overrides typed as the config schema declares them, before validation.

Snakemake 9 reads nested ``--config`` values with YAML's BaseLoader, so every
scalar arrives as a string: ``--config 'flow={bound: 15}'`` gives
``{"flow": {"bound": "15"}}``, which the schema rejects ("'15' is not of type
'number'"). ``typed`` walks the config beside the schema and converts such
strings to what the schema asks for at that place (number, integer, boolean,
null, or one of an enum's values); a string that fits none is an error naming
the key and the type it should have. Light on purpose: the Snakefile calls it
at parse time.
"""
from __future__ import annotations

import math


class OverrideError(ValueError):
    pass


def _resolve(schema: dict, root: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        node = root
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        schema = {**node, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _number(text: str) -> float | int:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


_SCALARS = {
    "number": _number,
    "integer": lambda t: int(t),
    "boolean": lambda t: {"true": True, "false": False}[t.lower()],
    "null": lambda t: {"null": None, "~": None, "": None}[t.lower()],
}


def _candidates(text: str, schema: dict, root: dict) -> list:
    """Typed values ``text`` may stand for under ``schema``, the schema's own order."""
    schema = _resolve(schema, root)
    out = []
    for key in ("oneOf", "anyOf", "allOf"):
        for sub in schema.get(key, []):
            out += _candidates(text, sub, root)
    if "const" in schema:
        out += [schema["const"]] if str(schema["const"]).lower() == text.lower() else []
    if "enum" in schema:
        out += [v for v in schema["enum"] if not isinstance(v, str) and str(v).lower() == text.lower()]
        out += [v for v in schema["enum"] if isinstance(v, str) and v == text]
    types = schema.get("type", [])
    for t in [types] if isinstance(types, str) else types:
        if t == "string":
            out.append(text)
        elif t in _SCALARS:
            try:
                out.append(_SCALARS[t](text))
            except (ValueError, KeyError):
                pass
    return out


def _expected(schema: dict, root: dict) -> str:
    schema = _resolve(schema, root)
    parts = []
    for key in ("oneOf", "anyOf", "allOf"):
        parts += [_expected(s, root) for s in schema.get(key, [])]
    if "enum" in schema:
        parts.append("one of " + ", ".join(_show(v) for v in schema["enum"]))
    if "const" in schema:
        parts.append(_show(schema["const"]))
    if "type" in schema:
        t = schema["type"]
        parts.append(" or ".join(_NAMES.get(x, x) for x in ([t] if isinstance(t, str) else t)))
    return " or ".join(p for p in parts if p) or "a value"


_NAMES = {"number": "a number", "integer": "an integer", "boolean": "true or false", "string": "a string",
          "null": "null"}


def _show(value) -> str:
    """A schema value as YAML spells it (true, false, null)."""
    if value is True or value is False or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


def typed(config, schema: dict, root: dict | None = None, where: str = ""):
    """``config`` with strings converted where ``schema`` asks for another type (a new object)."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    subs = [_resolve(s, root) for k in ("allOf", "oneOf", "anyOf") for s in schema.get(k, [])]
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            sub = _child(schema, subs, key, root)
            out[key] = typed(value, sub, root, f"{where}.{key}" if where else str(key)) if sub is not None else value
        return out
    if isinstance(config, list):
        items = schema.get("items")
        return [typed(v, items, root, f"{where}[{i}]") if items else v for i, v in enumerate(config)]
    if isinstance(config, str) and _declares_type(schema, root):
        values = _candidates(config, schema, root)
        if not values:
            raise OverrideError(f"config {where}: {config!r} is not {_expected(schema, root)}")
        return config if config in values else values[0]
    return config


def _child(schema: dict, subs: list, key: str, root: dict) -> dict | None:
    for s in [schema, *subs]:
        if key in s.get("properties", {}):
            return s["properties"][key]
    for s in [schema, *subs]:
        extra = s.get("additionalProperties")
        if isinstance(extra, dict):
            return extra
    return None


def _declares_type(schema: dict, root: dict) -> bool:
    schema = _resolve(schema, root)
    return any(k in schema for k in ("type", "enum", "const")) or any(
        _declares_type(s, root) for k in ("oneOf", "anyOf", "allOf") for s in schema.get(k, []))
