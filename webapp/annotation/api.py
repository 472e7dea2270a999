"""/api/v1 campaigns: create one on an evaluation, close or reopen it, read it, and export
its votes (DESIGN.md, "REST API v1"). Voting stays on the page: it is a person's blind
judgement. The campaign form validates the payload, as on the page."""

from __future__ import annotations

from datetime import datetime

from django.http import QueryDict, StreamingHttpResponse
from ninja import Field, Router, Schema, Status

from webapp.annotation import actions, report
from webapp.annotation.forms import CampaignForm
from webapp.annotation.models import Campaign
from webapp.evaluation.api import evaluation_for
from webapp.lib import pages
from webapp.lib.errors import ApiError
from webapp.lib.numbers import LARGEST
from webapp.teams import access

router = Router(tags=["campaigns"])


class CampaignIn(Schema):
    """Each field may be left out for the form's default: the default pairs (each job
    against its student before distillation, and the teacher), the team's annotators,
    two annotators per item, a random seed."""

    title: str | None = Field(None, min_length=1, max_length=200)
    pairs: list[tuple[int, int]] | None = Field(
        None, description="System ids [a, b]: results are stated from a's side."
    )
    annotators: list[int] | None = Field(None, description="User ids of team members.")
    overlap: int | None = Field(None, ge=1, le=actions.MAX_OVERLAP)
    seed: int | None = Field(None, ge=0, le=LARGEST)


class CampaignOut(Schema):
    id: int
    evaluation: int
    title: str
    overlap: int
    seed: int
    created_at: datetime
    closed: bool
    votes: int
    assignments: int

    @staticmethod
    def resolve_evaluation(obj: Campaign) -> int:
        return obj.evaluation_id

    @staticmethod
    def resolve_closed(obj: Campaign) -> bool:
        return obj.closed_at is not None

    @staticmethod
    def resolve_votes(obj: Campaign) -> int:
        return len(report.vote_rows(obj))

    @staticmethod
    def resolve_assignments(obj: Campaign) -> int:
        return obj.assignments.count()


def campaign_for(request, campaign_id: int) -> Campaign:
    return access.get_object(
        Campaign.objects.select_related("evaluation__team"),
        request.user,
        campaign_id,
        access.LAUNCH_ROLES,
        team_field="evaluation__team",
    )


@router.post(
    "/evaluations/{int:evaluation_id}/campaigns",
    response={201: CampaignOut},
    summary="Open a blind side-by-side annotation campaign on an evaluation",
)
def create_campaign(request, evaluation_id: int, payload: CampaignIn):
    evaluation = evaluation_for(request, evaluation_id)
    defaults = CampaignForm(evaluation, creator=request.user)
    data = QueryDict(mutable=True)
    given = payload.dict()
    data["title"] = given["title"] or defaults.fields["title"].initial
    pairs = given["pairs"]
    data.setlist(
        "pairs",
        [f"{a}:{b}" for a, b in pairs] if pairs is not None else defaults.fields["pairs"].initial,
    )
    people = given["annotators"]
    data.setlist("annotators", [str(p) for p in people or defaults.fields["annotators"].initial])
    data["overlap"] = str(given["overlap"] or defaults.fields["overlap"].initial)
    if given["seed"] is not None:
        data["seed"] = str(given["seed"])
    form = CampaignForm(evaluation, data, creator=request.user)
    campaign, _ = pages.submit(
        form,
        lambda _: form.create(request.user),
    )
    if campaign is None:
        raise ApiError(422, pages.form_problems(form))
    return Status(201, campaign)


@router.get("/campaigns/{int:campaign_id}", response=CampaignOut, summary="One campaign")
def get_campaign(request, campaign_id: int):
    return campaign_for(request, campaign_id)


@router.post(
    "/campaigns/{int:campaign_id}/close",
    response=CampaignOut,
    summary="Close a campaign: no more votes, the results are final",
)
def close_campaign(request, campaign_id: int):
    return _changed(request, campaign_id, actions.close_campaign)


@router.post(
    "/campaigns/{int:campaign_id}/reopen",
    response=CampaignOut,
    summary="Reopen a closed campaign for the items still without a vote",
)
def reopen_campaign(request, campaign_id: int):
    return _changed(request, campaign_id, actions.reopen_campaign)


def _changed(request, campaign_id: int, change) -> Campaign:
    """The campaign after ``change`` (closing or reopening; a no-op when it already is)."""
    campaign = campaign_for(request, campaign_id)
    change(campaign)
    campaign.refresh_from_db()
    return campaign


@router.get(
    "/campaigns/{int:campaign_id}/votes",
    summary="The campaign's votes as CSV (default) or JSON Lines (format=jsonl)",
)
def export_votes(request, campaign_id: int, format: str = "csv"):
    if format not in ("csv", "jsonl"):
        raise ApiError(422, f"format: 'csv' or 'jsonl' (got {format!r})")
    campaign = campaign_for(request, campaign_id)
    if format == "jsonl":
        lines, kind = report.jsonl_lines(campaign), "application/x-ndjson"
    else:
        lines, kind = report.csv_lines(campaign), "text/csv; charset=utf-8"
    response = StreamingHttpResponse(lines, content_type=kind)
    response["Content-Disposition"] = (
        f'attachment; filename="campaign-{campaign.pk}-votes.{format}"'
    )
    return response
