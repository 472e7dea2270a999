"""Model text on its way into the database."""

from __future__ import annotations

from typing import Any


def scrub(value: Any) -> Any:
    """``value`` with NUL characters replaced: PostgreSQL's text and JSON cannot hold
    them, and an untrained model may emit anything."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    return value
