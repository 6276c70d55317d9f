"""Changed values of declared settings, made from the declaration alone (pipeline/core/settings.py), so that a new
setting is covered by the precedence and rerun tests without writing a test for it."""
import typing
from typing import Literal

from pipeline.core.settings import COMPUTED, RUN, RUNTIME, declared_settings, kind_of, readers_of

__all__ = ["COMPUTED", "RUN", "RUNTIME", "changed", "command_line_word", "settings_to_change"]


def _bounds(info) -> dict:
    out = {}
    for m in info.metadata:
        for attr in ("ge", "gt", "le", "lt", "multiple_of"):
            if getattr(m, attr, None) is not None:
                out[attr] = getattr(m, attr)
    return out


def _fits(value, b: dict) -> bool:
    return (value >= b.get("ge", value) and value > b.get("gt", value - 1) and value <= b.get("le", value)
            and value < b.get("lt", value + 1) and (value % b["multiple_of"] == 0 if "multiple_of" in b else True))


def _options(annotation) -> list:
    """The values a Literal/bool part of the type can take, in order."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return list(args)
    if annotation is bool:
        return [True, False]
    if origin in (typing.Union, __import__("types").UnionType):
        return [o for a in args for o in _options(a)]
    return []


def changed(info, current, file: str):
    """A valid value of the setting other than ``current``: its declared ``alt``, another option, the next
    number within range. ``file``: an existing file for settings that take a path."""
    alt = (info.json_schema_extra or {}).get("alt")
    if alt == "<file>":
        alt = file
    if alt is not None and alt != current and list(alt if isinstance(alt, tuple) else [alt]) != (
            current if isinstance(current, list) else [current]):
        return alt
    # type and value: True == 1, but a bool setting's options are not an integer's
    options = [o for o in _options(info.annotation) if (type(o), o) != (type(current), current)]
    if options:
        return options[0]
    b = _bounds(info)
    if isinstance(current, bool) or current is None:
        raise AssertionError(f"no changed value for {current!r}: declare alt=")
    if isinstance(current, int):
        step = b.get("multiple_of", 1)
        return current + step if _fits(current + step, b) else current - step
    if isinstance(current, float):
        for candidate in (current * 1.25, current * 0.8, current + 0.1):
            if candidate != current and _fits(candidate, b):
                return round(candidate, 6)
    if isinstance(current, list) and current and isinstance(current[-1], (int, float)):
        return current[:-1] + [current[-1] + 1]
    if isinstance(current, str) and current:
        return current + "x"
    if current == "":
        return "elsewhere"
    raise AssertionError(f"no changed value for {current!r}: declare alt=")


def command_line_word(value):
    """``value`` as Snakemake's ``--config`` hands it over: every scalar a string (YAML's BaseLoader)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return [command_line_word(v) for v in value]
    return str(value)


def settings_to_change():
    """(dotted key, kind, readers, FieldInfo) of every computed and runtime setting."""
    for key, cls, name, info in declared_settings():
        kind = kind_of(cls, name)
        if kind != RUN:
            yield key, kind, (readers_of(cls, name) if kind == COMPUTED else ()), info


def nested(dotted: str, value) -> dict:
    """{"a": {"b": value}} from "a.b"."""
    out = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def lookup(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d
