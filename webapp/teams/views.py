"""Team pages: members, and the user's profile with API tokens (the team's dashboard,
mostly its jobs, is the jobs app's)."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Sum
from django.db.models.functions import TruncMonth
from django.http import HttpResponse, HttpResponseBadRequest
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from webapp.lib.pages import AuthenticatedRequest
from webapp.teams import access, actions, spend
from webapp.teams.forms import MemberForm
from webapp.teams.models import ApiToken, Membership, Role, TeacherSpend

OWNER_ONLY = {Role.OWNER}


@login_required
def home(request: AuthenticatedRequest) -> HttpResponse:
    teams = access.user_teams(request.user)
    current = request.session.get("team")
    team = teams.filter(slug=current).first() or teams.first()
    if team is None:
        return render(request, "teams/no_team.html")
    return redirect("team", slug=team.slug)


@login_required
def members(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    team, role = access.get_team(request.user, slug, roles=access.LAUNCH_ROLES)
    form = MemberForm()
    if request.method == "POST":
        access.get_team(request.user, slug, roles=OWNER_ONLY)
        form = MemberForm(request.POST)
        if form.is_valid():
            user = form.cleaned_data["user"]
            try:
                actions.set_membership(team, user, form.cleaned_data["role"])
            except actions.ActionError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, f"{user} is now {form.cleaned_data['role']} of {team}.")
                return redirect("team-members", slug=team.slug)
    rows = (
        Membership.objects.filter(team=team)
        .select_related("user")
        .order_by("role", "user__username")
    )
    return render(
        request,
        "teams/members.html",
        {"team": team, "role": role, "members": rows, "form": form, "roles": Role.choices},
    )


@login_required
@require_POST
def remove_member(request: AuthenticatedRequest, slug: str, user_id: int) -> HttpResponse:
    team, _ = access.get_team(request.user, slug, roles=OWNER_ONLY)
    member = Membership.objects.filter(team=team, user_id=user_id).select_related("user").first()
    if member is None:
        messages.error(request, "That person is not in this team.")
    else:
        try:
            actions.remove_membership(team, member.user)
        except actions.ActionError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{member.user} was removed from {team}.")
    return redirect("team-members", slug=team.slug)


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What the token is for, e.g. 'CI script'.")


@login_required
@never_cache  # the page shows a new token once: no cache, no back-button copy may keep it
def profile(request: AuthenticatedRequest) -> HttpResponse:
    form = TokenForm()
    new_token = None
    if request.method == "POST":
        form = TokenForm(request.POST)
        if form.is_valid():
            _, new_token = actions.create_api_token(request.user, form.cleaned_data["name"])
            form = TokenForm()
    tokens = ApiToken.objects.filter(user=request.user)
    memberships = Membership.objects.filter(user=request.user).select_related("team")
    return render(
        request,
        "teams/profile.html",
        {"form": form, "tokens": tokens, "new_token": new_token, "memberships": memberships},
    )


@login_required
@require_POST
def revoke_token(request: AuthenticatedRequest, token_id: int) -> HttpResponse:
    if actions.revoke_api_token(request.user, token_id):
        messages.success(request, "Token revoked; scripts using it now get 401.")
    else:
        messages.error(request, "No such active token.")
    return redirect("profile")


@login_required
def usage(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    """What the team's teacher and judge calls cost: a month's spend by user, by what it
    was for and by endpoint, the months before, and the month's rows as CSV. Members
    and owners only: annotators see no job names and no spend."""
    team, _ = access.get_team(request.user, slug, roles=access.LAUNCH_ROLES)
    found = spend.month_range(request.GET.get("month"))
    if found is None:
        return HttpResponseBadRequest("month: use YYYY-MM, e.g. 2026-12")
    start, end = found
    if request.GET.get("format") == "csv":
        rows = spend.month_rows(team, start, end)
        response = HttpResponse(spend.csv_text(rows), content_type="text/csv; charset=utf-8")
        name = f"{team.slug}-teacher-spend-{start:%Y-%m}.csv"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response
    report = spend.month_report(team, start, end)
    months = (
        TeacherSpend.objects.filter(team=team)
        .annotate(month=TruncMonth("created_at"))
        .values("month")
        .annotate(month_tokens=Sum("prompt_tokens") + Sum("completion_tokens"), cost=Sum("cost"))
        .order_by("-month")[:24]
    )
    quota = team.quota
    month = actions.month_usage(team)
    return render(
        request,
        "teams/usage.html",
        {
            "team": team,
            "start": start,
            "total": report["total"],
            "total_line": spend.line(report["total"]),
            "by_user": report["by_user"],
            "by_work": report["by_work"],
            "by_endpoint": report["by_endpoint"],
            "months": list(months),
            "money_quota": quota.teacher_dollars_per_month,
            "money_used": month.teacher_dollars,
        },
    )
