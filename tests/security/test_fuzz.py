"""Property-based: whatever a member sends, each input surface answers with success or
a 4xx that says why, never a 500 (docs/security.md, "Bad input"). One test per surface:
uploads, API JSON, forms and query strings."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webapp.teams.actions import create_api_token

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI never flakes on a new find
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text that reaches the awkward corners: NUL, lone surrogates excluded by JSON encoding
# are replaced, control characters, long runs, digits of other scripts ("²").
nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\x00", "²", "-1", "1e999", "NaN", "9" * 5000, "a" * 300, "../../etc", " "]),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | nasty_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(nasty_text, children, max_size=4)
    ),
    max_leaves=12,
)


def _ok(response) -> None:
    assert response.status_code < 500, response.content[:300]
    if response.status_code >= 400 and response.get("Content-Type", "").startswith(
        "application/json"
    ):
        body = response.json()  # the API's {"error", "detail"}, or a page's {"error"}
        assert body.get("detail") or body.get("error"), response.content[:300]


@pytest.fixture
def bearer(personas):
    return {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(personas.member, 'fuzz')[1]}"}


@FUZZ
@given(
    suffix=st.sampled_from([".jsonl", ".csv", ".parquet", ".txt"]),
    lines=st.lists(json_values, max_size=5),
    raw=st.binary(max_size=300),
    use_raw=st.booleans(),
)
def test_uploads_never_answer_500(importer, client, personas, bearer, suffix, lines, raw, use_raw):
    if use_raw:
        content = raw
    elif suffix == ".csv":
        content = ("prompt,id\n" + "\n".join(json.dumps(v)[:200] for v in lines)).encode()
    else:
        content = "\n".join(json.dumps(v) for v in lines).encode()
    upload = SimpleUploadedFile(f"fuzz{suffix}", content)
    _ok(client.post("/api/v1/prompt-sets", {"team": "acme", "file": upload}, **bearer))


@FUZZ
@given(
    path=st.sampled_from(["/api/v1/jobs", "/api/v1/teachers", "JUDGE", "SWEEP"]),
    payload=json_values,
    base=st.booleans(),
)
def test_api_json_never_answers_500(client, personas, bearer, path, payload, base):
    if path == "JUDGE":
        path = f"/api/v1/evaluations/{personas.job.pk}/judge-runs"
    elif path == "SWEEP":
        path = f"/api/v1/jobs/{personas.job.pk}/sweeps"
    if base and isinstance(payload, dict):  # a plausible body with fuzzed fields on top
        payload = {
            "team": "acme",
            "name": "n",
            "method": "gad",
            "prompt_set": personas.prompt_set.pk,
            "student": "org/s",
            "base_url": "http://127.0.0.1:9/v1",
            "model": "m",
            **payload,
        }
    body = json.dumps(payload, allow_nan=True)
    _ok(client.post(path, body, content_type="application/json", **bearer))


@FUZZ
@given(
    page=st.sampled_from(["job-launch", "teacher-create", "evaluation-create", "team-members"]),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "name",
                "method",
                "prompt_set",
                "student",
                "gpus",
                "cfg__temperature",
                "cfg__group_size",
                "cfg__lora__target_modules",
                "base_url",
                "model",
                "api_key",
                "temperature",
                "max_tokens",
                "seed",
                "prompt_choice",
                "jobs",
                "model_paths",
                "max_new_tokens",
                "limit",
                "user",
                "role",
                "guard",
            ]
        ),
        nasty_text,
        max_size=8,
    ),
)
def test_forms_never_answer_500(login, personas, page, fields):
    client = login(personas.owner)
    url = reverse(page, kwargs={"slug": personas.team.slug})
    _ok(client.post(url, fields))


@FUZZ
@given(
    page=st.sampled_from(
        [
            "jobs",
            "job-launch",
            "job",
            "job-samples",
            "job-metrics",
            "prompt-set",
            "evaluations",
            "team",
        ]
    ),
    query=st.dictionaries(
        st.sampled_from(
            [
                "from",
                "step",
                "after_step",
                "status",
                "method",
                "q",
                "page",
                "ids",
                "judge",
                "bound",
                "fragment",
                "v",
            ]
        ),
        nasty_text,
        max_size=4,
    ),
)
def test_query_strings_never_answer_500(login, personas, page, query):
    client = login(personas.owner)
    kwargs: dict = {"slug": personas.team.slug}
    if page in ("job", "job-samples", "job-metrics"):
        kwargs["pk"] = personas.job.pk
    if page == "prompt-set":
        kwargs["pk"] = personas.prompt_set.pk
    _ok(client.get(reverse(page, kwargs=kwargs), query))


# Numbers past every bound: JSON integers Python keeps exactly (a 400-digit one overflows
# a float, a bigint, a tensor), the edges of int64, and what JSON cannot say (NaN and
# infinity, which the API's parser refuses).
extreme_numbers = st.sampled_from(
    [10**400, -(10**400), 10**4000, 2**63, -(2**63) - 1, 1e308, -1e308]
    + [float("inf"), float("-inf"), float("nan")]
)
# (path, body) with the named field set to NUMBER: each named numeric field and each
# free-form entry of the API, nested ones included.
NUMBER = object()
NUMERIC_FIELDS = {
    "teacher params.temperature": ("/api/v1/teachers", {"params": {"temperature": NUMBER}}),
    "teacher params.top_p": ("/api/v1/teachers", {"params": {"top_p": NUMBER}}),
    "teacher params.max_tokens": ("/api/v1/teachers", {"params": {"max_tokens": NUMBER}}),
    "teacher params.seed": ("/api/v1/teachers", {"params": {"seed": NUMBER}}),
    "job gpus": ("/api/v1/jobs", {"gpus": NUMBER}),
    "job prompt_set": ("/api/v1/jobs", {"prompt_set": NUMBER}),
    "job teacher": ("/api/v1/jobs", {"teacher": NUMBER}),
    "job config.group_size": ("/api/v1/jobs", {"config": {"group_size": NUMBER}}),
    "job config.gad.lr": ("/api/v1/jobs", {"config": {"gad": {"lr": NUMBER}}}),
    "job config.nodes": ("/api/v1/jobs", {"config": {"nodes": NUMBER}}),
    "job config.micro_batch_tokens": ("/api/v1/jobs", {"config": {"micro_batch_tokens": NUMBER}}),
    "judge judge": ("JUDGE", {"judge": NUMBER}),
    "continue token_cap": ("CONTINUE", {"token_cap": NUMBER}),
    "sweep every": ("SWEEP", {"every": NUMBER, "judge": 1}),
    "sweep limit": ("SWEEP", {"limit": NUMBER, "judge": 1}),
    "sweep length_bound": ("SWEEP", {"length_bound": NUMBER, "judge": 1}),
    "sweep prompt_set": ("SWEEP", {"prompt_set": NUMBER, "judge": 1}),
}


def _with_number(body, number):
    if body is NUMBER:
        return number
    if isinstance(body, dict):
        return {key: _with_number(value, number) for key, value in body.items()}
    return body


@FUZZ
@given(field=st.sampled_from(sorted(NUMERIC_FIELDS)), number=extreme_numbers)
def test_every_numeric_field_refuses_huge_and_non_finite_numbers(
    client, personas, bearer, field, number
):
    path, body = NUMERIC_FIELDS[field]
    path = {
        "JUDGE": f"/api/v1/evaluations/{personas.job.pk}/judge-runs",
        "CONTINUE": f"/api/v1/evaluations/{personas.job.pk}/judge-runs/1/continue",
        "SWEEP": f"/api/v1/jobs/{personas.job.pk}/sweeps",
    }.get(path, path)
    payload = {
        "team": "acme",
        "name": "n",
        "method": "gad",
        "prompt_set": personas.prompt_set.pk,
        "student": "org/s",
        "base_url": "http://127.0.0.1:9/v1",
        "model": "m",
        **_with_number(body, number),
    }
    response = client.post(
        path, json.dumps(payload, allow_nan=True), content_type="application/json", **bearer
    )
    _ok(response)


@FUZZ
@given(
    page=st.sampled_from(["metrics", "samples", "sweep"]),
    number=extreme_numbers,
)
def test_numeric_query_parameters_refuse_huge_and_non_finite_numbers(
    client, personas, bearer, page, number
):
    url = {
        "metrics": f"/api/v1/jobs/{personas.job.pk}/metrics?after_step={number}",
        "samples": f"/api/v1/jobs/{personas.job.pk}/samples?step={number}",
        "sweep": f"/api/v1/sweeps/1?bound={number}",
    }[page]
    _ok(client.get(url, **bearer))


def test_a_400_digit_temperature_is_a_422_naming_the_field(client, personas, bearer):
    """The last 500 of the review: params.temperature as a 400-digit integer."""
    payload = {
        "team": "acme",
        "name": "t",
        "base_url": "http://127.0.0.1:9/v1",
        "model": "m",
        "params": {"temperature": 10**400},
    }
    response = client.post(
        "/api/v1/teachers", json.dumps(payload), content_type="application/json", **bearer
    )
    assert response.status_code == 422
    assert "params.temperature" in response.json()["detail"]
