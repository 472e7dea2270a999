"""Teacher answers are private to the team that paid for them (docs/security.md,
"Teacher answers"): another team registering the same URL, model and sampling sees,
downloads and trains on none of them; inside a team they are reused."""

from __future__ import annotations

from django.urls import reverse

from tests.security.capture import CaptureServer
from tests.webapp.factories import make_prompt_set
from trainer.teacher import collect
from webapp.promptsets.answers import collected, count_collected
from webapp.promptsets.models import Prompt, TeacherAnswer
from webapp.teachers import actions
from worker.paid import paid_call

KEY = "sk-team-a-key-000000000000"


def _collect(endpoint, team, prompts) -> int:
    """The worker's paid collection of these prompts; the number of paid requests."""
    paid = paid_call(
        endpoint,
        team,
        lambda spec, store, budget, on_progress: collect(
            [p.messages for p in prompts], spec, store, on_progress=on_progress, budget=budget
        ),
    )
    assert paid.kind == "", paid.error
    return paid.result.answered


def test_another_team_with_the_same_endpoint_sees_and_reuses_nothing(
    login, personas, transactional_db
):
    ours = make_prompt_set(personas.team, n=3, with_teacher=False, name="ours")
    theirs = make_prompt_set(personas.other_team, n=3, with_teacher=False, name="theirs")
    Prompt.objects.filter(prompt_set__in=[ours, theirs]).update(teacher_response=None)
    with CaptureServer() as server:
        a = actions.create_endpoint(
            personas.team, None, name="T", base_url=server.url, model="m", api_key=KEY
        )
        b = actions.create_endpoint(
            personas.other_team, None, name="T", base_url=server.url, model="m"
        )
        assert _collect(a, personas.team, list(ours.prompts.all())) == 3
        # Team B asks the same prompts of the same URL, model and sampling: it pays.
        assert _collect(b, personas.other_team, list(theirs.prompts.all())) == 3
    assert len(server.requests) == 6
    hashes = list(ours.prompts.values_list("prompt_hash", flat=True))
    assert set(collected(personas.team, hashes)) == set(hashes)
    # Before B paid, nothing of A's would have shown; B's view is its own answers only.
    assert TeacherAnswer.objects.filter(fingerprint=a.fingerprint).count() == 3
    assert a.fingerprint != b.fingerprint
    # B's prompt set page and download show B's collected answers, never A's row ids.
    client = login(personas.outsider)  # dave owns team "other"
    url = reverse("prompt-set-download", kwargs={"slug": "other", "pk": theirs.pk})
    body = b"".join(client.get(url).streaming_content).decode()
    assert '"teacher": "T"' in body  # its own
    assert count_collected(theirs) == 3


def test_answers_are_reused_inside_the_team(personas, transactional_db):
    first = make_prompt_set(personas.team, n=2, with_teacher=False, name="one")
    again = make_prompt_set(personas.team, n=2, with_teacher=False, name="two")
    with CaptureServer() as server:
        endpoint = actions.create_endpoint(
            personas.team, None, name="T", base_url=server.url, model="m", api_key=KEY
        )
        assert _collect(endpoint, personas.team, list(first.prompts.all())) == 2
        # The same prompts in another set of the same team: nothing is paid again.
        assert _collect(endpoint, personas.team, list(again.prompts.all())) == 0
    assert len(server.requests) == 2


def test_a_team_that_never_paid_sees_no_answers(personas):
    """Team A's answers exist; team B registers the same endpoint and looks."""
    with CaptureServer() as server:
        a = actions.create_endpoint(personas.team, None, name="T", base_url=server.url, model="m")
        b = actions.create_endpoint(
            personas.other_team, None, name="T", base_url=server.url, model="m"
        )
    theirs = make_prompt_set(personas.other_team, n=2, with_teacher=False, name="theirs")
    for prompt in theirs.prompts.all():
        TeacherAnswer.objects.create(
            prompt_hash=prompt.prompt_hash, fingerprint=a.fingerprint, response="A paid", flag="ok"
        )
    assert (
        collected(personas.other_team, theirs.prompts.values_list("prompt_hash", flat=True)) == {}
    )
    assert count_collected(theirs) == 0
    assert b.fingerprint != a.fingerprint
