"""The annotation app's part of the evaluation pages (``webapp.evaluation.panels``): the
evaluation's campaigns, and on the list page the person's own annotation queue."""

from __future__ import annotations

from django.http import HttpRequest

from webapp.annotation import queue
from webapp.evaluation.models import EvalStatus, Evaluation
from webapp.evaluation.panels import Panel
from webapp.teams.models import Team


def context(evaluation: Evaluation, request: HttpRequest) -> dict:
    return {
        "campaigns": evaluation.campaigns.all(),
        "can_campaign": evaluation.status != EvalStatus.GENERATING,
    }


def list_context(user, team: Team) -> dict:
    return {"queue": queue.my_campaigns(user, team)}


PANEL = Panel(
    name="annotation",
    position=20,
    template="annotation/_campaigns.html",
    context=context,
    list_template="annotation/_queue_note.html",
    list_context=list_context,
)
