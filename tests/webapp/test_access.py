"""Every team-owned URL, tried by every persona: owner, member, annotator, outsider.

``TEAM_URLS`` must list every URL pattern that takes a team slug; a test fails when a
new one is added without an entry, so no page escapes the persona matrix.
"""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

# (url name, method, extra kwargs, expected status per role)
OK, FORBIDDEN, NOT_FOUND, REDIRECT = 200, 403, 404, 302
TEAM_URLS = [
    ("team", "get", {}, {"owner": OK, "member": OK, "annotator": OK}),
    ("team-members", "get", {}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("team-members", "post", {}, {"owner": OK, "member": FORBIDDEN, "annotator": FORBIDDEN}),
    ("team-usage", "get", {}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    (
        "team-member-remove",
        "post",
        {"user_id": "member"},
        {"owner": REDIRECT, "member": FORBIDDEN, "annotator": FORBIDDEN},
    ),
    # Prompt sets, jobs and checkpoints: members work with them, annotators only vote.
    ("prompt-sets", "get", {}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("prompt-sets", "post", {}, {"owner": 422, "member": 422, "annotator": FORBIDDEN}),
    (
        "prompt-set",
        "get",
        {"pk": "prompt_set"},
        {"owner": OK, "member": OK, "annotator": FORBIDDEN},
    ),
    (
        "prompt-set-split",
        "post",
        {"pk": "prompt_set"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": FORBIDDEN},
    ),
    (
        "prompt-set-download",
        "get",
        {"pk": "prompt_set"},
        {"owner": OK, "member": OK, "annotator": FORBIDDEN},
    ),
    (
        "prompt-set-delete",
        "post",
        {"pk": "prompt_set"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": FORBIDDEN},
    ),
    (
        "prompt-set-upload",
        "get",
        {"pk": "upload"},
        {"owner": OK, "member": OK, "annotator": FORBIDDEN},
    ),
    (
        "prompt-set-upload-status",
        "get",
        {"pk": "upload"},
        {"owner": OK, "member": OK, "annotator": FORBIDDEN},
    ),
    ("jobs", "get", {}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("job-launch", "get", {}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("job-launch", "post", {}, {"owner": 422, "member": 422, "annotator": FORBIDDEN}),
    ("job", "get", {"pk": "job"}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    (
        "job-resume",
        "post",
        {"pk": "job"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": FORBIDDEN},
    ),
    (
        "job-cancel",
        "post",
        {"pk": "job"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": FORBIDDEN},
    ),
    (
        "checkpoint-download",
        "get",
        {"pk": "checkpoint"},
        {"owner": OK, "member": OK, "annotator": FORBIDDEN},
    ),
    (
        "checkpoint-final",
        "post",
        {"pk": "checkpoint"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": FORBIDDEN},
    ),
    (  # the queued job's only checkpoint: refused with a message, nothing deleted
        "checkpoint-delete",
        "post",
        {"pk": "checkpoint"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": FORBIDDEN},
    ),
    (
        "job-delete",
        "post",
        {"pk": "job"},
        {"owner": REDIRECT, "member": FORBIDDEN, "annotator": FORBIDDEN},
    ),
    ("team-storage", "get", {}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("team-storage", "post", {}, {"owner": REDIRECT, "member": FORBIDDEN, "annotator": FORBIDDEN}),
    # Teacher endpoints ("teacher": a TeacherEndpoint of the team, from OBJECT_FACTORIES).
    ("teachers", "get", {}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("teacher-create", "get", {}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("trackers", "get", {}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("trackers", "post", {}, {"owner": REDIRECT, "member": REDIRECT, "annotator": FORBIDDEN}),
    ("teacher-create", "post", {}, {"owner": 422, "member": 422, "annotator": FORBIDDEN}),
    ("teacher", "get", {"pk": "teacher"}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("teacher", "post", {"pk": "teacher"}, {"owner": 422, "member": 422, "annotator": FORBIDDEN}),
    (
        "teacher-delete",
        "post",
        {"pk": "teacher"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": FORBIDDEN},
    ),
    (
        "teacher-test",
        "post",
        {"pk": "teacher"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": FORBIDDEN},
    ),
    (
        "teacher-status",
        "get",
        {"pk": "teacher"},
        {"owner": OK, "member": OK, "annotator": FORBIDDEN},
    ),
    # Evaluations and results: members and owners; annotators never see system names.
    ("evaluations", "get", {}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("evaluation-create", "get", {}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("evaluation-create", "post", {}, {"owner": 422, "member": 422, "annotator": FORBIDDEN}),
    (
        "evaluation",
        "get",
        {"pk": "evaluation"},
        {"owner": OK, "member": OK, "annotator": FORBIDDEN},
    ),
    (
        "evaluation-status",
        "get",
        {"pk": "evaluation"},
        {"owner": OK, "member": OK, "annotator": FORBIDDEN},
    ),
    (
        "evaluation-generate",
        "post",
        {"pk": "evaluation"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": FORBIDDEN},
    ),
    (
        "evaluation-delete",
        "post",
        {"pk": "evaluation"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": FORBIDDEN},
    ),
    (
        "evaluation-judge",
        "post",
        {"pk": "evaluation"},
        {"owner": 422, "member": 422, "annotator": FORBIDDEN},
    ),
    (
        # A running run is not paused: members are refused with the reason (422).
        "judge-run-continue",
        "post",
        {"pk": "evaluation", "run_id": "judge_run"},
        {"owner": 422, "member": 422, "annotator": FORBIDDEN},
    ),
    (
        "campaign-create",
        "get",
        {"pk": "evaluation"},
        {"owner": OK, "member": OK, "annotator": FORBIDDEN},
    ),
    (
        "campaign-create",
        "post",
        {"pk": "evaluation"},
        {"owner": 422, "member": 422, "annotator": FORBIDDEN},
    ),
    ("campaign", "get", {"pk": "campaign"}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    (
        "campaign-export",
        "get",
        {"pk": "campaign"},
        {"owner": OK, "member": OK, "annotator": FORBIDDEN},
    ),
    (
        "campaign-close",
        "post",
        {"pk": "campaign"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": FORBIDDEN},
    ),
    # Annotation: everyone in the team has a queue; an item is its assignee's alone
    # ("assignment": carol's, so the owner and the member get 404 like strangers).
    ("annotate", "get", {}, {"owner": OK, "member": OK, "annotator": OK}),
    (
        "annotate-campaign",
        "get",
        {"pk": "campaign"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": REDIRECT},
    ),
    (
        "annotate-undo",
        "post",
        {"pk": "campaign"},
        {"owner": REDIRECT, "member": REDIRECT, "annotator": REDIRECT},
    ),
    (
        "annotate-item",
        "get",
        {"key": "assignment"},
        {"owner": NOT_FOUND, "member": NOT_FOUND, "annotator": OK},
    ),
    (
        "annotate-vote",
        "post",
        {"key": "assignment"},
        {"owner": NOT_FOUND, "member": NOT_FOUND, "annotator": 422},
    ),
    (
        "annotate-skip",
        "post",
        {"key": "assignment"},
        {"owner": NOT_FOUND, "member": NOT_FOUND, "annotator": REDIRECT},
    ),
    # Monitoring: the charts' data, the samples viewer, run comparison (members' pages).
    ("job-metrics", "get", {"pk": "job"}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("job-samples", "get", {"pk": "job"}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    (
        "job-tensorboard",
        "get",
        {"pk": "tensorboard_job"},
        {"owner": OK, "member": OK, "annotator": FORBIDDEN},
    ),
    ("jobs-compare", "get", {}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    # Checkpoint sweeps start from a job (members); a bogus POST is a form error, not a sweep.
    ("job-sweep", "get", {"pk": "job"}, {"owner": OK, "member": OK, "annotator": FORBIDDEN}),
    ("job-sweep", "post", {"pk": "job"}, {"owner": 422, "member": 422, "annotator": FORBIDDEN}),
]


def _teacher(personas):
    from tests.webapp.test_teachers import make_endpoint

    return make_endpoint(personas.team)


def _evaluation(personas):
    from tests.webapp.test_evaluation import make_evaluation

    return make_evaluation(personas.team)


def _judge_run(personas):
    """A judge run of the evaluation made last for this request (its ``pk``)."""
    from webapp.evaluation.models import Evaluation
    from webapp.judging.models import JudgeRun

    evaluation = Evaluation.objects.filter(team=personas.team).latest("pk")
    return JudgeRun.objects.create(evaluation=evaluation, judge_name="j", status="running")


def _campaign(personas):
    from tests.webapp.test_evaluation import make_campaign

    everyone = [personas.owner, personas.member, personas.annotator]
    return make_campaign(_evaluation(personas), everyone)


def _assignment(personas):
    from types import SimpleNamespace

    campaign = _campaign(personas)
    mine = campaign.assignments.filter(annotator=personas.annotator).first()
    return SimpleNamespace(pk=mine.key)  # items are addressed by their opaque key


def _tensorboard_job(personas):
    from tests.webapp.test_job_trackers import with_tensorboard

    return with_tensorboard(personas.job)


def _upload(personas):
    from webapp.promptsets.models import Upload

    return Upload.objects.create(
        team=personas.team, name="u", filename="u.jsonl", staging_path="/nonexistent/u.jsonl"
    )


# Extra kwargs name a persona attribute or, here, a kind of team-owned object made per request.
OBJECT_FACTORIES = {
    "teacher": _teacher,
    "evaluation": _evaluation,
    "campaign": _campaign,
    "judge_run": _judge_run,
    "assignment": _assignment,
    "upload": _upload,
    "tensorboard_job": _tensorboard_job,
}


def _named_patterns(resolver: URLResolver, prefix: str = ""):
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _named_patterns(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern) and entry.name:
            yield entry.name, prefix + str(entry.pattern)


def test_every_team_url_is_in_the_persona_matrix():
    team_urls = {name for name, route in _named_patterns(get_resolver()) if "<slug:slug>" in route}
    assert team_urls == {name for name, *_ in TEAM_URLS}


def _request(client, personas, name, method, extra, slug):
    from django.urls import reverse

    kwargs = {"slug": slug}
    for key, value in extra.items():
        factory = OBJECT_FACTORIES.get(value)
        kwargs[key] = (factory(personas) if factory else getattr(personas, value)).pk
    url = reverse(name, kwargs=kwargs)
    if method == "post":
        return client.post(url, {"user": "nobody-such", "role": "member"})
    return client.get(url)


@pytest.mark.parametrize("name,method,extra,expected", TEAM_URLS)
@pytest.mark.parametrize("role", ["owner", "member", "annotator"])
def test_team_members_get_what_their_role_allows(
    client, personas, name, method, extra, expected, role
):
    client.force_login(getattr(personas, role))
    response = _request(client, personas, name, method, extra, personas.team.slug)
    assert response.status_code == expected[role]


@pytest.mark.parametrize("name,method,extra,expected", TEAM_URLS)
def test_outsider_gets_404_on_every_team_url(client, personas, name, method, extra, expected):
    client.force_login(personas.outsider)
    response = _request(client, personas, name, method, extra, personas.team.slug)
    assert response.status_code == NOT_FOUND


@pytest.mark.parametrize("name,method,extra,expected", TEAM_URLS)
def test_unknown_team_is_404_not_500(client, personas, name, method, extra, expected):
    client.force_login(personas.owner)
    response = _request(client, personas, name, method, extra, "no-such-team")
    assert response.status_code == NOT_FOUND


@pytest.mark.parametrize("name,method,extra,expected", TEAM_URLS)
def test_anonymous_is_sent_to_login(client, personas, name, method, extra, expected):
    response = _request(client, personas, name, method, extra, personas.team.slug)
    assert response.status_code == REDIRECT
    assert response["Location"].startswith("/accounts/login/")


def test_annotator_403_page_says_why(client, personas):
    client.force_login(personas.annotator)
    response = client.get(f"/teams/{personas.team.slug}/members/")
    assert response.status_code == FORBIDDEN
    body = response.content.decode()
    assert "Your role in this team is annotator" in body
    assert "Ask a team owner" in body


def test_outsider_404_page_does_not_reveal_the_team(client, personas):
    client.force_login(personas.outsider)
    response = client.get(f"/teams/{personas.team.slug}/")
    assert personas.team.name not in response.content.decode()


def test_team_switcher_lists_only_my_teams(client, personas):
    from webapp.teams.actions import set_membership

    set_membership(personas.other_team, personas.member, "member")
    client.force_login(personas.member)
    body = client.get(f"/teams/{personas.team.slug}/").content.decode()
    assert 'data-testid="team-switcher"' in body
    assert "/teams/acme/" in body and "/teams/other/" in body

    client.force_login(personas.annotator)
    body = client.get(f"/teams/{personas.team.slug}/").content.decode()
    assert "/teams/other/" not in body


def test_home_redirects_to_a_team_or_shows_the_empty_state(client, personas, django_user_model):
    client.force_login(personas.member)
    assert client.get("/")["Location"] == "/teams/acme/"

    loner = django_user_model.objects.create_user("loner", password="x")
    client.force_login(loner)
    response = client.get("/")
    assert response.status_code == OK
    assert "You are not in a team yet" in response.content.decode()


def test_annotator_dashboard_shows_no_job_names_and_links_the_queue(client, personas):
    personas.job.name = "gad-vs-seqkd-secret"
    personas.job.save()
    client.force_login(personas.annotator)
    body = client.get(f"/teams/{personas.team.slug}/").content.decode()
    assert 'data-testid="annotator-home"' in body and "/annotate/" in body
    assert personas.job.name not in body.split("<main>", 1)[1]
