"""A person's annotation queue: what they have left, what comes next, what they may undo.

Read-only queries (the writes are in actions.py). Everything here is scoped to one
person's own assignments, which is what keeps annotators to their items.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db.models import Count, Exists, F, OuterRef, QuerySet
from django.utils import timezone

from webapp.annotation.actions import UNDO_WINDOW
from webapp.annotation.models import Assignment, Campaign, Vote
from webapp.promptsets.models import Prompt
from webapp.teams.models import Team


def _live_vote():
    return Vote.objects.filter(assignment=OuterRef("pk"), undone_at__isnull=True)


def mine(user: User, campaign: Campaign) -> QuerySet[Assignment]:
    return Assignment.objects.filter(campaign=campaign, annotator=user)


def next_assignment(user: User, campaign: Campaign) -> Assignment | None:
    """The first item without a live vote; skipped ones come after the others. None
    once the campaign is closed."""
    if campaign.is_closed:
        return None
    return (
        mine(user, campaign)
        .filter(~Exists(_live_vote()))
        .order_by(F("skipped_at").asc(nulls_first=True), "position")
        .first()
    )


def progress(user: User, campaign: Campaign) -> tuple[int, int]:
    """(voted, assigned) for the progress bar: "12 / 50"."""
    counts = mine(user, campaign).aggregate(
        total=Count("id"), done=Count("id", filter=Exists(_live_vote()))
    )
    return counts["done"], counts["total"]


def can_undo(user: User, campaign: Campaign) -> bool:
    last = (
        Vote.objects.filter(annotator=user, assignment__campaign=campaign)
        .order_by("-created_at", "-id")
        .values_list("created_at", "undone_at")
        .first()
    )
    return bool(last and last[1] is None and last[0] >= timezone.now() - UNDO_WINDOW)


def has_live_vote(assignment: Assignment) -> bool:
    return Vote.objects.filter(assignment=assignment, undone_at__isnull=True).exists()


@dataclass
class QueueRow:
    campaign: Campaign
    done: int
    total: int

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100


def my_campaigns(user: User, team: Team) -> list[QueueRow]:
    rows = (
        Assignment.objects.filter(annotator=user, campaign__evaluation__team=team)
        .values("campaign")
        .annotate(total=Count("id"), done=Count("id", filter=Exists(_live_vote())))
    )
    by_id = {r["campaign"]: r for r in rows}
    campaigns = Campaign.objects.filter(pk__in=by_id).order_by("-created_at")
    return [QueueRow(c, by_id[c.pk]["done"], by_id[c.pk]["total"]) for c in campaigns]


def shown(assignment: Assignment) -> dict:
    """What the annotation screen shows for an assignment: the prompt and two answers,
    in the item's recorded order. No system, job or model name leaves this function."""
    from webapp.evaluation.models import SystemAnswer

    item = assignment.item
    pair = item.pair
    answers = dict(
        SystemAnswer.objects.filter(
            prompt_id=item.prompt_id, system_id__in=[pair.system_a_id, pair.system_b_id]
        ).values_list("system_id", "response")
    )
    a, b = answers.get(pair.system_a_id, ""), answers.get(pair.system_b_id, "")
    left, right = (a, b) if item.a_on_left else (b, a)
    prompt = Prompt.objects.values_list("messages", flat=True).get(pk=item.prompt_id)
    return {"messages": prompt, "left": left, "right": right}
