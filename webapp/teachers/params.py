"""Default sampling parameters of a teacher endpoint, validated in one place.

Pages send strings and the API sends JSON numbers; both come through ``clean_params``
so that a bad value gets the same message, naming the field, wherever it came from.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from typing import Any

# name: (kind, lowest, highest, help shown in messages)
RULES: dict[str, tuple[type, float, float, str]] = {
    "temperature": (float, 0.0, 2.0, "a number from 0 to 2"),
    "top_p": (float, 0.0, 1.0, "a number above 0 and at most 1"),
    "max_tokens": (int, 1, 1_000_000, "a whole number from 1 to 1000000"),
    "seed": (int, -(2**63), 2**63 - 1, "a whole number"),
}


class ParamError(ValueError):
    def __init__(self, field: str, message: str):
        self.field = field  # "params.temperature"
        self.message = message
        super().__init__(f"{field}: {message}")


def clean_params(raw: dict[str, Any] | None) -> dict[str, float | int]:
    """The params with blanks and nulls dropped; raise ``ParamError`` for the first bad one."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ParamError("params", 'must be an object such as {"temperature": 0.7}')
    unknown = sorted(set(raw) - set(RULES))
    if unknown:
        raise ParamError(
            f"params.{unknown[0]}", f"unknown parameter; the valid ones are {', '.join(RULES)}"
        )
    clean: dict[str, float | int] = {}
    for name, (kind, low, high, wanted) in RULES.items():
        value = raw.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        number = _number(value, kind)
        if number is None or not low <= number <= high or (name == "top_p" and number == 0):
            raise ParamError(f"params.{name}", f"{value!r} is not valid; use {wanted}")
        clean[name] = number
    return clean


def _number(value: Any, kind: type) -> float | int | None:
    if isinstance(value, bool):
        return None  # True is an int to Python, never a temperature to a person
    try:
        if isinstance(value, str):
            value = float(value.strip()) if kind is float else int(value.strip())
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if kind is int:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return value if isinstance(value, int) else None
        # A 400-digit integer is an int to JSON and too large for a float.
        return float(value) if isinstance(value, int | float) else None
    except (ValueError, OverflowError):
        return None


# Vendor options an endpoint may add to every request (its ``extra_body``): sampling knobs
# and thinking switches that servers document, nothing that changes what comes back
# (``n``, ``stream``, ``logprobs``, tools) or what it costs per request. Values are JSON,
# at most EXTRA_BODY_BYTES in all.
EXTRA_BODY_KEYS = {
    "top_k": "vLLM (transformers serve refuses it: HTTP 422)",
    "min_p": "vLLM",
    "repetition_penalty": "vLLM",
    "presence_penalty": "OpenAI, vLLM",
    "frequency_penalty": "OpenAI, vLLM",
    "stop": "OpenAI, vLLM",
    "verbosity": "OpenAI GPT-5",
    "service_tier": "OpenAI",
    "chat_template_kwargs": 'vLLM, e.g. {"enable_thinking": false}',
    "thinking": "Anthropic's OpenAI SDK compatibility",
    "extra_body": "Gemini's OpenAI compatibility (its google.thinking_config)",
}
EXTRA_BODY_BYTES = 2000


def clean_extra_body(raw: Any) -> dict[str, Any]:
    """The allow-listed vendor options; raise ``ParamError`` naming the first bad key."""
    import json

    if raw is None or raw == "":
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ParamError("extra_body", f'is not JSON ({exc}); e.g. {{"top_k": 20}}') from None
    if not isinstance(raw, dict):
        raise ParamError("extra_body", 'must be a JSON object such as {"top_k": 20}')
    for key in raw:
        if key not in EXTRA_BODY_KEYS:
            raise ParamError(
                f"extra_body.{str(key)[:40]}",
                f"is not an allowed option; allowed: {', '.join(sorted(EXTRA_BODY_KEYS))}",
            )
    try:
        size = len(json.dumps(raw, allow_nan=False))
    except ValueError:
        raise ParamError("extra_body", "holds a number that is not finite") from None
    if size > EXTRA_BODY_BYTES:
        raise ParamError("extra_body", f"is {size} bytes of JSON; at most {EXTRA_BODY_BYTES}")
    return raw


# An endpoint's rate limits (trainer.ratelimit.Limits): name: (lowest, highest, help).
LIMIT_RULES: dict[str, tuple[int, int, str]] = {
    "requests_per_minute": (1, 1_000_000, "a whole number from 1 to 1000000, or blank"),
    "tokens_per_minute": (1, 1_000_000_000, "a whole number from 1 to 1000000000, or blank"),
    "concurrency": (1, 256, "a whole number from 1 to 256"),
}


def clean_limits(raw: dict[str, Any]) -> dict[str, int | None]:
    """The limits given (absent: unchanged; blank: none, except concurrency)."""
    clean: dict[str, int | None] = {}
    for name, value in raw.items():
        low, high, wanted = LIMIT_RULES[name]
        if value is None or (isinstance(value, str) and not value.strip()):
            if name == "concurrency":
                continue
            clean[name] = None
            continue
        number = _number(value, int)
        if number is None or not low <= number <= high:
            raise ParamError(name, f"{str(value)[:40]!r} is not valid; use {wanted}")
        clean[name] = int(number)
    return clean


# An endpoint's prices (trainer.pricing.Prices), US dollars per million tokens.
PRICE_FIELDS = ("price_input", "price_output", "price_cached_input", "batch_discount")


def clean_prices(raw: dict[str, Any]) -> dict[str, Decimal | None]:
    """The prices given (absent: unchanged; blank: none, the site's default)."""
    clean: dict[str, Decimal | None] = {}
    for name, value in raw.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            if name != "batch_discount":
                clean[name] = None
            continue
        high = Decimal(1) if name == "batch_discount" else Decimal(100_000)
        wanted = (
            "a share from 0 to 1, e.g. 0.5"
            if name == "batch_discount"
            else ("dollars per million tokens, from 0 to 100000, e.g. 1.25")
        )
        try:
            number = Decimal(str(value).strip()) if not isinstance(value, bool) else None
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite() or not 0 <= number <= high:
            raise ParamError(name, f"{str(value)[:40]!r} is not valid; use {wanted}")
        clean[name] = number.quantize(Decimal("0.0001"))
    return clean
