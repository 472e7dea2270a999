"""Bad input is a 4xx with a message, never a 500 (docs/security.md, "Bad input"): the
inputs a review found, one by one, on the surface each reaches."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from tests.webapp.test_jobs import launch_data
from webapp.teams.actions import create_api_token

DEEP = "[" * 50_000 + "]" * 50_000
HUGE_INT = "9" * 5000


@pytest.fixture
def api(client, personas):
    token = create_api_token(personas.member, "t")[1]

    def post(path, payload=None, raw=None, **extra):
        body = raw if raw is not None else json.dumps(payload)
        return client.post(
            path,
            body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
            **extra,
        )

    return post


def _upload(client, personas, name: str, content: bytes):
    token = create_api_token(personas.member, "u")[1]
    return client.post(
        "/api/v1/prompt-sets",
        {"team": "acme", "name": "x", "file": SimpleUploadedFile(name, content)},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


def _refused(response, *words):
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    text = response.content.decode(errors="replace")
    for word in words:
        assert word in text, (word, text[:500])


@pytest.mark.parametrize(
    "name,content,words",
    [
        ("big-cell.csv", b"prompt\n" + b'"' + b"a" * 140_000 + b'"\n', ["big-cell.csv", "line 2"]),
        ("deep.jsonl", (DEEP + "\n").encode(), ["deep.jsonl", "line 1"]),
        ("int.jsonl", b'{"prompt": "hi", "id": ' + HUGE_INT.encode() + b"}\n", ["int.jsonl"]),
        ("nul.jsonl", b'{"prompt": "a\\u0000b"}\n', ["nul.jsonl", "line 1"]),
        ("long-id.jsonl", b'{"prompt": "hi", "id": "' + b"x" * 300 + b'"}\n', ["line 1", "id"]),
    ],
)
def test_hostile_uploads_are_refused_with_the_file_and_line(
    importer, client, personas, name, content, words
):
    _refused(_upload(client, personas, name, content), *words)
    assert not personas.team.prompt_sets.filter(name="x").exists()


def test_hostile_api_json_is_refused(api, personas):
    _refused(api("/api/v1/jobs", raw='{"team": "acme", "config": ' + DEEP + "}"))
    payload = {"team": "acme", "name": "t", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    _refused(
        api(
            "/api/v1/teachers",
            raw=json.dumps(payload)[:-1] + ', "params": {"seed": ' + HUGE_INT + "}}",
        )
    )
    _refused(api("/api/v1/teachers", {**payload, "name": "a\u0000b"}), "name")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", HUGE_INT])
def test_a_config_number_that_is_not_a_finite_number_is_refused(api, personas, value):
    raw = json.dumps({"team": "acme", **launch_data(personas, gpus=0)})
    body = raw[:-1] + ', "config": {"temperature": ' + value + "}}"
    _refused(api("/api/v1/jobs", raw=body), "Cannot parse the request body")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "inf", 10**400, "1e999"])
def test_the_config_itself_refuses_a_number_that_is_not_finite(value):
    """The same check for configs from the launch form, YAML files and --set."""
    from trainer.config import validate_dict

    config, errors = validate_dict({"student": "s", "temperature": value})
    assert config is None and errors[0][0] == "temperature"
    assert len(errors[0][1]) < 200  # the 400-digit number is not echoed whole


def test_a_pair_name_of_200_characters_is_refused_not_truncated_by_the_database(api, personas):
    personas.team.quota.max_concurrent_jobs = 10
    personas.team.quota.save()
    payload = {"team": "acme", **launch_data(personas, method="pair", gpus=0, name="n" * 200)}
    _refused(api("/api/v1/jobs", payload), "name")


def test_a_non_ascii_digit_in_the_launch_query_string_is_no_500(login, personas):
    client = login(personas.member)
    response = client.get(reverse("job-launch", kwargs={"slug": "acme"}) + "?from=²")
    assert response.status_code in (200, 404)


def test_nul_characters_in_forms_are_refused(login, personas):
    client = login(personas.member)
    url = reverse("teacher-create", kwargs={"slug": "acme"})
    response = client.post(
        url, {"name": "a\x00b", "base_url": "http://127.0.0.1:9/v1", "model": "m\x00"}
    )
    assert response.status_code in (200, 422) and b"Null characters" in response.content
