"""The API can do what the pages do (issue 27, item 5): every page URL that takes a POST
(the persona matrix of tests/webapp/test_access.py lists them all, and fails when one is
missing) has an API route in the OpenAPI schema, or is a person's act by design. And
the routes added for parity work, with their refusals."""

from __future__ import annotations

import pytest

from tests.webapp.factories import make_job
from tests.webapp.test_access import TEAM_URLS
from webapp.evaluation.models import EvalStatus, Evaluation
from webapp.jobs.models import Job
from webapp.promptsets.models import PromptSet
from webapp.teachers.models import TeacherEndpoint
from webapp.teams.actions import create_api_token

PARITY = {
    "prompt-sets": "post /api/v1/prompt-sets",
    "prompt-set-split": "post /api/v1/prompt-sets/{prompt_set_id}/split",
    "prompt-set-delete": "delete /api/v1/prompt-sets/{prompt_set_id}",
    "job-launch": "post /api/v1/jobs",
    "job-resume": "post /api/v1/jobs/{job_id}/resume",
    "job-cancel": "post /api/v1/jobs/{job_id}/cancel",
    "job-delete": "delete /api/v1/jobs/{job_id}",
    "job-sweep": "post /api/v1/jobs/{job_id}/sweeps",
    "checkpoint-final": "post /api/v1/checkpoints/{checkpoint_id}/final",
    "checkpoint-delete": "delete /api/v1/checkpoints/{checkpoint_id}",
    "team-storage": "put /api/v1/teams/{slug}/retention",
    "trackers": "put /api/v1/teams/{slug}/trackers",
    "team-members": "put /api/v1/teams/{slug}/members",
    "team-member-remove": "delete /api/v1/teams/{slug}/members/{user_id}",
    "teacher-create": "post /api/v1/teachers",
    "teacher": "patch /api/v1/teachers/{teacher_id}",
    "teacher-delete": "delete /api/v1/teachers/{teacher_id}",
    "teacher-test": "post /api/v1/teachers/{teacher_id}/test",
    "evaluation-create": "post /api/v1/evaluations",
    "campaign-create": "post /api/v1/evaluations/{evaluation_id}/campaigns",
    "campaign-close": "post /api/v1/campaigns/{campaign_id}/close",
    "evaluation-generate": "post /api/v1/evaluations/{evaluation_id}/generate",
    "evaluation-delete": "delete /api/v1/evaluations/{evaluation_id}",
    "evaluation-judge": "post /api/v1/evaluations/{evaluation_id}/judge-runs",
    "judge-run-continue": "post /api/v1/evaluations/{evaluation_id}/judge-runs/{run_id}/continue",
}
# Blind annotation is a person's judgement of two unnamed answers: a route for scripts to
# vote would defeat what the votes measure.
BY_A_PERSON = {"annotate-vote", "annotate-skip", "annotate-undo"}


def test_every_page_action_has_an_api_route(client):
    posted = {name for name, method, _, _ in TEAM_URLS if method == "post"}
    accounted = set(PARITY) | BY_A_PERSON
    assert posted - accounted == set(), "page actions with no API route and no reason"
    assert accounted - posted == set(), "listed here, but no longer a page action"
    schema = client.get("/api/v1/openapi.json").json()["paths"]
    routes = {f"{method} {path}" for path, ops in schema.items() for method in ops}
    assert {r for r in PARITY.values() if r not in routes} == set()


def bearer(user) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(user, 't')[1]}"}


def test_prompt_sets_and_teachers_delete_unless_a_running_job_uses_them(client, personas):
    auth = bearer(personas.member)
    used = client.delete(f"/api/v1/prompt-sets/{personas.prompt_set.pk}", **auth)
    assert used.status_code == 409 and "used by running job" in used.json()["detail"]
    teacher = TeacherEndpoint.objects.create(
        team=personas.team, name="t", base_url="https://api.example.com/v1", model="m"
    )
    assert client.delete(f"/api/v1/teachers/{teacher.pk}", **auth).status_code == 204
    assert not TeacherEndpoint.objects.filter(pk=teacher.pk).exists()
    Job.objects.filter(pk=personas.job.pk).update(status="cancelled")
    assert client.delete(f"/api/v1/prompt-sets/{personas.prompt_set.pk}", **auth).status_code == 204
    assert not PromptSet.objects.filter(pk=personas.prompt_set.pk).exists()
    outsider = bearer(personas.outsider)
    assert client.delete(f"/api/v1/teachers/{teacher.pk}", **outsider).status_code == 404


def test_a_guard_paused_job_resumes_through_the_api(client, personas):
    auth = bearer(personas.member)
    url = f"/api/v1/jobs/{personas.job.pk}/resume"
    refused = client.post(url, **auth)
    assert refused.status_code == 409 and refused.json()["error"] == "not_paused"
    paused = make_job(personas.team, personas.prompt_set, status="paused", guard_paused=True)
    got = client.post(f"/api/v1/jobs/{paused.pk}/resume", **auth)
    assert got.status_code == 200 and got.json()["status"] == "queued"
    assert client.post(url, **bearer(personas.annotator)).status_code == 403


