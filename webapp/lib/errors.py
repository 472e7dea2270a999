"""The errors every layer may raise for a person to read."""

from __future__ import annotations

from ninja.errors import HttpError


class ActionError(Exception):
    """A refused action; the message is shown to the user as it is."""


class ApiError(HttpError):
    """An API error carrying a machine-readable code beside the message (the REST API's
    ``{"error": code, "detail": message}``)."""

    def __init__(self, status: int, detail: str, code: str | None = None):
        super().__init__(status, detail)
        self.code = code
