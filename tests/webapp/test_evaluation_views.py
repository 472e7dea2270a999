"""Evaluation pages: blind annotation, access, votes through the pages, results, exports."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from django.test import Client
from django.urls import reverse

from tests.webapp.test_evaluation import (
    GAD_JOB,
    SEQKD_JOB,
    STUDENT,
    TEACHER_MODEL,
    TEACHER_NAME,
    make_campaign,
    make_evaluation,
    systems_of,
)
from webapp.annotation import actions as annotation_actions
from webapp.annotation import queue
from webapp.annotation.markdown import render
from webapp.annotation.models import Vote
from webapp.evaluation.models import Evaluation, SystemAnswer

JSON = {"HTTP_ACCEPT": "application/json"}


@pytest.fixture
def campaign(personas, tmp_path):
    evaluation = make_evaluation(personas.team, teacher=True, tmp=str(tmp_path / "runs"))
    s = systems_of(evaluation)
    pairs = annotation_actions.default_pairs(list(evaluation.systems.select_related("job")))
    pairs.append((s["teacher"], s["gad"]))
    return make_campaign(evaluation, [personas.annotator, personas.member], overlap=2, pairs=pairs)


def forbidden_names(campaign) -> list[str]:
    words = [GAD_JOB, SEQKD_JOB, STUDENT, TEACHER_NAME, TEACHER_MODEL, "SeqKD", "seqkd"]
    for system in campaign.evaluation.systems.select_related("job", "checkpoint"):
        words += [system.name, system.path, system.get_kind_display()]
        if system.checkpoint:
            words.append(system.checkpoint.path)
    words.append(campaign.evaluation.name)
    return [w for w in words if w]


def assert_blind(body: str, campaign) -> None:
    lowered = body.lower()
    for word in forbidden_names(campaign):
        assert word.lower() not in lowered, f"{word!r} reached an annotator"


def item_url(slug: str, key: str, action: str = "") -> str:
    name = f"annotate-{action}" if action else "annotate-item"
    return reverse(name, kwargs={"slug": slug, "key": key})


# ----------------------------------------------------------------------------- blindness


def test_annotators_pages_never_contain_a_system_job_or_model_name(login, personas, campaign):
    client = login(personas.annotator)
    slug = personas.team.slug
    pages = [client.get(reverse("annotate", kwargs={"slug": slug})).content.decode()]
    follow = client.get(reverse("annotate-campaign", kwargs={"slug": slug, "pk": campaign.pk}))
    assert follow.status_code == 302
    seen_answers = set()
    for _ in range(100):
        assignment = queue.next_assignment(personas.annotator, campaign)
        if assignment is None:
            break
        page = client.get(item_url(slug, assignment.key))
        assert page.status_code == 200
        body = page.content.decode()
        pages.append(body)
        seen_answers.update(w for w in ("alpha", "bravo", "charlie", "delta") if w in body)
        response = client.post(item_url(slug, assignment.key, "vote"), {"choice": "tie"}, **JSON)
        pages.append(response.content.decode())
        assert response.status_code == 200
    pages.append(
        client.post(
            reverse("annotate-undo", kwargs={"slug": slug, "pk": campaign.pk}), **JSON
        ).content.decode()
    )
    done = client.get(
        reverse("annotate-campaign", kwargs={"slug": slug, "pk": campaign.pk}), follow=True
    )
    pages.append(done.content.decode())
    assert len(seen_answers) == 4  # every system's answers were shown, blind
    for body in pages:
        assert_blind(body, campaign)


def test_annotator_urls_carry_only_opaque_keys(login, personas, campaign):
    client = login(personas.annotator)
    response = client.get(
        reverse("annotate-campaign", kwargs={"slug": personas.team.slug, "pk": campaign.pk})
    )
    location = response["Location"]
    key = location.rstrip("/").rsplit("/", 1)[1]
    assert len(key) >= 20
    assert_blind(location, campaign)
    for system in campaign.evaluation.systems.all():
        assert f"/{system.pk}/" not in location.split("/annotate/")[1]


def test_answers_are_escaped_and_code_fences_render_as_code(login, personas, campaign):
    assignment = queue.next_assignment(personas.annotator, campaign)
    item = assignment.item
    SystemAnswer.objects.filter(prompt=item.prompt, system=item.pair.system_a).update(
        response='<script>alert("x")</script>\n\n```python\nprint("<b>")\n```\n**bold** `x<y`'
    )
    body = login(personas.annotator).get(item_url(personas.team.slug, assignment.key))
    html = body.content.decode()
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert '<pre><code class="language-python">print(&quot;&lt;b&gt;&quot;)\n</code></pre>' in html
    assert "<strong>bold</strong> <code>x&lt;y</code>" in html


def test_markdown_subset():
    assert str(render("# Title\n\n- a\n- b\n\n1. one\n2. two")) == (
        "<h3>Title</h3>\n<ul>\n<li>a</li>\n<li>b</li>\n</ul>\n<ol>\n<li>one</li>\n<li>two</li>\n</ol>"
    )
    assert str(render("line one\nline two")) == "<p>line one<br />\nline two</p>"
    assert str(render("> quoted *it*")) == "<blockquote>\n<p>quoted <em>it</em></p>\n</blockquote>"
    assert "(empty answer)" in render("  ")
    unclosed = str(render("```\ncode <i>\nmore"))
    assert unclosed == "<pre><code>code &lt;i&gt;\nmore</code></pre>"
    fence = str(render('```"><img src=x onerror=alert(1)>\nx\n```'))
    assert "<img" not in fence and "onerror" not in fence and fence.endswith(">x\n</code></pre>")
    assert "<a" not in str(render("[link](javascript:alert(1)) <a href=x>y</a>"))


# ----------------------------------------------------------------------------- access


def test_an_annotator_cannot_open_or_vote_on_someone_elses_item(login, personas, campaign):
    other = queue.next_assignment(personas.member, campaign)
    client = login(personas.annotator)
    slug = personas.team.slug
    assert client.get(item_url(slug, other.key)).status_code == 404
    assert client.post(item_url(slug, other.key, "vote"), {"choice": "left"}).status_code == 404
    assert client.post(item_url(slug, other.key, "skip")).status_code == 404
    assert not Vote.objects.exists()


def test_an_annotator_gets_403_on_every_results_and_evaluation_page(login, personas, campaign):
    client = login(personas.annotator)
    slug, ev = personas.team.slug, campaign.evaluation
    for name, pk in [
        ("campaign", campaign.pk),
        ("campaign-export", campaign.pk),
        ("evaluation", ev.pk),
        ("evaluation-status", ev.pk),
        ("campaign-create", ev.pk),
    ]:
        assert client.get(reverse(name, kwargs={"slug": slug, "pk": pk})).status_code == 403
    assert client.get(reverse("evaluations", kwargs={"slug": slug})).status_code == 403


def test_an_outsider_cannot_open_an_item_even_with_its_key(login, personas, campaign):
    key = queue.next_assignment(personas.annotator, campaign).key
    client = login(personas.outsider)
    assert client.get(item_url(personas.team.slug, key)).status_code == 404
    assert client.get(item_url(personas.other_team.slug, key)).status_code == 404


# ----------------------------------------------------------------------------- voting


def test_a_vote_returns_the_next_item_and_the_progress_at_once(login, personas, campaign):
    client = login(personas.annotator)
    slug = personas.team.slug
    first = queue.next_assignment(personas.annotator, campaign)
    total = queue.progress(personas.annotator, campaign)[1]
    response = client.post(
        item_url(slug, first.key, "vote"), {"choice": "left", "comment": " clearer "}, **JSON
    )
    data = response.json()
    second = queue.next_assignment(personas.annotator, campaign)
    assert (data["done"], data["total"]) == (1, total)
    assert data["url"] == item_url(slug, second.key)
    assert f"1 / {total}" in data["html"] and second.key in data["html"]
    vote = Vote.objects.get()
    assert (vote.choice, vote.comment, vote.annotator) == ("left", "clearer", personas.annotator)


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_closed_campaign_takes_no_vote_skip_or_undo_until_it_is_reopened(personas, campaign):
    annotator, member = _client(personas.annotator), _client(personas.member)
    slug = personas.team.slug
    voted = queue.next_assignment(personas.annotator, campaign)
    assert annotator.post(item_url(slug, voted.key, "vote"), {"choice": "tie"}).status_code == 302
    waiting = queue.next_assignment(personas.annotator, campaign)
    close_url = reverse("campaign-close", kwargs={"slug": slug, "pk": campaign.pk})
    # Annotators cannot close it; another team cannot see it.
    assert annotator.post(close_url, {"action": "close"}).status_code == 403
    outsider = _client(personas.outsider)
    assert outsider.post(close_url, {"action": "close"}).status_code == 404

    page = member.post(close_url, {"action": "close"}, follow=True).content.decode()
    assert "no more votes are taken, the results below are final" in page
    campaign.refresh_from_db()
    assert campaign.is_closed

    vote = annotator.post(item_url(slug, waiting.key, "vote"), {"choice": "left"}, **JSON).json()
    assert "closed" in vote["error"] and "This campaign is closed" in vote["html"]
    assert vote["done"] == 1
    skip = annotator.post(item_url(slug, waiting.key, "skip"), **JSON).json()
    assert "closed" in skip["error"]
    undo = annotator.post(
        reverse("annotate-undo", kwargs={"slug": slug, "pk": campaign.pk}), **JSON
    ).json()
    assert "closed" in undo["error"]
    assert Vote.objects.filter(undone_at__isnull=True).count() == 1  # the vote before
    # The item's page and the queue send the annotator to the closed notice.
    assert annotator.get(item_url(slug, waiting.key)).status_code == 302
    notice = annotator.get(
        reverse("annotate-campaign", kwargs={"slug": slug, "pk": campaign.pk})
    ).content.decode()
    assert "This campaign is closed" in notice and waiting.key not in notice
    home = annotator.get(reverse("annotate", kwargs={"slug": slug})).content.decode()
    assert "Closed" in home

    member.post(close_url, {"action": "reopen"})
    again = annotator.post(item_url(slug, waiting.key, "vote"), {"choice": "left"}, **JSON)
    assert "error" not in again.json() and Vote.objects.count() == 2


def test_double_submission_records_one_vote(login, personas, campaign):
    client = login(personas.annotator)
    key = queue.next_assignment(personas.annotator, campaign).key
    url = item_url(personas.team.slug, key, "vote")
    assert client.post(url, {"choice": "left"}, **JSON).status_code == 200
    again = client.post(url, {"choice": "right"}, **JSON)
    assert again.status_code == 200 and "already voted" in again.json()["error"]
    assert client.post(url, {"choice": "right"}).status_code == 302  # the no-JS form
    assert Vote.objects.count() == 1 and Vote.objects.get().choice == "left"


def test_without_javascript_the_forms_post_and_redirect_to_the_next_item(login, personas, campaign):
    client = login(personas.annotator)
    slug = personas.team.slug
    first = queue.next_assignment(personas.annotator, campaign)
    response = client.post(item_url(slug, first.key, "vote"), {"choice": "right"}, follow=True)
    second = queue.next_assignment(personas.annotator, campaign)
    assert response.redirect_chain[-1][0] == item_url(slug, second.key)
    # A voted item sends the person on to the next one.
    assert client.get(item_url(slug, first.key))["Location"].endswith(f"/annotate/{campaign.pk}/")
    undo = client.post(
        reverse("annotate-undo", kwargs={"slug": slug, "pk": campaign.pk}), follow=True
    )
    assert undo.redirect_chain[-1][0] == item_url(slug, first.key)
    assert Vote.objects.get().undone_at is not None


def test_invalid_choice_is_422(login, personas, campaign):
    key = queue.next_assignment(personas.annotator, campaign).key
    client = login(personas.annotator)
    url = item_url(personas.team.slug, key, "vote")
    assert client.post(url, {"choice": "both"}, **JSON).status_code == 422
    assert not Vote.objects.exists()


def test_undo_button_is_offered_only_while_the_last_vote_may_be_undone(login, personas, campaign):
    client = login(personas.annotator)
    slug = personas.team.slug
    first = queue.next_assignment(personas.annotator, campaign)
    page = client.get(item_url(slug, first.key)).content.decode()
    assert 'type="submit" disabled>Undo last vote' in page
    data = client.post(item_url(slug, first.key, "vote"), {"choice": "tie"}, **JSON).json()
    assert 'type="submit">Undo last vote' in data["html"]
    undo_url = reverse("annotate-undo", kwargs={"slug": slug, "pk": campaign.pk})
    data = client.post(undo_url, **JSON).json()
    assert data["url"] == item_url(slug, first.key) and data["done"] == 0
    data = client.post(undo_url, **JSON).json()
    assert "already undone" in data["error"]


# ----------------------------------------------------------------------------- results


def _vote_all(campaign, user, choice_for):
    while (a := queue.next_assignment(user, campaign)) is not None:
        annotation_actions.record_vote(a, user, choice_for(a))


def _a_wins(assignment) -> str:
    return "left" if assignment.item.a_on_left else "right"


def test_results_count_wins_ties_losses_per_pair_from_the_systems_side(login, personas, campaign):
    _vote_all(campaign, personas.annotator, _a_wins)  # always the pair's first system
    _vote_all(campaign, personas.member, lambda a: "tie")
    client = login(personas.member)
    body = client.get(reverse("campaign", kwargs={"slug": personas.team.slug, "pk": campaign.pk}))
    html = body.content.decode()
    assert body.status_code == 200
    n_items = 5
    assert html.count('data-testid="pair-result"') == 3
    assert f'data-win="{n_items}" data-tie="{n_items}" data-lose="0"' in html
    assert "Bradley–Terry" in html and "Fleiss" in html and "Cohen" in html
    assert '<span class="num" data-testid="total-votes">30</span>' in html
    # Agreement: the two never agree (win vs tie): raw agreement 0.
    assert '<span class="num" data-testid="raw-agreement">0.00</span>' in html


def test_results_poll_answers_204_until_a_vote_changes_them(login, personas, campaign):
    client = login(personas.member)
    url = reverse("campaign", kwargs={"slug": personas.team.slug, "pk": campaign.pk})
    first = client.get(url, {"fragment": "1"})
    assert first.status_code == 200 and b"<html" not in first.content
    version = first.content.decode().split('data-version="')[1].split('"')[0]
    assert client.get(url, {"fragment": "1", "v": version}).status_code == 204
    assignment = queue.next_assignment(personas.annotator, campaign)
    annotation_actions.record_vote(assignment, personas.annotator, "left")
    assert client.get(url, {"fragment": "1", "v": version}).status_code == 200
    version2 = report_version(campaign)
    annotation_actions.undo_last_vote(personas.annotator, campaign)
    assert report_version(campaign) != version2


def report_version(campaign):
    from webapp.annotation.report import version

    return version(campaign)


def test_export_has_every_live_vote_in_csv_and_jsonl(login, personas, campaign):
    first = queue.next_assignment(personas.annotator, campaign)
    annotation_actions.record_vote(first, personas.annotator, "left", "nice")
    second = queue.next_assignment(personas.annotator, campaign)
    annotation_actions.record_vote(second, personas.annotator, "right")
    annotation_actions.undo_last_vote(personas.annotator, campaign)
    annotation_actions.record_vote(second, personas.annotator, "tie")
    annotation_actions.record_vote(
        queue.next_assignment(personas.member, campaign), personas.member, "left"
    )

    client = login(personas.owner)
    url = reverse("campaign-export", kwargs={"slug": personas.team.slug, "pk": campaign.pk})
    response = client.get(url, {"format": "csv"})
    assert response["Content-Disposition"].endswith('.csv"')
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 3
    row = next(r for r in rows if r["comment"] == "nice")
    pair = first.item.pair
    a, b = pair.system_a.name, pair.system_b.name
    assert (row["system_a"], row["system_b"], row["annotator"], row["choice"]) == (
        a,
        b,
        "carol",
        "left",
    )
    assert (row["left"], row["right"]) == ((a, b) if first.item.a_on_left else (b, a))
    assert row["winner"] == row["left"] and row["item"] == first.item.key
    assert row["prompt"].startswith("user: q") and row["time"]
    assert {r["choice"] for r in rows if r["annotator"] == "carol"} == {"left", "tie"}

    lines = b"".join(client.get(url, {"format": "jsonl"}).streaming_content).decode()
    records = [json.loads(line) for line in lines.splitlines()]
    assert len(records) == 3 and records[0]["item"] == first.item.key
    assert set(records[0]) == set(rows[0])


# ----------------------------------------------------------------------------- members' pages


def test_member_creates_an_evaluation_from_jobs_and_it_is_enqueued(
    login, personas, tmp_path, django_capture_on_commit_callbacks
):
    from webapp.jobs.models import Checkpoint, Job

    personas.prompt_set.prompts.update(split="test")
    seqkd = Job.objects.create(
        team=personas.team, name="s", method="seqkd", student="org/tiny-student", config={}
    )
    Checkpoint.objects.create(job=seqkd, step=10, path=str(tmp_path / "s"))
    client = login(personas.member)
    url = reverse("evaluation-create", kwargs={"slug": personas.team.slug})
    assert client.get(url).status_code == 200
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            url,
            {
                "name": "Held-out",
                "prompt_set": personas.prompt_set.pk,
                "prompt_choice": "test",
                "jobs": [personas.job.pk, seqkd.pk],
                "include_base": "on",
                "model_paths": "models/extra\n",
                "max_new_tokens": 64,
            },
        )
    evaluation = Evaluation.objects.get()
    assert response["Location"] == reverse(
        "evaluation", kwargs={"slug": personas.team.slug, "pk": evaluation.pk}
    )
    assert len(callbacks) == 1
    kinds = sorted(evaluation.systems.values_list("kind", flat=True))
    # two finals, one base (both jobs share the student), one path
    assert kinds == ["base", "checkpoint", "checkpoint", "path"]
    assert evaluation.num_prompts == 3 and evaluation.max_new_tokens == 64
    page = client.get(response["Location"]).content.decode()
    assert "Before distillation: org/tiny-student" in page


def test_the_form_adds_other_test_sets_and_an_automatic_judge(login, personas):
    from tests.webapp.factories import make_prompt_set
    from tests.webapp.test_teachers import make_endpoint

    personas.prompt_set.prompts.update(split="test")
    ood = make_prompt_set(personas.team, n=4, name="ood")
    judge = make_endpoint(personas.team, name="J")
    client = login(personas.member)
    url = reverse("evaluation-create", kwargs={"slug": personas.team.slug})
    response = client.post(
        url,
        {
            "name": "Two sets",
            "prompt_set": personas.prompt_set.pk,
            "prompt_choice": "test",
            "other_sets": [ood.pk],
            "limit": 2,
            "model_paths": "models/a\nmodels/b",
            "max_new_tokens": 8,
            "auto_judge": judge.pk,
        },
    )
    assert response.status_code == 302, response.content.decode()
    evaluation = Evaluation.objects.get()
    assert evaluation.num_prompts == 4 and evaluation.auto_judge == judge  # 2 from each set
    page = client.get(response["Location"]).content.decode()
    assert 'data-testid="test-sets"' in page and "ood (2)" in page
    assert "J, as soon as the answers are ready" in page


def test_evaluation_form_needs_two_systems(login, personas):
    client = login(personas.member)
    url = reverse("evaluation-create", kwargs={"slug": personas.team.slug})
    response = client.post(
        url,
        {
            "name": "x",
            "prompt_set": personas.prompt_set.pk,
            "prompt_choice": "all",
            "model_paths": "only/one",
            "max_new_tokens": 10,
        },
    )
    assert response.status_code == 422
    assert "at least two different systems" in response.content.decode()


def test_member_opens_a_campaign_with_the_default_pairs(login, personas):
    evaluation = make_evaluation(personas.team)
    client = login(personas.owner)
    url = reverse("campaign-create", kwargs={"slug": personas.team.slug, "pk": evaluation.pk})
    form = client.get(url).content.decode()
    s = systems_of(evaluation)

    def box(a, b) -> str:
        return re.search(rf'<input[^>]*value="{a.pk}:{b.pk}"[^>]*>', form).group(0)

    assert "checked" in box(s["gad"], s["base"]) and "checked" in box(s["gad"], s["seqkd"])
    assert "checked" not in box(s["seqkd"], s["base"])
    response = client.post(
        url,
        {
            "title": "Round one",
            "pairs": [f"{s['gad'].pk}:{s['base'].pk}", f"{s['gad'].pk}:{s['seqkd'].pk}"],
            "annotators": [personas.annotator.pk, personas.member.pk],
            "overlap": 2,
            "seed": 3,
        },
    )
    assert response.status_code == 302
    campaign = evaluation.campaigns.get()
    assert campaign.assignments.count() == 5 * 2 * 2
    refused = client.post(
        url,
        {
            "title": "GAD round",
            "pairs": [f"{s['gad'].pk}:{s['base'].pk}"],
            "annotators": [personas.annotator.pk],
            "overlap": 1,
        },
    )
    assert refused.status_code == 422 and "Choose a neutral title" in refused.content.decode()


def test_status_json_reports_each_systems_progress(login, personas):
    evaluation = make_evaluation(personas.team, n_prompts=2)
    client = login(personas.member)
    data = client.get(
        reverse("evaluation-status", kwargs={"slug": personas.team.slug, "pk": evaluation.pk})
    ).json()
    assert data["status"] == "ready" and data["num_prompts"] == 2
    assert [s["answers"] for s in data["systems"]] == [2, 2, 2]


def test_delete_needs_the_name_and_an_idle_evaluation_then_takes_everything(
    login, personas, settings, tmp_path, django_capture_on_commit_callbacks
):
    from tests.webapp.test_evaluation import make_campaign, make_evaluation
    from webapp.annotation.models import Campaign, Vote
    from webapp.evaluation.models import EvalStatus, SystemAnswer
    from webapp.judging.models import JudgeRun

    settings.GAD_DATA_DIR = tmp_path
    evaluation = make_evaluation(personas.team, n_prompts=2)
    campaign = make_campaign(evaluation, [personas.annotator])
    assignment = campaign.assignments.first()
    Vote.objects.create(assignment=assignment, annotator=personas.annotator, choice="tie")
    work = tmp_path / "evaluations" / str(evaluation.pk)
    work.mkdir(parents=True)
    client = login(personas.member)
    url = reverse("evaluation-delete", kwargs={"slug": personas.team.slug, "pk": evaluation.pk})
    page = reverse("evaluation", kwargs={"slug": personas.team.slug, "pk": evaluation.pk})
    assert 'data-testid="delete-confirm"' in client.get(page).content.decode()

    response = client.post(url, {"confirm": "wrong name"}, follow=True)
    assert "Type the evaluation&#x27;s name to confirm" in response.content.decode()
    Evaluation.objects.filter(pk=evaluation.pk).update(status=EvalStatus.GENERATING)
    response = client.post(url, {"confirm": evaluation.name}, follow=True)
    assert "still being generated" in response.content.decode()
    Evaluation.objects.filter(pk=evaluation.pk).update(status=EvalStatus.READY)
    from datetime import timedelta

    from django.utils import timezone

    run = JudgeRun.objects.create(
        evaluation=evaluation,
        status=JudgeRun.Status.RUNNING,
        claimed_by="w:1:1",
        claimed_until=timezone.now() + timedelta(seconds=60),
    )
    response = client.post(url, {"confirm": evaluation.name}, follow=True)
    assert "A judge run is in progress" in response.content.decode()
    assert Evaluation.objects.filter(pk=evaluation.pk).exists() and work.exists()

    JudgeRun.objects.filter(pk=run.pk).update(status=JudgeRun.Status.SUCCEEDED)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"confirm": evaluation.name})
    assert response.status_code == 302
    assert response["Location"] == reverse("evaluations", kwargs={"slug": personas.team.slug})
    assert not Evaluation.objects.filter(pk=evaluation.pk).exists()
    assert not Campaign.objects.exists() and not Vote.objects.exists()
    assert not SystemAnswer.objects.exists() and not JudgeRun.objects.exists()
    assert not work.exists()
    assert personas.job.__class__.objects.filter(pk=personas.job.pk).exists()  # jobs stay
