"""An endpoint's dialect in the web app (issue 24, item 1): settings on the page and in
the API, and "Test connection" finding what the model wants.

Against a loopback stand-in for OpenAI's reasoning models (tests/teacher/
reasoning_server.py: refuses max_tokens and any temperature but 1, with the API's
structured 400 bodies; spends reasoning tokens before it writes)."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

import worker.teachers
from tests.teacher.reasoning_server import REASONING_TOKENS, ReasoningModel
from tests.webapp.test_teachers import make_endpoint
from webapp.teachers import actions
from webapp.teachers.models import TeacherEndpoint
from webapp.teachers.specs import teacher_spec
from webapp.teams.actions import create_api_token


@pytest.fixture
def gpt5():
    server = ReasoningModel()
    yield server
    server.close()


def after_test(endpoint: TeacherEndpoint) -> TeacherEndpoint:
    actions.request_test(endpoint)
    worker.teachers.run_teacher_test(endpoint.pk)
    endpoint.refresh_from_db()
    return endpoint


def test_test_connection_finds_the_dialect_and_every_call_then_speaks_it(gpt5, personas, login):
    endpoint = make_endpoint(
        personas.team, base_url=gpt5.url, model=gpt5.model, params={"temperature": 0.7}
    )
    endpoint = after_test(endpoint)
    assert endpoint.test_status == "ok", endpoint.test_error
    assert endpoint.dialect_found() == (
        "uses max_completion_tokens; temperature fixed at its default (1); "
        f"spends ~{REASONING_TOKENS} reasoning tokens per answer"
    )
    first, second, third = gpt5.bodies
    assert first["max_tokens"] == 1024  # a realistic budget, not 8 tokens
    assert second["max_completion_tokens"] == 1024 and second["temperature"] == 0.7
    assert "temperature" not in third and gpt5.statuses == {400: 2, 200: 1}
    # Collection, evaluation answers and the judge build their spec here.
    body = teacher_spec(endpoint, max_tokens=256).request_body([{"role": "user", "content": "hi"}])
    assert "max_completion_tokens" in body and "max_tokens" not in body
    assert "temperature" not in body
    page = login(personas.member).get(reverse("teacher", args=[personas.team.slug, endpoint.pk]))
    assert "uses max_completion_tokens" in page.content.decode()


def test_a_setting_the_team_chose_is_not_overridden_and_the_error_names_the_fix(gpt5, personas):
    endpoint = make_endpoint(
        personas.team, base_url=gpt5.url, model=gpt5.model, token_param="max_tokens"
    )
    endpoint = after_test(endpoint)
    assert endpoint.test_status == "error" and endpoint.test_error_kind == "run"
    assert "refuses the parameter 'max_tokens' (unsupported_parameter" in endpoint.test_error
    assert "max_completion_tokens" in endpoint.test_error
    assert "Unsupported parameter:" not in endpoint.test_error  # never the server's text
    assert len(gpt5.bodies) == 1  # no second try in the other dialect


def test_another_model_forgets_what_the_test_found(gpt5, personas):
    endpoint = after_test(make_endpoint(personas.team, base_url=gpt5.url, model=gpt5.model))
    assert endpoint.found_token_param == "max_completion_tokens"
    endpoint = actions.update_endpoint(
        endpoint, name=endpoint.name, base_url=endpoint.base_url, model="gpt-4o", params={}
    )
    assert endpoint.found_token_param == "" and endpoint.test_status == ""
    assert endpoint.dialect().token_param == "max_tokens"


def test_the_api_sets_and_shows_the_dialect(client, personas):
    token = create_api_token(personas.member, "t")[1]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    body = {
        "team": personas.team.slug,
        "name": "o3",
        "base_url": "http://127.0.0.1:9/v1",
        "model": "o3",
        "token_param": "max_completion_tokens",
        "temperature_mode": "omit",
        "reasoning_effort": "low",
    }
    created = client.post("/api/v1/teachers", json.dumps(body), "application/json", **auth)
    assert created.status_code == 201, created.content
    shown = created.json()
    assert shown["token_param"] == "max_completion_tokens"
    assert shown["temperature_mode"] == "omit" and shown["reasoning_effort"] == "low"
    assert shown["dialect_found"] == ""
    dialect = TeacherEndpoint.objects.get(pk=shown["id"]).dialect()
    assert (dialect.token_param, dialect.send_temperature, dialect.reasoning_effort) == (
        "max_completion_tokens",
        False,
        "low",
    )
    bad = client.post(
        "/api/v1/teachers",
        json.dumps(body | {"name": "x", "token_param": "max_toks"}),
        "application/json",
        **auth,
    )
    assert bad.status_code == 422 and "token_param" in bad.content.decode()


def test_the_form_sets_the_dialect(personas, login):
    client = login(personas.member)
    url = reverse("teacher-create", args=[personas.team.slug])
    form = {
        "name": "gpt-5",
        "base_url": "http://127.0.0.1:9/v1",
        "model": "gpt-5",
        "token_param": "max_completion_tokens",
        "temperature_mode": "omit",
        "reasoning_effort": "minimal",
    }
    assert "Token parameter" in client.get(url).content.decode()
    assert client.post(url, form).status_code == 302
    endpoint = TeacherEndpoint.objects.get(name="gpt-5")
    assert endpoint.token_param == "max_completion_tokens"
    assert endpoint.temperature_mode == "omit" and endpoint.reasoning_effort == "minimal"


def test_the_judge_table_carries_the_reports_protocol_note():
    from types import SimpleNamespace

    from webapp.judging.runs import table

    note = "the judge model accepts only its default temperature (1): it judged at 1"
    report = {"judge": {"model": "o3", "deviation": note}, "systems": [], "test_set": "t"}
    assert table(SimpleNamespace(report=report))["deviation"] == note
    assert table(SimpleNamespace(report={**report, "judge": {"model": "m"}}))["deviation"] == ""
