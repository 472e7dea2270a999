"""The automatic scores on an evaluation's page, no judge needed: n-gram F1 and ROUGE-L
against the teacher's answers, and mean length, as soon as the answers are ready."""

from __future__ import annotations

from django.urls import reverse

from tests.webapp.test_evaluation import make_evaluation, systems_of
from webapp.evaluation.models import EvalStatus, SystemAnswer


def page(client, evaluation) -> str:
    url = reverse("evaluation", kwargs={"slug": evaluation.team.slug, "pk": evaluation.pk})
    return client.get(url).content.decode()


def answer(evaluation, texts: dict[str, str]) -> None:
    for key, system in systems_of(evaluation).items():
        SystemAnswer.objects.filter(system=system).update(response=texts[key])


def test_the_page_scores_each_student_against_the_teacher(login, personas):
    evaluation = make_evaluation(personas.team, n_prompts=3, teacher=True)
    answer(evaluation, {
        "teacher": "the answer is four", "gad": "the answer is four",
        "seqkd": "the answer is five", "base": "",
    })  # fmt: skip
    body = page(login(personas.member), evaluation)
    assert 'data-testid="auto-scores"' in body
    rows = {
        name: body.split(f"<tr><td>{name}</td>", 1)[1].split("</tr>", 1)[0]
        for name in (s.name for key, s in systems_of(evaluation).items() if key != "teacher")
    }
    gad, seqkd, base = (rows[systems_of(evaluation)[k].name] for k in ("gad", "seqkd", "base"))
    assert gad.startswith("<td>1.000</td>")  # F1 n=1: the teacher's very words
    assert seqkd.startswith("<td>0.750</td>")  # 3 of 4 words
    assert base.startswith("<td>0.000</td>") and "<td>0.0</td>" in base  # says nothing
    assert len(rows) == 3  # the teacher is the reference, not a row


def test_no_scores_while_answers_are_generated_and_lengths_only_without_a_teacher(login, personas):
    evaluation = make_evaluation(personas.team, n_prompts=2)
    client = login(personas.member)
    body = page(client, evaluation)
    assert "Add the teacher to an evaluation" in body and "<th>ROUGE-L</th>" not in body
    evaluation.status = EvalStatus.GENERATING
    evaluation.save()
    assert 'data-testid="auto-scores"' not in page(client, evaluation)
