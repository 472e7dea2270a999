"""How the evaluation pages, and the pages of the apps built on evaluations, fetch one."""

from __future__ import annotations

from webapp.evaluation.models import Evaluation
from webapp.lib.pages import AuthenticatedRequest
from webapp.teams import access


def evaluation_for(request: AuthenticatedRequest, slug: str, pk: int) -> Evaluation:
    """The team's evaluation (404 for another team's, 403 for an annotator)."""
    return access.get_object(
        Evaluation.objects.select_related("team", "prompt_set"),
        request.user,
        pk,
        access.LAUNCH_ROLES,
        slug=slug,
    )
