"""LLM-as-judge runs of an evaluation (GAD.md "Evaluation", the paper's Table 2): what
they read and what the pages show.

A member picks one of the team's teacher endpoints as the judge and sees the cost
forecast (``trainer.judge.forecast_run``: judge calls and estimated tokens, cached
calls subtracted) before launching (``webapp.judging.actions.launch``). The worker's
``gad.judge_evaluation`` judges every system's answers with ``judge_inputs``, charges
the judge's tokens to the team and adds the evaluation's no-judge scores
(``webapp.evaluation.results.diagnostics``: n-gram F1 against the teacher system's
answers, ROUGE-L, mean length).
"""

from __future__ import annotations

import math
from collections import Counter

from trainer.judge import Forecast, JudgeItem, forecast_run
from trainer.score import MAX_N
from webapp.evaluation import results
from webapp.evaluation.models import EvalStatus, Evaluation, SystemStatus
from webapp.judging.models import JudgeRun
from webapp.lib import crypto
from webapp.promptsets.answers import load_answers
from webapp.teachers import ssrf
from webapp.teachers.models import TeacherEndpoint
from webapp.teachers.specs import teacher_spec


class SyncStore:
    """The database answer store for synchronous code (no event loop: plain ORM calls)."""

    def get_many(self, fingerprint, hashes):
        return load_answers(fingerprint, list(hashes))

    def put(self, answer) -> None:  # the forecast never writes
        raise NotImplementedError


def ready(evaluation: Evaluation) -> bool:
    """Every system has its answers: the judge can run."""
    systems = list(evaluation.systems.all())
    return (
        evaluation.status == EvalStatus.READY
        and bool(systems)
        and all(s.status == SystemStatus.DONE and s.num_answers > 0 for s in systems)
    )


def judge_inputs(evaluation: Evaluation) -> tuple[list[JudgeItem], dict[str, dict[str, str]]]:
    """The test prompts as judge items and every system's answers (label → prompt id → text)."""
    items = [
        JudgeItem(str(p.pk), p.messages)
        for p in evaluation.prompts.order_by("prompt_set_id", "index")
    ]
    return items, results.answers_by_label(evaluation)


def judges(evaluation: Evaluation):
    return TeacherEndpoint.objects.filter(team=evaluation.team).order_by("name")


def forecast_for(evaluation: Evaluation, endpoint: TeacherEndpoint) -> Forecast:
    """Raises ssrf.UnsafeURL or crypto.KeyUnreadable when the endpoint cannot be used."""
    items, answers = judge_inputs(evaluation)
    return forecast_run(items, answers, teacher_spec(endpoint), SyncStore())


def forecast_dict(forecast: Forecast) -> dict:
    return {
        "calls": forecast.calls,
        "reference_calls": forecast.reference_calls,
        "verdict_calls": forecast.verdict_calls,
        "cached": forecast.cached,
        "est_tokens": forecast.est_tokens,
        "line": forecast.line(),
    }


def table(run: JudgeRun) -> dict | None:
    """The report laid out like the paper's Table 2: rows = systems, columns = test sets,
    cells = judge score [95% CI] and mean length; plus the pooled counts and the
    no-judge overlap diagnostics of each system."""
    if not run.report:
        return None
    report = run.report
    sets = report.get("test_sets") or [  # reports written before test sets were split
        {"name": report.get("test_set", ""), "n_prompts": None, "systems": report["systems"]}
    ]
    cells = {(t["name"], c["system"]): c for t in sets for c in t["systems"]}
    diag = report.get("diagnostics") or {}
    by_system = {d["system"]: d for d in diag.get("systems", [])}
    rows = []
    for s in report.get("systems", []):
        d = by_system.get(s["system"], {})
        f1 = d.get("ngram_f1") or {}
        rows.append(
            {
                **s,
                "cells": [cells.get((t["name"], s["system"])) for t in sets],
                "rouge_l": d.get("rouge_l"),
                "f1": [f1.get(str(n)) for n in range(1, MAX_N + 1)],
            }
        )
    chart = [
        {"name": r["system"], "x": list(range(1, MAX_N + 1)), "y": r["f1"]}
        for r in rows
        if any(v is not None for v in r["f1"])
    ]
    return {
        "columns": [{"name": t["name"], "n_prompts": t.get("n_prompts")} for t in sets],
        "rows": rows,
        "reference": diag.get("reference"),
        "ns": list(range(1, MAX_N + 1)),
        "chart": chart,
        "summary": report.get("summary", {}),
        "comparisons": judge_comparisons(report),
        # How the run departs from the paper's protocol (a judge that takes no temperature).
        "deviation": (report.get("judge") or {}).get("deviation", ""),
    }


def judge_comparisons(report: dict) -> list[dict]:
    """Each pair of systems' difference in judge score over the prompts the judge scored
    for both, with its paired bootstrap 95% interval (``results.pairwise``)."""
    scores: dict[str, dict[str, float]] = {s["system"]: {} for s in report.get("systems", [])}
    for item in report.get("items", []):
        if item.get("status") == "scored" and item.get("score") is not None:
            scores.setdefault(item["system"], {})[str(item["item_id"])] = float(item["score"])
    return results.pairwise(scores, "judge", "judge score")


