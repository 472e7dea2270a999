"""Secrets at rest (teacher API keys, a team's tracker keys): Fernet with
``settings.GAD_FIELD_KEY``.

Only this module sees both the key and its ciphertext. Callers decrypt at the last
moment (the worker, right before the request) and never log the result.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.http import HttpRequest
from django.views.debug import SafeExceptionReporterFilter
from django.views.decorators.debug import sensitive_variables


class KeyUnreadable(Exception):
    """The stored ciphertext does not decrypt with the current GAD_FIELD_KEY."""


def _fernet() -> MultiFernet:
    """The current key first (it encrypts), then the previous ones during a rotation
    (``GAD_FIELD_KEY_PREVIOUS``: they still decrypt). Built per call rather than at
    import: settings are read when used, never at import."""
    keys = [settings.GAD_FIELD_KEY, *settings.GAD_FIELD_KEY_PREVIOUS]
    return MultiFernet([Fernet(k.encode()) for k in keys])


def reencrypt(token: str) -> str:
    """The same secret encrypted with the current key (``rotate_field_key``)."""
    try:
        return _fernet().rotate(token.encode()).decode()
    except (InvalidToken, ValueError):
        raise KeyUnreadable(
            "encrypted with none of GAD_FIELD_KEY, GAD_FIELD_KEY_PREVIOUS"
        ) from None


@sensitive_variables("plain")
def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str, where: str = "the teacher's page") -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except (InvalidToken, ValueError):
        raise KeyUnreadable(
            "the stored API key cannot be decrypted with the current GAD_FIELD_KEY (was it "
            f"changed?); enter the key again on {where}"
        ) from None


class _FilterEvenInDebug(SafeExceptionReporterFilter):
    def is_active(self, request) -> bool:
        return True


def hide_key_in_error_reports(request: HttpRequest) -> None:
    """Mask ``sensitive_*`` POST fields and locals in this request's error reports.

    Django masks them only with DEBUG off; a teacher's key must not reach even a
    developer's technical 500 page (or a screenshot of it).
    """
    request.exception_reporter_filter = _FilterEvenInDebug()  # type: ignore[attr-defined]  # Django reads it