def test_evaluations_generate_again_and_delete(client, personas):
    auth = bearer(personas.member)
    evaluation = Evaluation.objects.create(team=personas.team, name="e", status=EvalStatus.READY)
    got = client.post(f"/api/v1/evaluations/{evaluation.pk}/generate", **auth)
    assert got.status_code == 200 and got.json() == {"systems": 0}  # no failed system
    assert client.delete(f"/api/v1/evaluations/{evaluation.pk}", **auth).status_code == 204
    assert not Evaluation.objects.filter(pk=evaluation.pk).exists()
    other = Evaluation.objects.create(team=personas.other_team, name="theirs")
    assert client.delete(f"/api/v1/evaluations/{other.pk}", **auth).status_code == 404


@pytest.mark.parametrize("value", [0, 1001, "three"])
def test_the_retention_route_checks_its_value(client, personas, value):
    got = client.put(
        "/api/v1/teams/acme/retention",
        {"retain_checkpoints": value},
        content_type="application/json",
        **bearer(personas.owner),
    )
    assert got.status_code == 422 and "retain_checkpoints" in got.content.decode()


def test_owners_set_the_retention_members_read_it(client, personas):
    put = {"content_type": "application/json"}
    body = {"retain_checkpoints": 4}
    member = bearer(personas.member)
    assert client.put("/api/v1/teams/acme/retention", body, **put, **member).status_code == 403
    got = client.put("/api/v1/teams/acme/retention", body, **put, **bearer(personas.owner))
    assert got.status_code == 200 and got.json() == body
    assert client.get("/api/v1/teams/acme/retention", **member).json() == body
    cleared = {"retain_checkpoints": None}
    client.put("/api/v1/teams/acme/retention", cleared, **put, **bearer(personas.owner))
    personas.team.refresh_from_db()
    assert personas.team.retain_checkpoints is None


def test_an_evaluation_is_created_through_the_api_with_the_forms_checks(client, personas):
    auth = bearer(personas.member)
    body = {
        "team": "acme",
        "name": "api eval",
        "prompt_set": personas.prompt_set.pk,
        "prompt_choice": "all",
        "jobs": [personas.job.pk],
    }
    got = client.post("/api/v1/evaluations", body, content_type="application/json", **auth)
    assert got.status_code == 201, got.content
    created = got.json()
    assert created["name"] == "api eval" and created["status"] == "generating"
    evaluation = Evaluation.objects.get(pk=created["id"])
    kinds = sorted(evaluation.systems.values_list("kind", flat=True))
    assert kinds == ["base", "checkpoint"]  # the job's final checkpoint and its student
    assert evaluation.max_new_tokens > 0

    def refused(**change) -> str:
        got = client.post(
            "/api/v1/evaluations", {**body, **change}, content_type="application/json", **auth
        )
        assert got.status_code == 422, got.content
        return got.json()["detail"]

    assert "at least two different systems" in refused(name="one", include_base=False)
    assert refused(name="other team's job", jobs=[999999]).startswith("jobs: ")
    assert "name" in refused(name="")
    assert "temperature" in refused(name="hot", temperature=5)
    theirs = client.post(
        "/api/v1/evaluations", {**body, "team": "other"}, content_type="application/json", **auth
    )
    assert theirs.status_code == 404


def test_campaigns_open_close_and_export_their_votes_through_the_api(client, personas):
    from tests.webapp.test_evaluation import make_evaluation
    from webapp.annotation import actions as annotation_actions
    from webapp.annotation.models import Assignment

    auth = bearer(personas.member)
    evaluation = make_evaluation(personas.team)
    url = f"/api/v1/evaluations/{evaluation.pk}/campaigns"
    got = client.post(url, {"seed": 7}, content_type="application/json", **auth)
    assert got.status_code == 201, got.content
    campaign = got.json()
    assert campaign["overlap"] == 1 and campaign["assignments"] > 0  # the one annotator
    assignment = Assignment.objects.filter(campaign_id=campaign["id"]).first()
    annotation_actions.record_vote(assignment, personas.annotator, "left")
    csv = client.get(f"/api/v1/campaigns/{campaign['id']}/votes", **auth)
    assert csv.status_code == 200 and csv["Content-Type"].startswith("text/csv")
    assert len(b"".join(csv.streaming_content).decode().strip().splitlines()) == 2  # header+1
    jsonl = client.get(f"/api/v1/campaigns/{campaign['id']}/votes?format=jsonl", **auth)
    assert len(b"".join(jsonl.streaming_content).decode().strip().splitlines()) == 1
    closed = client.post(f"/api/v1/campaigns/{campaign['id']}/close", **auth).json()
    assert closed["closed"] and closed["votes"] == 1
    assert not client.post(f"/api/v1/campaigns/{campaign['id']}/reopen", **auth).json()["closed"]

    def refused(body) -> str:
        got = client.post(url, body, content_type="application/json", **auth)
        assert got.status_code == 422, got.content
        return got.json()["detail"]

    foreign = max(evaluation.systems.values_list("pk", flat=True)) + 1000
    assert refused({"pairs": [[foreign, foreign + 1]]}).startswith("pairs: ")  # not its systems
    assert refused({"annotators": [personas.outsider.pk]}).startswith("annotators: ")
    assert "overlap" in refused({"overlap": 3})  # one annotator chosen
    assert (
        client.get(f"/api/v1/campaigns/{campaign['id']}", **bearer(personas.outsider)).status_code
        == 404
    )
    bad_format = client.get(f"/api/v1/campaigns/{campaign['id']}/votes?format=xml", **auth)
    assert bad_format.status_code == 422