def progress_line(run: JudgeRun) -> str:
    """ "Verdicts: 120 / 400 calls; 51,200 / 111,760 tokens forecast" while running;
    '' otherwise."""
    p = run.progress or {}
    if run.status != JudgeRun.Status.RUNNING or not p.get("total"):
        return ""
    calls = f"{PHASES.get(p['phase'], p['phase'])}: {p['done']} / {p['total']} calls"
    if "est_tokens" not in (run.forecast or {}):
        return calls
    return f"{calls}; {run.tokens_used:,} / {forecast_tokens(run):,} tokens forecast"


PHASES = {
    "references": "The judge's own answers",
    "probe": "The judge's first verdicts (can they be read?)",
    "verdicts": "Verdicts",
    "retries": "Retries of unreadable verdicts",
}

# A run pauses, to ask, rather than spend more than this times its forecast tokens
# (the forecast leaves out retries of unreadable verdicts: this is their room).
CAP_OVER_FORECAST = 1.5
# Continuing a paused run raises its cap to twice what it was, and by at least this.
MIN_RAISE = 10_000


def forecast_tokens(run: JudgeRun) -> int:
    return int((run.forecast or {}).get("est_tokens", 0))


def token_cap(run: JudgeRun) -> int | None:
    """The tokens the run may spend in all before it pauses: its cap if one was set
    (continued), else 1.5 times its forecast; None (no cap) for a run without one."""
    if run.token_cap is not None:
        return run.token_cap
    if "est_tokens" not in (run.forecast or {}):
        return None
    return math.ceil(CAP_OVER_FORECAST * forecast_tokens(run))


def suggested_cap(run: JudgeRun) -> int:
    """The cap a paused run continues with unless another is asked for."""
    cap = token_cap(run) or 0
    return max(2 * cap, cap + MIN_RAISE, run.tokens_used + MIN_RAISE)


def paused_message(run: JudgeRun, cap: int) -> str:
    """Why the run paused at ``cap``, and how to go on (``run.tokens_used`` as spent)."""
    return (
        f"Paused before spending more than its token cap of {cap:,} tokens: the "
        f"forecast was about {forecast_tokens(run):,} tokens, and {run.tokens_used:,} are "
        "spent. The answers and verdicts paid for so far are kept. To go on, continue the "
        "run with a higher cap (the Continue button, or POST "
        f"/api/v1/evaluations/{run.evaluation_id}/judge-runs/{run.pk}/continue with "
        '{"token_cap": N}); it asks the judge only for what is not answered yet.'
    )


def unreadable_message(report: dict) -> str:
    """Why a run whose probe found the judge's verdicts unreadable stopped."""
    summary, probe = report["summary"], report["config"]["probe_verdicts"]
    return (
        f"Stopped early: the judge's replies could not be read. {summary['unreadable']} of "
        f"its first {probe} verdicts held no two scores, even after a retry, so the rest "
        f"of its {summary['verdicts']} verdicts were not asked. Choose a judge model that follows "
        "the verdict format (a small model seldom does). An example reply: "
        f"{summary['unreadable_example']!r}"
    )


def n_scored(report: dict | None) -> int:
    return sum(s["n_scored"] for s in report["systems"]) if report else 0


def nothing_scored_message(report: dict | None) -> str:
    """Why not one answer was scored: the counts and the most common reason."""
    if not report:
        return "The judge run ended without a report."
    systems, items = report["systems"], report.get("items", [])
    reasons = Counter(i["reason"] for i in items if i["status"] != "scored" and i["reason"])
    common = reasons.most_common(1)
    return (
        f"The judge scored none of the {sum(s['n_answers'] for s in systems)} answers "
        f"({sum(s['n_failures'] for s in systems)} failed, "
        f"{sum(s['n_unjudged'] for s in systems)} not judged)"
        + (f"; the most common reason: {common[0][0]}." if common else ".")
    )


def run_status(run: JudgeRun) -> dict:
    """A judge run's state for the evaluation page's polling."""
    p = run.progress or {}
    return {
        "id": run.pk,
        "status": run.status,
        "status_label": run.get_status_display(),
        "progress": progress_line(run),
        "done": p.get("done", 0),
        "total": p.get("total", 0),
        "tokens": run.tokens_used,
    }


def live(evaluation: Evaluation) -> bool:
    """The judge is moving: a run queued or running, or the automatic judge about to
    start (the answers are ready, its run not yet made)."""
    runs = evaluation.judge_runs
    if evaluation.auto_judge_id and evaluation.status == EvalStatus.READY and not runs.exists():
        return True
    return runs.filter(status__in=[JudgeRun.Status.QUEUED, JudgeRun.Status.RUNNING]).exists()


def page_context(evaluation: Evaluation, chosen: str | None) -> dict:
    """The evaluation page's judge section: endpoints, the chosen one's forecast, runs."""
    context: dict = {
        "judge_ready": ready(evaluation),
        "judge_endpoints": list(judges(evaluation)),
        "judge_runs": [
            {
                "run": run,
                "table": table(run),
                "progress": progress_line(run),
                "cap": token_cap(run),
                "suggested_cap": suggested_cap(run),
            }
            for run in evaluation.judge_runs.select_related("judge")[:5]
        ],
    }
    if chosen and context["judge_ready"]:
        endpoint = next((e for e in context["judge_endpoints"] if str(e.pk) == chosen), None)
        if endpoint is not None:
            context["judge_chosen"] = endpoint
            try:
                context["judge_forecast"] = forecast_dict(forecast_for(evaluation, endpoint))
            except (ssrf.UnsafeURL, crypto.KeyUnreadable) as refused:
                context["judge_refused"] = f"Judge {endpoint.name!r} cannot be used: {refused}"
    return context
