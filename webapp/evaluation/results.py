"""What an evaluation's answers show with no judge: its test sets, each system's answers
under a unique label, and the automatic scores (mean length and, against the teacher
system's answers, n-gram F1 and ROUGE-L).

The LLM judge (``webapp.judging``) reads the same answers and test sets from here.
"""

from __future__ import annotations

from django.db.models import Count

from trainer.metrics_text import (
    ngram_f1,
    paired_difference,
    rouge_l,
    rouge_tokens,
    whitespace_tokens,
    words,
)
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


# Per-answer automatic scores compared between systems (``comparisons``).
PAIRED_METRICS = {
    "ngram_f1_1": "n-gram F1, n=1",
    "ngram_f1_2": "n-gram F1, n=2",
    "rouge_l": "ROUGE-L",
    "length": "length (words)",
}


def item_scores(
    evaluation: Evaluation,
) -> tuple[dict[str, dict[str, dict[str, float]]], str | None]:
    """label → metric → prompt id → that answer's score; and the reference's label (the
    teacher system, whose answers the overlap scores are measured against)."""
    answers = answers_by_label(evaluation)
    labels = system_labels(evaluation)
    teacher = next(
        (labels[s.pk] for s in evaluation.systems.all() if s.kind == SystemKind.TEACHER), None
    )
    reference = answers.get(teacher) if teacher else None
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for label, by_id in answers.items():
        mine: dict[str, dict[str, float]] = {m: {} for m in PAIRED_METRICS}
        for rid, text in by_id.items():
            mine["length"][rid] = float(len(whitespace_tokens(text)))
            if reference is None or label == teacher or rid not in reference:
                continue
            for n in (1, 2):
                f1 = ngram_f1(words(text), words(reference[rid]), n)
                if f1 is not None:
                    mine[f"ngram_f1_{n}"][rid] = f1
            rouge = rouge_l(rouge_tokens(text), rouge_tokens(reference[rid]))
            if rouge is not None:
                mine["rouge_l"][rid] = rouge
        scores[label] = mine
    return scores, teacher


def pairwise(
    scores: dict[str, dict[str, float]], metric: str, title: str, seed: int = 0
) -> list[dict]:
    """Each pair of systems (label → prompt id → score): the mean difference over the
    prompts both were scored on, with its paired bootstrap 95% interval
    (``trainer.metrics_text.paired_difference``), and what it says: an interval that
    spans 0 is "no clear difference"."""
    rows = []
    labels = list(reversed(scores))  # the later systems (the distilled ones) first: "a − b"
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            ids = sorted(set(scores[a]) & set(scores[b]))
            found = paired_difference(
                [scores[a][k] for k in ids], [scores[b][k] for k in ids], seed=seed
            )
            if found is None:
                continue
            diff, low, high = found
            if low <= 0 <= high:
                verdict = "no clear difference"
            else:
                verdict = f"{a if diff > 0 else b} higher"
            rows.append(
                {
                    "metric": metric,
                    "title": title,
                    "a": a,
                    "b": b,
                    "n": len(ids),
                    "difference": diff,
                    "low": low,
                    "high": high,
                    "verdict": verdict,
                    "clear": verdict != "no clear difference",
                }  # fmt: skip
            )
    return rows


def comparisons(evaluation: Evaluation) -> list[dict]:
    """Every pair of systems but the reference, on each automatic score: the difference
    (a − b) with its paired bootstrap 95% interval."""
    scores, reference = item_scores(evaluation)
    rows: list[dict] = []
    for metric, title in PAIRED_METRICS.items():
        by_label = {label: s[metric] for label, s in scores.items() if label != reference}
        rows += pairwise(by_label, metric, title)
    return rows