def test_a_teacher_endpoint_is_changed_through_the_api(client, personas, settings):
    from tests.webapp.test_teachers import LOOPBACK, make_endpoint

    settings.GAD_ALLOWED_TEACHER_HOSTS = list(LOOPBACK)
    endpoint = make_endpoint(personas.team, api_key="sk-old-1234")
    make_endpoint(personas.team, name="taken")
    auth = bearer(personas.member)
    url = f"/api/v1/teachers/{endpoint.pk}"

    def patch(body):
        return client.patch(url, body, content_type="application/json", **auth)

    got = patch(
        {"model": "bigger", "api_key": "sk-new-" + "x" * 24 + "5678", "requests_per_minute": 60}
    )
    assert got.status_code == 200, got.content
    out = got.json()
    assert out["model"] == "bigger" and out["name"] == "local"  # left out: unchanged
    assert out["api_key_hint"].endswith("5678") and "sk-new" not in got.content.decode()
    assert out["requests_per_minute"] == 60
    moved = patch({"base_url": "http://localhost:9/v1"}).json()  # another host: key dropped
    assert moved["api_key_hint"] is None
    assert patch({"name": "taken"}).status_code == 409
    bad = patch({"base_url": "http://169.254.169.254/latest"})
    assert bad.status_code == 422 and "private address" in bad.json()["detail"]
    assert patch({"token_param": "max_length"}).status_code == 422
    theirs = client.patch(url, {"model": "x"}, content_type="application/json",
                          **bearer(personas.outsider))  # fmt: skip
    assert theirs.status_code == 404


def test_owners_manage_members_through_the_api(client, personas):
    owner, member = bearer(personas.owner), bearer(personas.member)
    listed = client.get("/api/v1/teams/acme/members", **member).json()
    assert {m["username"] for m in listed} == {"alice", "bob", "carol"}
    put = {"content_type": "application/json"}
    body = {"user": "dave@example.com", "role": "annotator"}
    assert client.put("/api/v1/teams/acme/members", body, **put, **member).status_code == 403
    got = client.put("/api/v1/teams/acme/members", body, **put, **owner)
    assert got.status_code == 200 and got.json()["role"] == "annotator"
    nobody = client.put("/api/v1/teams/acme/members", {"user": "zed"}, **put, **owner)
    assert nobody.status_code == 422 and nobody.json()["detail"].startswith("user: No user")
    bad_role = client.put(
        "/api/v1/teams/acme/members", {"user": "bob", "role": "boss"}, **put, **owner
    )
    assert bad_role.status_code == 422
    dave = personas.outsider.pk
    assert client.delete(f"/api/v1/teams/acme/members/{dave}", **owner).status_code == 204
    assert client.delete(f"/api/v1/teams/acme/members/{dave}", **owner).status_code == 404
    last = client.delete(f"/api/v1/teams/acme/members/{personas.owner.pk}", **owner)
    assert last.status_code == 409 and "at least one owner" in last.json()["detail"]
    assert client.get("/api/v1/teams/other/members", **member).status_code == 404


def test_the_teams_tracker_accounts_through_the_api(client, personas):
    auth, put = bearer(personas.member), {"content_type": "application/json"}
    url = "/api/v1/teams/acme/trackers"
    body = {"wandb_entity": "acme-ml", "wandb_api_key": "w" * 40, "mlflow_token": "m" * 40}
    got = client.put(url, body, **put, **auth)
    assert got.status_code == 200, got.content
    assert got.json()["wandb_entity"] == "acme-ml" and got.json()["wandb_key_hint"]
    assert "w" * 40 not in got.content.decode()  # write-only
    kept = client.put(url, {"wandb_entity": "acme-ml"}, **put, **auth).json()
    assert kept["wandb_key_hint"] and kept["mlflow_token_hint"]  # a key left out is kept
    removed = client.put(url, {"remove_mlflow_token": True}, **put, **auth).json()
    assert removed["mlflow_token_hint"] is None and removed["wandb_entity"] == ""
    bad = client.put(url, {"mlflow_tracking_uri": "http://169.254.169.254/"}, **put, **auth)
    assert bad.status_code == 422 and "mlflow_tracking_uri" in bad.json()["detail"]
    assert client.get(url, **bearer(personas.annotator)).status_code == 403
