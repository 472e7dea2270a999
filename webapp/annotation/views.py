"""Annotation pages.

Members and owners: new campaigns, their results, closing and exports. Everyone in the
team: their own annotation queue. Annotation pages are built from ``queue.shown`` only
and address items by the assignment's opaque key, so no system, job or model name
reaches an annotator (not in the HTML, not in a URL).
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import (
    Http404,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.annotation import actions, queue, report
from webapp.annotation.forms import CampaignForm, VoteForm
from webapp.annotation.markdown import render as markdown
from webapp.annotation.models import Assignment, Campaign
from webapp.evaluation.access import evaluation_for
from webapp.lib import pages
from webapp.lib.errors import ActionError
from webapp.lib.pages import AuthenticatedRequest
from webapp.teams import access


def _campaign(request: AuthenticatedRequest, slug: str, pk: int) -> Campaign:
    return access.get_object(
        Campaign.objects.select_related("evaluation__team"),
        request.user,
        pk,
        access.LAUNCH_ROLES,
        team_field="evaluation__team",
        slug=slug,
    )


@login_required
def campaign_create(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    evaluation = evaluation_for(request, slug, pk)
    status = 200
    form = CampaignForm(evaluation, request.POST or None, creator=request.user)
    if request.method == "POST":
        campaign, status = pages.submit(
            form,
            lambda _: form.create(request.user),
        )
        if campaign is not None:
            messages.success(request, f"Campaign {campaign.title!r} is open to its annotators.")
            return redirect("campaign", slug=slug, pk=campaign.pk)
    return render(
        request,
        "annotation/campaign_create.html",
        {"team": evaluation.team, "evaluation": evaluation, "form": form},
        status=status,
    )


# ----------------------------------------------------------------------------- results


@login_required
@require_GET
def campaign_results(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    """The results page; ``?fragment=1&v=V`` answers the page's poll: 204 while the
    votes are unchanged since version V, else the results block alone."""
    campaign = _campaign(request, slug, pk)
    fragment = request.GET.get("fragment") == "1"
    if fragment and request.GET.get("v") == report.version(campaign):
        return HttpResponse(status=204)
    context = {
        "team": campaign.evaluation.team,
        "campaign": campaign,
        "evaluation": campaign.evaluation,
        "results": report.results(campaign),
    }
    if fragment:
        return render(request, "annotation/_results.html", context)
    return render(request, "annotation/results.html", context)


@login_required
@require_POST
def campaign_close(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    """Close the campaign (no more votes; results final), or reopen it."""
    campaign = _campaign(request, slug, pk)
    action = request.POST.get("action")
    if action == "close":
        if actions.close_campaign(campaign):
            messages.success(
                request, "Closed: annotators can no longer vote; the results are final."
            )
    elif action == "reopen":
        if actions.reopen_campaign(campaign):
            messages.success(
                request, "Reopened: annotators can vote on their remaining items again."
            )
    else:
        messages.error(request, "Choose close or reopen.")
    return redirect("campaign", slug=slug, pk=pk)


@login_required
@require_GET
def campaign_export(request: AuthenticatedRequest, slug: str, pk: int) -> StreamingHttpResponse:
    campaign = _campaign(request, slug, pk)
    if request.GET.get("format") == "jsonl":
        lines, kind, ext = report.jsonl_lines(campaign), "application/x-ndjson", "jsonl"
    else:
        lines, kind, ext = report.csv_lines(campaign), "text/csv; charset=utf-8", "csv"
    response = StreamingHttpResponse(lines, content_type=kind)
    response["Content-Disposition"] = f'attachment; filename="campaign-{campaign.pk}-votes.{ext}"'
    return response


# ----------------------------------------------------------------------------- annotation


def _my_assignment(request: AuthenticatedRequest, slug: str, key: str) -> Assignment:
    """The user's own assignment: anyone else's (or an unknown key) is a 404."""
    team, _ = access.get_team(request.user, slug)
    return get_object_or_404(
        Assignment.objects.select_related("campaign", "item__pair"),
        key=key,
        annotator=request.user,
        campaign__evaluation__team=team,
    )


def _my_campaign(request: AuthenticatedRequest, slug: str, pk: int) -> Campaign:
    team, _ = access.get_team(request.user, slug)
    campaign = get_object_or_404(Campaign, evaluation__team=team, pk=pk)
    if not queue.mine(request.user, campaign).exists():
        raise Http404("No items of this campaign are assigned to you.")
    return campaign


@login_required
def annotate_home(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    team, role = access.get_team(request.user, slug)
    return render(
        request,
        "annotation/annotate_home.html",
        {"team": team, "role": role, "rows": queue.my_campaigns(request.user, team)},
    )


@login_required
@require_GET
def annotate_campaign(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    campaign = _my_campaign(request, slug, pk)
    nxt = queue.next_assignment(request.user, campaign)
    if nxt is not None:
        return redirect("annotate-item", slug=slug, key=nxt.key)
    return render(request, "annotation/annotate.html", _screen(request, slug, campaign, None))


def _screen(request: AuthenticatedRequest, slug: str, campaign: Campaign, assignment) -> dict:
    """The annotation screen's context: one item (or none left) and the person's progress."""
    done, total = queue.progress(request.user, campaign)
    context = {
        "slug": slug,
        "campaign": campaign,
        "assignment": assignment,
        "done": done,
        "total": total,
        "percent": round(100 * done / total) if total else 100,
        "can_undo": queue.can_undo(request.user, campaign),
        "undo_url": reverse("annotate-undo", kwargs={"slug": slug, "pk": campaign.pk}),
    }
    if assignment is not None:
        shown = queue.shown(assignment)
        context |= {
            "turns": [
                {"role": m.get("role", "user"), "html": markdown(str(m.get("content", "")))}
                for m in shown["messages"]
            ],
            "left_html": markdown(shown["left"]),
            "right_html": markdown(shown["right"]),
            "vote_url": reverse("annotate-vote", kwargs={"slug": slug, "key": assignment.key}),
            "skip_url": reverse("annotate-skip", kwargs={"slug": slug, "key": assignment.key}),
            "item_url": reverse("annotate-item", kwargs={"slug": slug, "key": assignment.key}),
        }
    return context


def _to_next(
    request: AuthenticatedRequest, slug: str, campaign: Campaign, error: str | None = None
):
    """After a vote, skip or refusal: the next item (JSON for the page's script, else a redirect)."""
    if pages.wants_json(request):
        nxt = queue.next_assignment(request.user, campaign)
        return _screen_json(request, slug, campaign, nxt, **({"error": error} if error else {}))
    return redirect("annotate-campaign", slug=slug, pk=campaign.pk)


def _screen_json(request: AuthenticatedRequest, slug: str, campaign: Campaign, assignment, **extra):
    context = _screen(request, slug, campaign, assignment)
    return JsonResponse(
        {
            "html": render_to_string("annotation/_screen.html", context, request=request),
            "url": context.get("item_url")
            or reverse("annotate-campaign", kwargs={"slug": slug, "pk": campaign.pk}),
            "done": context["done"],
            "total": context["total"],
            **extra,
        }
    )


@login_required
@require_GET
def annotate_item(request: AuthenticatedRequest, slug: str, key: str) -> HttpResponse:
    assignment = _my_assignment(request, slug, key)
    if queue.has_live_vote(assignment) or assignment.campaign.is_closed:
        # Voted already (back button, an old tab): votes are final, go on to the next item
        # (or to the closed campaign's notice).
        return redirect("annotate-campaign", slug=slug, pk=assignment.campaign_id)
    return render(
        request, "annotation/annotate.html", _screen(request, slug, assignment.campaign, assignment)
    )


@login_required
@require_POST
def annotate_vote(request: AuthenticatedRequest, slug: str, key: str) -> HttpResponse:
    assignment = _my_assignment(request, slug, key)
    campaign = assignment.campaign
    form = VoteForm(request.POST)
    if not form.is_valid():
        if pages.wants_json(request):
            return JsonResponse(
                {"error": "invalid", "detail": "Choose left, tie or right."}, status=422
            )
        return HttpResponse("Choose left, tie or right.", status=422, content_type="text/plain")
    try:
        actions.record_vote(
            assignment, request.user, form.cleaned_data["choice"], form.cleaned_data["comment"]
        )
    except (actions.AlreadyVoted, actions.CampaignClosed) as refused:
        campaign.refresh_from_db(fields=["closed_at"])  # closed while the vote was on its way
        if pages.wants_json(request):
            return _to_next(request, slug, campaign, error=str(refused))
        messages.info(request, str(refused))
    return _to_next(request, slug, campaign)


@login_required
@require_POST
def annotate_skip(request: AuthenticatedRequest, slug: str, key: str) -> HttpResponse:
    assignment = _my_assignment(request, slug, key)
    campaign = assignment.campaign
    if not queue.has_live_vote(assignment):
        try:
            actions.skip(assignment)
        except actions.CampaignClosed as refused:
            campaign.refresh_from_db(fields=["closed_at"])  # closed after the page loaded
            if pages.wants_json(request):
                return _to_next(request, slug, campaign, error=str(refused))
            messages.info(request, str(refused))
    return _to_next(request, slug, campaign)


@login_required
@require_POST
def annotate_undo(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    campaign = _my_campaign(request, slug, pk)
    try:
        assignment = actions.undo_last_vote(request.user, campaign)
    except ActionError as refused:
        if pages.wants_json(request):
            return _to_next(request, slug, campaign, error=str(refused))
        messages.error(request, str(refused))
        return redirect("annotate-campaign", slug=slug, pk=pk)
    if pages.wants_json(request):
        return _screen_json(request, slug, campaign, assignment)
    return redirect("annotate-item", slug=slug, key=assignment.key)
