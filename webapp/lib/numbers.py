"""Bounds on the numbers a request may carry.

Every named numeric field of the API has a bound in its schema (``ID``, ``COUNT``,
``field(...)``); free-form JSON (a teacher's ``params``, a job's ``config``) accepts only
finite numbers of bounded magnitude (``check_json_numbers``). Python's integers are
unbounded and a 400-digit one overflows wherever it meets a float or a database integer:
such a value is the client's mistake, answered 422 naming the field, never a 500.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field

LARGEST = 2**63 - 1  # PostgreSQL's bigint; a seed's range (teachers.params)
ID = Field(ge=1, le=LARGEST, description="An object's id.")


def check_json_numbers(value: Any, where: str = "") -> Any:
    """``value`` if every number in it is finite and at most ``LARGEST`` in magnitude;
    raises ValueError naming where the first one that is not sits."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where or 'value'}: numbers must be finite (got {value!r})")
        if abs(value) > LARGEST:
            shown = (
                repr(value) if len(repr(value)) <= 30 else f"a {len(str(abs(value)))}-digit number"
            )
            raise ValueError(f"{where or 'value'}: {shown} is out of range (at most 2^63 - 1)")
        return value
    if isinstance(value, dict):
        for key, item in value.items():
            check_json_numbers(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_json_numbers(item, f"{where}[{i}]")
    return value
