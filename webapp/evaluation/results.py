"""What an evaluation's answers show with no judge: its test sets, each system's answers
under a unique label, and the automatic scores (mean length and, against the teacher
system's answers, n-gram F1 and ROUGE-L).

The LLM judge (``webapp.judging``) reads the same answers and test sets from here.
"""

from __future__ import annotations

from django.db.models import Count

from trainer.score import MAX_N, score_system
from webapp.evaluation.models import Evaluation, SystemAnswer, SystemKind


def unique_labels(named: list[tuple[int, str]]) -> dict[int, str]:
    """id → its name, with ``#id`` added to a name that repeats (labels must be unique:
    they key the judge's report)."""
    names = [name for _, name in named]
    return {pk: name if names.count(name) == 1 else f"{name} #{pk}" for pk, name in named}


def system_labels(evaluation: Evaluation) -> dict[int, str]:
    """System id → a unique label (the system's name)."""
    return unique_labels([(s.pk, s.name) for s in evaluation.systems.all()])


def answers_by_label(evaluation: Evaluation) -> dict[str, dict[str, str]]:
    """Every system's answers: label → prompt id → text."""
    labels = system_labels(evaluation)
    answers: dict[str, dict[str, str]] = {label: {} for label in labels.values()}
    rows = SystemAnswer.objects.filter(system__evaluation=evaluation).values_list(
        "system_id", "prompt_id", "response"
    )
    for system_id, prompt_id, response in rows.iterator():
        answers[labels[system_id]][str(prompt_id)] = response
    return answers


def test_set_sizes(evaluation: Evaluation) -> dict[str, int]:
    """Set label → number of prompts, the evaluation's main prompt set first (one
    aggregate query: the pages and the API need no more)."""
    rows = (
        evaluation.prompts.order_by()  # no ordering columns in the GROUP BY
        .values("prompt_set_id", "prompt_set__name")
        .annotate(n=Count("pk"))
        .values_list("prompt_set_id", "prompt_set__name", "n")
    )
    ordered = sorted(rows, key=lambda row: (row[0] != evaluation.prompt_set_id, row[0]))
    labels = unique_labels([(set_id, name) for set_id, name, _ in ordered])
    return {labels[set_id]: n for set_id, _, n in ordered}


def test_sets(evaluation: Evaluation) -> tuple[dict[str, str], dict[str, int]]:
    """The evaluation's test sets: prompt id → set label (for the judge's per-set
    report), and ``test_set_sizes``."""
    sizes = test_set_sizes(evaluation)
    labels = unique_labels(
        list(
            evaluation.prompts.order_by()
            .values_list("prompt_set_id", "prompt_set__name")
            .distinct()
        )
    )
    rows = evaluation.prompts.values_list("pk", "prompt_set_id").iterator()
    return {str(pk): labels[set_id] for pk, set_id in rows}, sizes


def diagnostics(evaluation: Evaluation) -> dict:
    """Per system: mean length, and against the teacher system's answers (when the
    evaluation has one) n-gram F1 for n = 1..6 and ROUGE-L."""
    answers = answers_by_label(evaluation)
    labels = system_labels(evaluation)
    teacher = next(
        (labels[s.pk] for s in evaluation.systems.all() if s.kind == SystemKind.TEACHER), None
    )
    reference = answers.get(teacher) if teacher else None
    rows = []
    for label, by_id in answers.items():
        scores = score_system(label, by_id, reference)
        rows.append(
            {
                "system": label,
                "mean_length": scores.lengths.mean if scores.lengths else None,
                "n_matched": scores.n_matched,
                "ngram_f1": {str(n): f for n, f in scores.ngram_f1.items()},
                "rouge_l": scores.rouge_l,
            }
        )
    return {"reference": teacher, "max_n": MAX_N, "systems": rows}
