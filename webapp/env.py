"""Typed readers for settings that come from the environment.

Every reader raises ``ImproperlyConfigured`` naming the variable when a value is
malformed: a typo in a deployment must stop the process at start, never become a
silent default. ``NAME_FILE`` is honoured for every variable, so secrets can come
from mounted files (Docker/Kubernetes secrets) instead of the process environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def raw(name: str) -> str | None:
    """The variable's value, read from ``NAME_FILE`` when that is set instead."""
    file_var = f"{name}_FILE"
    if os.environ.get(file_var):
        path = Path(os.environ[file_var])
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{file_var}={path}: cannot read the file ({exc})") from exc
    return os.environ.get(name)


def string(name: str, default: str | None = None) -> str | None:
    value = raw(name)
    return default if value is None else value


def required(name: str, why: str) -> str:
    value = raw(name)
    if not value:
        raise ImproperlyConfigured(f"{name} is not set; {why}")
    return value


def boolean(name: str, default: bool) -> bool:
    value = raw(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use 1/0, true/false or yes/no")


def integer(name: str, default: int, minimum: int | None = None) -> int:
    value = raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} must be at least {minimum}")
    return number


def number(name: str) -> float:
    value = raw(name)
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ImproperlyConfigured(f"{name}={value!r} is not a number") from None


def str_list(name: str, default: list[str]) -> list[str]:
    """Comma-separated list; blanks around items are dropped."""
    value = raw(name)
    if value is None:
        return list(default)
    return [item.strip() for item in value.split(",") if item.strip()]


def int_list(name: str, default: list[int]) -> list[int]:
    items = str_list(name, [str(i) for i in default])
    try:
        numbers = [int(item) for item in items]
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={raw(name)!r} must be a comma-separated list of integers, e.g. 0,1,2,3"
        ) from None
    if any(n < 0 for n in numbers) or len(set(numbers)) != len(numbers):
        raise ImproperlyConfigured(f"{name}={raw(name)!r}: indices must be distinct and >= 0")
    return numbers


def fernet_key(name: str, value: str) -> str:
    """Check that ``value`` is a Fernet key (32 url-safe base64 bytes)."""
    from cryptography.fernet import Fernet

    try:
        Fernet(value.encode())
    except (ValueError, TypeError):
        raise ImproperlyConfigured(
            f"{name} is not a valid Fernet key; generate one with "
            '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`'
        ) from None
    return value
