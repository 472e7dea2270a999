"""Admin for teams: memberships and quota inline, this month's usage as columns."""

from __future__ import annotations

from decimal import Decimal

from django.contrib import admin, messages
from django.db.models import Count, DecimalField, OuterRef, Q, Subquery, Sum, Value
from django.db.models.functions import Coalesce

from webapp.teams import actions
from webapp.teams.models import (
    ApiToken,
    Membership,
    Quota,
    TeacherSpend,
    Team,
    UsageKind,
    UsageRecord,
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


class QuotaInline(admin.StackedInline):
    model = Quota
    can_delete = False


def _month_sum(kind: str):
    rows = (
        UsageRecord.objects.filter(
            team=OuterRef("pk"), kind=kind, created_at__gte=actions.month_start()
        )
        .values("team")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    return Coalesce(
        Subquery(rows, output_field=DecimalField(max_digits=20, decimal_places=3)),
        Value(Decimal(0)),
    )


class SuspendedFilter(admin.SimpleListFilter):
    title = "suspended"
    parameter_name = "suspended"

    def lookups(self, request, model_admin):
        return [("yes", "Suspended"), ("no", "Active")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(suspended_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(suspended_at__isnull=True)
        return queryset


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "slug",
        "members",
        "gpu_hours_this_month",
        "tokens_this_month",
        "jobs_this_month",
        "suspended_at",
    ]
    list_filter = [SuspendedFilter, "created_at"]
    search_fields = ["name", "slug", "memberships__user__username", "memberships__user__email"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [QuotaInline, MembershipInline]
    actions = ["suspend", "unsuspend"]
    readonly_fields = ["suspended_at"]

    def get_queryset(self, request):
        # Annotated in one query so the list page costs the same for 10 or 10,000 teams.
        return (
            super()
            .get_queryset(request)
            .annotate(
                _members=Count("memberships", distinct=True),
                _gpu_seconds=_month_sum(UsageKind.GPU_SECONDS),
                _tokens=_month_sum(UsageKind.TEACHER_TOKENS),
                _jobs=Count(
                    "jobs",
                    filter=Q(jobs__created_at__gte=actions.month_start()),
                    distinct=True,
                ),
            )
        )

    @admin.display(ordering="_members")
    def members(self, obj):
        return obj._members

    @admin.display(description="GPU-hours (month)", ordering="_gpu_seconds")
    def gpu_hours_this_month(self, obj):
        return (obj._gpu_seconds / Decimal(3600)).quantize(Decimal("0.01"))

    @admin.display(description="Teacher tokens (month)", ordering="_tokens")
    def tokens_this_month(self, obj):
        return f"{int(obj._tokens):,}"

    @admin.display(description="Jobs (month)", ordering="_jobs")
    def jobs_this_month(self, obj):
        return obj._jobs

    @admin.action(description="Suspend selected teams (refuse new launches)")
    def suspend(self, request, queryset):
        for team in queryset:
            actions.suspend_team(team, reason=f"suspended by {request.user.get_username()}")
        self.message_user(request, f"Suspended {queryset.count()} team(s).", messages.SUCCESS)

    @admin.action(description="Lift suspension of selected teams")
    def unsuspend(self, request, queryset):
        for team in queryset:
            actions.unsuspend_team(team)
        self.message_user(request, f"Reactivated {queryset.count()} team(s).", messages.SUCCESS)


@admin.register(UsageRecord)
class UsageRecordAdmin(admin.ModelAdmin):
    list_display = ["created_at", "team", "kind", "amount", "job"]
    list_filter = ["kind", "created_at", "team"]
    search_fields = ["team__name", "team__slug"]
    date_hierarchy = "created_at"
    raw_id_fields = ["job"]


@admin.register(TeacherSpend)
class TeacherSpendAdmin(admin.ModelAdmin):
    list_display = ["created_at", "team", "purpose", "label", "endpoint_name", "cost"]
    list_filter = ["purpose", "created_at", "team"]
    search_fields = ["team__slug", "label", "endpoint_name", "model"]
    date_hierarchy = "created_at"
    raw_id_fields = ["job", "evaluation", "judge_run", "endpoint", "user"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "hint", "created_at", "last_used_at", "revoked_at"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "user__username"]
    readonly_fields = ["digest", "hint", "created_at", "last_used_at"]

    def has_add_permission(self, request):
        # A token made here could never be shown to its owner; use the profile page.
        return False
