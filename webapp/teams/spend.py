"""What teacher calls cost, summed for a page or the API (rows: teams.models.TeacherSpend).

Money is summed over the priced calls only; ``unpriced_calls`` says how many had no
price (neither the endpoint's own nor the site's default), so a total is never quietly
short."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from trainer.pricing import Usage, dollars
from webapp.teams.actions import month_start
from webapp.teams.models import TeacherSpend

TOKEN_FIELDS = ("prompt_tokens", "completion_tokens", "reasoning_tokens", "cached_tokens")


def totals(rows: Iterable[TeacherSpend]) -> dict[str, Any]:
    usage, cost, unpriced, calls = Usage(), Decimal(0), 0, 0
    for row in rows:
        calls += 1
        usage.add(
            Usage(row.prompt_tokens, row.completion_tokens, row.reasoning_tokens, row.cached_tokens)
        )
        if row.cost is None:
            unpriced += 1
        else:
            cost += row.cost
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "reasoning_tokens": usage.reasoning,
        "cached_tokens": usage.cached,
        "tokens": usage.total,
        "cost_usd": str(cost.quantize(Decimal("0.000001"))) if calls > unpriced else None,
        "unpriced_calls": unpriced,
        "runs": calls,
    }


def grouped(rows: list[TeacherSpend], key: Callable[[TeacherSpend], str]) -> list[dict]:
    """Totals per ``key`` (a user, what it was for, an endpoint), dearest first."""
    groups: dict[str, list[TeacherSpend]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    found = [{"name": name, **totals(members)} for name, members in groups.items()]
    return sorted(found, key=lambda g: (-Decimal(g["cost_usd"] or 0), -g["tokens"]))


def month_range(text: str | None) -> tuple[datetime, datetime] | None:
    """(start, end) of the month ``YYYY-MM`` in UTC (default: this month), or None when
    the text is not such a month."""
    if not text:
        start = month_start()
    else:
        try:
            start = datetime.strptime(text, "%Y-%m").replace(tzinfo=UTC)
        except ValueError:
            return None
    return start, (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def month_rows(team, start: datetime, end: datetime):
    """The team's spend rows of [start, end), oldest first (the report and the CSV)."""
    return (
        TeacherSpend.objects.filter(team=team, created_at__gte=start, created_at__lt=end)
        .select_related("user")
        .order_by("created_at")
    )


def month_report(team, start: datetime, end: datetime) -> dict[str, Any]:
    """A month of the team's teacher spend: its total, and by what it was for, by user
    and by endpoint (the usage page and ``GET /api/v1/teams/{slug}/usage``)."""
    rows = list(month_rows(team, start, end))
    return {
        "month": f"{start:%Y-%m}",
        "total": totals(rows),
        "by_work": grouped(rows, lambda r: r.label),
        "by_user": grouped(rows, lambda r: r.user.get_username() if r.user else "(deleted user)"),
        "by_endpoint": grouped(rows, lambda r: f"{r.endpoint_name} ({r.model})"),
    }


def line(summary: dict[str, Any]) -> str:
    """ "12,400 tokens (300 reasoning, 1,000 cached) · $0.42", for pages."""
    if not summary["runs"]:
        return ""
    parts = []
    if summary["reasoning_tokens"]:
        parts.append(f"{summary['reasoning_tokens']:,} reasoning")
    if summary["cached_tokens"]:
        parts.append(f"{summary['cached_tokens']:,} cached")
    text = f"{summary['tokens']:,} tokens" + (f" ({', '.join(parts)})" if parts else "")
    cost = summary["cost_usd"]
    text += f" · {dollars(Decimal(cost))}" if cost is not None else " · no price set"
    if cost is not None and summary["unpriced_calls"]:
        text += f" (+{summary['unpriced_calls']} calls without a price)"
    return text


CSV_COLUMNS = [
    "date",
    "user",
    "purpose",
    "for",
    "job",
    "evaluation",
    "judge_run",
    "endpoint",
    "model",
    *TOKEN_FIELDS,
    "cost_usd",
    "price_source",
]


def csv_text(rows: Iterable[TeacherSpend]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow(
            [
                r.created_at.isoformat(timespec="seconds"),
                r.user.username if r.user else "",
                r.purpose,
                _cell(r.label),
                r.job_id or "",
                r.evaluation_id or "",
                r.judge_run_id or "",
                _cell(r.endpoint_name),
                _cell(r.model),
                *(getattr(r, f) for f in TOKEN_FIELDS),
                "" if r.cost is None else r.cost,
                _cell(r.price_source),
            ]
        )
    return out.getvalue()


def _cell(text: str) -> str:
    """No spreadsheet formula out of a name a member typed (CSV injection)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
