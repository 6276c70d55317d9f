"""Stage settings from config dicts: a key the stage does not know is an error naming it, never ignored."""
from __future__ import annotations

from dataclasses import fields


def from_dict(cls, d: dict, what: str):
    """``cls(**d)`` for a settings dataclass, after checking every key of ``d`` is one of its fields."""
    unknown = sorted(set(d) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown {what} setting(s): {', '.join(unknown)}")
    return cls(**d)
