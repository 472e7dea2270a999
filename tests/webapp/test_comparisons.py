"""Comparisons carry their uncertainty: each pair of systems' difference in each automatic
score and in the judge score, with a paired bootstrap 95% interval; an interval that spans
0 reads "no clear difference"."""

from __future__ import annotations

import pytest

from tests.webapp.test_evaluation import make_evaluation, systems_of
from trainer.metrics_text import paired_difference
from webapp.evaluation.models import SystemAnswer
from webapp.judging.runs import judge_comparisons

N = 30


def test_the_paired_interval_follows_the_pairs_not_the_prompts_difficulty():
    # Hard and easy prompts differ by far more than the systems do; pairing removes that.
    hard_easy = [0.1 if i % 2 else 0.9 for i in range(40)]
    better = [x + 0.05 for x in hard_easy]
    diff, low, high = paired_difference(better, hard_easy)
    assert (
        diff == pytest.approx(0.05) and low == pytest.approx(0.05) and high == pytest.approx(0.05)
    )
    same = paired_difference(hard_easy, list(reversed(hard_easy)))
    assert same is not None and same[1] < 0 < same[2]
    assert paired_difference([], []) is None
    assert paired_difference([1.0, 2.0], [1.0, 2.0], seed=3) == paired_difference(
        [1.0, 2.0], [1.0, 2.0], seed=3
    )
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference([1.0], [1.0, 2.0])


def _answers(evaluation) -> dict[str, str]:
    """GAD answers as the teacher; SeqKD on even prompts only, the student before on odd
    ones only: GAD is clearly closer to the teacher than SeqKD, and SeqKD and the student
    before are not clearly different on average."""
    by = systems_of(evaluation)
    teacher = {p.pk: f"alpha beta gamma delta {p.index}" for p in evaluation.prompts.all()}
    other = {p.pk: f"zeta eta theta iota {p.index}" for p in evaluation.prompts.all()}
    odd = {p.pk: p.index % 2 for p in evaluation.prompts.all()}
    texts = {
        "teacher": teacher,
        "gad": teacher,
        "seqkd": {k: other[k] if odd[k] else teacher[k] for k in teacher},
        "base": {k: teacher[k] if odd[k] else other[k] for k in teacher},
    }
    for key, system in by.items():
        for answer in SystemAnswer.objects.filter(system=system):
            answer.response = texts[key][answer.prompt_id]
            answer.save(update_fields=["response"])
    return {key: system.name for key, system in by.items()}


def test_the_evaluation_api_and_page_show_each_pairs_difference_with_its_interval(client, personas):
    from webapp.teams.actions import create_api_token

    evaluation = make_evaluation(personas.team, n_prompts=N, teacher=True)
    names = _answers(evaluation)
    token = create_api_token(personas.member, "t")[1]
    body = client.get(
        f"/api/v1/evaluations/{evaluation.pk}", HTTP_AUTHORIZATION=f"Bearer {token}"
    ).json()
    rows = {(r["metric"], frozenset((r["a"], r["b"]))): r for r in body["comparisons"]}
    gad_seqkd = rows[("ngram_f1_1", frozenset((names["gad"], names["seqkd"])))]
    assert gad_seqkd["n"] == N and gad_seqkd["clear"]
    assert gad_seqkd["verdict"] == f"{names['gad']} higher"
    sign = 1 if gad_seqkd["a"] == names["gad"] else -1
    assert sign * gad_seqkd["difference"] == pytest.approx(0.4)  # 0.8 on half the prompts
    assert sign * gad_seqkd["low"] > 0
    even = rows[("ngram_f1_1", frozenset((names["seqkd"], names["base"])))]
    assert even["verdict"] == "no clear difference" and even["low"] < 0 < even["high"]
    assert not any(names["teacher"] in (r["a"], r["b"]) for r in body["comparisons"])
    lengths = rows[("length", frozenset((names["gad"], names["base"])))]
    assert lengths["difference"] == 0 and lengths["verdict"] == "no clear difference"
    client.force_login(personas.member)
    page = client.get(f"/teams/acme/evaluations/{evaluation.pk}/").content.decode()
    assert "Differences between systems" in page and 'data-testid="comparisons"' in page
    assert f"<strong>{names['gad']} higher</strong>" in page and "no clear difference" in page


def test_judge_scores_are_compared_in_pairs_over_the_prompts_scored_for_both():
    items = [
        {"item_id": str(i), "system": "GAD", "status": "scored", "score": 60.0 + i % 3}
        for i in range(20)
    ] + [
        {"item_id": str(i), "system": "SeqKD", "status": "scored", "score": 50.0 + i % 3}
        for i in range(20)
    ] + [{"item_id": "99", "system": "SeqKD", "status": "failed", "score": None}]  # fmt: skip
    report = {"systems": [{"system": "GAD"}, {"system": "SeqKD"}], "items": items}
    [row] = judge_comparisons(report)
    assert {row["a"], row["b"]} == {"GAD", "SeqKD"} and row["n"] == 20
    assert abs(row["difference"]) == pytest.approx(10.0) and row["verdict"] == "GAD higher"
