"""Teacher API keys at rest: Fernet with ``settings.GAD_FIELD_KEY``.

Only this module sees both the key and its ciphertext. Callers decrypt at the last
moment (the worker, right before the request) and never log the result.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


class KeyUnreadable(Exception):
    """The stored ciphertext does not decrypt with the current GAD_FIELD_KEY."""


def _fernet() -> Fernet:
    # Built per call rather than at import: settings are read when used, never at import.
    return Fernet(settings.GAD_FIELD_KEY.encode())


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode()).decode()
    except (InvalidToken, ValueError):
        raise KeyUnreadable(
            "the stored API key cannot be decrypted with the current GAD_FIELD_KEY (was it "
            "changed?); enter the key again on the teacher's page"
        ) from None
