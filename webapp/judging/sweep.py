"""Checkpoint sweeps: which checkpoint of a job should be its final model?

GAD.md ("Evaluation"): the paper picks the checkpoint with the best judge score whose
answer lengths stay sane: a student that games the discriminator writes longer and
longer answers (Fig. 6), and a judge tends to like long answers. A sweep answers that
question for one job (``webapp.judging.actions.create_sweep`` saves it):

- every k-th checkpoint (and always the last), plus the student before distillation
  as step 0, answer a small test set (an evaluation with those systems, judged
  automatically as soon as the answers are there: ``webapp.judging.actions.launch_auto``);
- the page charts judge score [95% CI] and mean length against step, and proposes the
  best-scoring checkpoint whose mean length stays under the user's bound;
- one click marks it the job's final model (``jobs.actions.mark_final``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from trainer.judge import forecast
from trainer.metrics_text import whitespace_tokens
from webapp.evaluation import actions, results
from webapp.evaluation.models import SystemKind
from webapp.jobs.models import Checkpoint, Job
from webapp.judging.models import JudgeRun, Sweep
from webapp.promptsets.models import PromptSet

# The student before distillation is one system of the evaluation; the rest are checkpoints.
MAX_CHECKPOINTS = actions.MAX_SYSTEMS - 1
DEFAULT_PROMPTS = 50
# The default bound: this many times the teacher's mean answer length.
DEFAULT_BOUND_RATIO = 1.5


def checkpoints_to_sweep(job: Job, every: int) -> list[Checkpoint]:
    """Every ``every``-th checkpoint by step (the k-th, 2k-th, …) and always the last."""
    saved = list(job.checkpoints.order_by("step"))
    chosen = saved[every - 1 :: every]
    if saved and saved[-1] not in chosen:
        chosen.append(saved[-1])
    return chosen


def smallest_every(job: Job) -> int:
    """The smallest k whose sweep fits in one evaluation."""
    n = job.checkpoints.count()
    return max(1, math.ceil(n / MAX_CHECKPOINTS)) if n > MAX_CHECKPOINTS else 1


def teacher_mean_words(prompt_set: PromptSet | None, sample: int = 2000) -> float | None:
    """Mean length, in words, of the teacher answers of a prompt set (its first ones)."""
    if prompt_set is None:
        return None
    texts = prompt_set.prompts.exclude(teacher_response="").order_by("index")
    lengths = [
        len(whitespace_tokens(t or ""))
        for t in texts.values_list("teacher_response", flat=True)[:sample]
    ]
    return sum(lengths) / len(lengths) if lengths else None


def default_bound(job: Job) -> float | None:
    mean = teacher_mean_words(job.prompt_set)
    return round(DEFAULT_BOUND_RATIO * mean, 1) if mean else None


def sweep_forecast(job: Job, every: int, prompt_set: PromptSet, choice: str, limit: int | None):
    """Judge calls and tokens of a sweep, before anything is generated (no cache lookup:
    the answers do not exist yet; they are assumed as long as the teacher's). None when
    the sweep has nothing to judge."""
    ids = actions.evaluation_prompts(prompt_set, choice, limit)
    m = len(checkpoints_to_sweep(job, every)) + 1
    if not ids or m < 2:
        return None
    rows = prompt_set.prompts.filter(pk__in=ids[:2000]).values_list("messages", "teacher_response")
    prompt_chars = [sum(len(t["content"]) for t in messages) for messages, _ in rows]
    answer_chars = [len(answer) for _, answer in rows if answer]
    return forecast(
        len(ids),
        m,
        mean_prompt_chars=sum(prompt_chars) / len(prompt_chars),
        mean_answer_chars=sum(answer_chars) / len(answer_chars) if answer_chars else 2000,
    )


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Point:
    step: int
    system: str
    checkpoint_id: int | None  # None: the student before distillation
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    mean_length: float | None
    n_scored: int
    final: bool = False


def latest_run(sweep: Sweep) -> JudgeRun | None:
    return sweep.evaluation.judge_runs.filter(status=JudgeRun.Status.SUCCEEDED).first()


def points(sweep: Sweep, run: JudgeRun | None) -> list[Point]:
    """One point per system of the sweep, by step; empty before a judge run succeeded."""
    if run is None or not run.report:
        return []
    evaluation = sweep.evaluation
    labels = results.system_labels(evaluation)
    scores = {s["system"]: s for s in run.report.get("systems", [])}
    final = sweep.job.final_checkpoint_id or (
        sweep.job.checkpoints.order_by("-step").values_list("pk", flat=True).first()
    )
    found = []
    for system in evaluation.systems.select_related("checkpoint"):
        s = scores.get(labels[system.pk])
        if s is None:
            continue
        if system.kind == SystemKind.BASE:
            step, checkpoint_id = 0, None
        elif system.checkpoint is not None:
            step, checkpoint_id = system.checkpoint.step, system.checkpoint_id
        else:
            continue  # the checkpoint was deleted since
        found.append(
            Point(
                step=step,
                system=labels[system.pk],
                checkpoint_id=checkpoint_id,
                mean=s["mean"],
                ci_low=s["ci_low"],
                ci_high=s["ci_high"],
                mean_length=s["mean_length"],
                n_scored=s["n_scored"],
                final=checkpoint_id is not None and checkpoint_id == final,
            )
        )
    return sorted(found, key=lambda p: p.step)


@dataclass(frozen=True)
class Proposal:
    point: Point | None
    message: str


def propose(found: list[Point], bound: float | None) -> Proposal:
    """The checkpoint with the best judge score whose mean length is at most ``bound``
    (ties: the shorter answers, then the earlier step)."""
    scored = [p for p in found if p.checkpoint_id is not None and p.mean is not None]
    if not scored:
        return Proposal(None, "No checkpoint has a judge score yet.")
    within = [
        p for p in scored if bound is None or (p.mean_length is not None and p.mean_length <= bound)
    ]
    if not within:
        shortest = min(scored, key=lambda p: (p.mean_length or math.inf, p.step))
        return Proposal(
            None,
            f"No checkpoint keeps its answers under {bound:g} words on average; the shortest "
            f"is step {shortest.step} ({shortest.mean_length:.1f} words). Raise the bound, "
            "or look for a length problem in the job's charts (GAD.md, reward hacking).",
        )
    best = max(within, key=lambda p: (p.mean, -(p.mean_length or 0.0), -p.step))
    under = f" among those under {bound:g} words" if bound is not None else ""
    return Proposal(
        best,
        f"Step {best.step} has the best judge score{under}: {best.mean:.1f} "
        f"[{best.ci_low:.1f}, {best.ci_high:.1f}], {best.mean_length:.1f} words on average.",
    )


@dataclass(frozen=True)
class Result:
    bound: float | None
    run: JudgeRun | None  # the latest succeeded judge run, None before one
    points: list[Point]
    proposal: Proposal


def result(sweep: Sweep, bound: float | None) -> Result:
    """The sweep judged so far, and its proposal under ``bound`` (words)."""
    run = latest_run(sweep)
    found = points(sweep, run)
    return Result(bound, run, found, propose(found, bound))


def parse_bound(text: str | None, saved: float | None) -> tuple[float | None, str]:
    """A length bound typed on the page: (bound, error). Absent: the saved one; empty:
    no bound; not a positive number: the saved one and an error to show."""
    if text is None:
        return saved, ""
    if not text.strip():
        return None, ""
    try:
        bound = float(text)
    except ValueError:
        bound = math.nan
    if not math.isfinite(bound) or bound <= 0:
        return saved, "The length bound must be a positive number."
    return bound, ""


def page_context(sweep: Sweep, bound_text: str | None) -> dict:
    """The sweep section of the evaluation page; ``bound_text`` (from the query string)
    tries another length bound without changing the saved one."""
    bound, bound_error = parse_bound(bound_text, sweep.length_bound)
    r = result(sweep, bound)
    chart = {
        "steps": [p.step for p in r.points],
        "score": [p.mean for p in r.points],
        "ci_low": [p.ci_low for p in r.points],
        "ci_high": [p.ci_high for p in r.points],
        "length": [p.mean_length for p in r.points],
        "bound": bound,
        "proposed": r.proposal.point.step if r.proposal.point else None,
    }
    return {
        "sweep": sweep,
        "sweep_bound": bound,
        "sweep_bound_error": bound_error,
        "sweep_points": [asdict(p) for p in r.points],
        "sweep_proposal": r.proposal,
        "sweep_chart": chart if r.points else None,
        "sweep_run": r.run,
    }


def evaluation_context(evaluation, bound_text: str | None) -> dict:
    """The sweep's block of its evaluation's page ({} for an evaluation of no sweep)."""
    found = Sweep.objects.filter(evaluation=evaluation).select_related("job").first()
    return page_context(found, bound_text) if found else {}
