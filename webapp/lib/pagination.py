"""Pages of an API list that keep the v1 contract, a bare JSON array: ``limit`` (default
100, at most 500) and ``offset`` choose the page; the total goes in ``X-Total-Count`` and
the next page's URL in ``Link: <…>; rel="next"``, GitHub's convention.

django-ninja's own ``@paginate`` wraps the array in ``{"items": […], "count": n}``, which
would break every script written against v1, so the page is cut here and the headers set
on ninja's temporal response (a view's ``response: HttpResponse`` parameter).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from ninja import Query

from webapp.lib.numbers import LARGEST

T = TypeVar("T")

DEFAULT_LIMIT = 100
MAX_LIMIT = 500

# The two query parameters of every list route, with their bounds (so the schema states
# them and ninja answers 422 outside them).
Limit = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="Items per page (at most 500).")
Offset = Query(0, ge=0, le=LARGEST, description="Items to skip: the page's start.")


def page(
    request: HttpRequest,
    response: HttpResponse,
    rows: QuerySet[Any] | Sequence[T],
    limit: int,
    offset: int,
) -> list[Any]:
    """``rows[offset:offset + limit]``, with the total and the next page in the headers."""
    total = rows.count() if isinstance(rows, QuerySet) else len(rows)
    response["X-Total-Count"] = str(total)
    if offset + limit < total:
        query = request.GET.copy()
        query["limit"], query["offset"] = str(limit), str(offset + limit)
        url = request.build_absolute_uri(request.path) + "?" + urlencode(sorted(query.items()))
        response["Link"] = f'<{url}>; rel="next"'
    return list(rows[offset : offset + limit])
