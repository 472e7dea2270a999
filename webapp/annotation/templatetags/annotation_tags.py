"""Number formatting for the results page: "—" for undefined statistics (nan)."""

from __future__ import annotations

import math

from django import template

register = template.Library()


@register.filter
def num(value, digits: int = 2) -> str:
    """A float with ``digits`` decimals (a dot, never localized); "—" for None or nan."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{float(value):.{int(digits)}f}"


@register.filter
def css_pct(value) -> str:
    """A percentage for a style attribute, clamped to [0, 100]."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return "0"
    return f"{min(100.0, max(0.0, 0.0 if math.isnan(number) else number)):.2f}"
