"""Small helpers shared by the server-rendered pages of several apps."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django import forms
from django.contrib.auth.models import User
from django.http import HttpRequest

from webapp.lib.errors import ActionError

T = TypeVar("T")


def submit(form: forms.Form, create: Callable[[dict], T]) -> tuple[T | None, int]:
    """``create(cleaned_data)`` for a valid form: (what it made, 200). An invalid form,
    or an ActionError (shown as the form's error), gives (None, 422)."""
    if not form.is_valid():
        return None, 422
    try:
        return create(form.cleaned_data), 200
    except ActionError as refused:
        form.add_error(None, str(refused))
        return None, 422


def form_problems(form: forms.Form) -> str:
    """A form's errors as one line for an API answer: each field named ("field: why")."""
    return "; ".join(
        f"{'' if field == '__all__' else field + ': '}{message}"
        for field, messages in form.errors.items()
        for message in messages
    )


def wants_json(request: HttpRequest) -> bool:
    return request.headers.get("Accept", "").startswith("application/json")


class AuthenticatedRequest(HttpRequest):
    """The request of a ``login_required`` view: its user is a signed-in ``User``."""

    user: User
