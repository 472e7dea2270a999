"""Whether an evaluation measures on prompts its systems were trained on: for each job it
compares (its final checkpoint, another checkpoint of it, its student before
distillation), how many of the evaluation's prompts are among the job's training prompts
(its prompt set's training split, as it stands): exactly, by normalised text, and nearly,
by the set's groups of near duplicates when the prompts come from the same set."""

from __future__ import annotations

from typing import Any

from webapp.evaluation.models import Evaluation
from webapp.promptsets.models import Prompt, Split


def of_evaluation(evaluation: Evaluation) -> list[dict[str, Any]]:
    """One row per job with any of the evaluation's prompts in its training prompts."""
    prompts = evaluation.prompts.all()
    rows = []
    for job in _jobs(evaluation):
        training = Prompt.objects.filter(prompt_set_id=job.prompt_set_id, split=Split.TRAIN)
        exact = prompts.exclude(norm_hash="").filter(norm_hash__in=training.values("norm_hash"))
        near = (
            prompts.exclude(pk__in=exact.values("pk"))
            .filter(prompt_set_id=job.prompt_set_id, dup_group__in=training.values("dup_group"))
            .count()
        )
        found = {"job": job.pk, "name": job.name, "exact": exact.count(), "near": near}
        if found["exact"] or found["near"]:
            rows.append(found | {"checked": evaluation.num_prompts})
    return rows


def summary(evaluation: Evaluation, rows: list[dict[str, Any]]) -> str:
    """The check in words, for the evaluation's page: the jobs that trained on its prompts,
    or that none of those it compares did."""
    if rows:
        parts = [
            f"{r['name']} trained on {r['exact']} of them"
            + (f" (and on near duplicates of {r['near']} more)" if r["near"] else "")
            for r in rows
        ]
        return (
            f"Of the {evaluation.num_prompts} prompts of this evaluation, "
            + "; ".join(parts)
            + ". Scores on prompts a system trained on measure recall, not generalisation."
        )
    jobs = _jobs(evaluation)
    if not jobs:
        return ""
    return (
        f"Contamination check: 0 of the {evaluation.num_prompts} prompts occur in the "
        f"training prompts of the {len(jobs)} job(s) compared (none exactly, none nearly)."
    )


def _jobs(evaluation: Evaluation) -> list:
    """The jobs the evaluation compares (a system's job, or its checkpoint's), by id."""
    jobs = {}
    for system in evaluation.systems.all():
        job = system.job or (system.checkpoint.job if system.checkpoint is not None else None)
        if job is not None and job.prompt_set_id is not None:
            jobs[job.pk] = job
    return [jobs[pk] for pk in sorted(jobs)]
