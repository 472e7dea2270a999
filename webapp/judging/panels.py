"""The judging app's part of the evaluation pages (``webapp.evaluation.panels``): a
sweep's chart and proposal, the judge's forecast, runs and tables, their state in the
page's poll, and the refusal to delete an evaluation a judge run is writing to."""

from __future__ import annotations

from django.http import HttpRequest

from webapp import claims
from webapp.evaluation.models import Evaluation
from webapp.evaluation.panels import Panel
from webapp.judging import runs, sweep
from webapp.judging.models import JudgeRun


def context(evaluation: Evaluation, request: HttpRequest) -> dict:
    return {
        **runs.page_context(evaluation, request.GET.get("judge")),
        **sweep.evaluation_context(evaluation, request.GET.get("bound")),
    }


def status(evaluation: Evaluation) -> dict:
    return {"judge_runs": [runs.run_status(run) for run in evaluation.judge_runs.all()[:5]]}


def busy(evaluation: Evaluation) -> str | None:
    # A run a live worker holds; a queued one whose task comes later finds it gone.
    if claims.held(evaluation.judge_runs.filter(status=JudgeRun.Status.RUNNING)).exists():
        return "A judge run is in progress; delete the evaluation once it ends."
    return None


PANEL = Panel(
    name="judging",
    position=10,
    template="judging/_panel.html",
    context=context,
    status=status,
    live=runs.live,
    busy=busy,
)
