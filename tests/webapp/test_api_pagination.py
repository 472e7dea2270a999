"""Every API list pages without breaking v1 (issue 27, item 5): still a bare array, the
total in X-Total-Count, the next page in a Link header (GitHub's convention) that a client
follows to the end, limit 1-500 (default 100) and offset checked, other filters kept."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.webapp.factories import make_checkpoint, make_job, make_prompt_set
from webapp.evaluation.models import Evaluation
from webapp.judging.models import JudgeRun
from webapp.teachers.models import TeacherEndpoint
from webapp.teams.actions import create_api_token

N = 5


@pytest.fixture
def auth(personas):
    return {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(personas.member, 't')[1]}"}


@pytest.fixture
def many(personas, tmp_path):
    """N + 1 of everything a list route lists (the personas' own included)."""
    team = personas.team
    for i in range(N):
        make_prompt_set(team, name=f"set {i}")
        make_job(team, personas.prompt_set, name=f"job {i}", status="succeeded")
        make_checkpoint(personas.job, tmp_path / f"c{i}" / "student", step=100 + i)
        TeacherEndpoint.objects.create(
            team=team, name=f"teacher {i}", base_url="https://api.example.com/v1", model="m"
        )
        (Path(personas.checkpoint.path) / f"shard-{i}.safetensors").write_bytes(b"\0")
    evaluation = Evaluation.objects.create(team=team, name="eval")
    for i in range(N):
        Evaluation.objects.create(team=team, name=f"eval {i}")
        JudgeRun.objects.create(evaluation=evaluation, judge_name=f"judge {i}")
    return evaluation


def routes(personas, evaluation) -> list[str]:
    return [
        "/api/v1/jobs?team=acme",
        "/api/v1/prompt-sets?team=acme",
        "/api/v1/teachers?team=acme",
        "/api/v1/evaluations?team=acme",
        f"/api/v1/evaluations/{evaluation.pk}/judge-runs",
        f"/api/v1/jobs/{personas.job.pk}/checkpoints",
        f"/api/v1/checkpoints/{personas.checkpoint.pk}/files",
    ]


def walk(client, url: str, auth) -> tuple[list, list[int], int]:
    """Follow the Link headers from ``url``: every item, each page's size, the total."""
    items, sizes, total = [], [], None
    while url:
        got = client.get(url, **auth)
        assert got.status_code == 200, got.content
        assert isinstance(got.json(), list)  # the v1 contract: a bare array
        total = int(got["X-Total-Count"])
        items += got.json()
        sizes.append(len(got.json()))
        link = got.get("Link")
        url = re.fullmatch(r'<http://testserver(.+)>; rel="next"', link)[1] if link else None
    return items, sizes, total


def test_each_list_pages_by_its_link_headers_to_the_end(client, personas, auth, many):
    for url in routes(personas, many):
        whole = client.get(url, **auth).json()
        assert len(whole) > 2, url
        sep = "&" if "?" in url else "?"
        items, sizes, total = walk(client, f"{url}{sep}limit=2", auth)
        assert total == len(whole) and items == whole, url  # same order, nothing twice
        assert sizes[:-1] == [2] * (len(sizes) - 1) and 1 <= sizes[-1] <= 2, url


def test_filters_survive_into_the_next_pages_link(client, personas, auth, many):
    got = client.get("/api/v1/jobs?team=acme&status=succeeded&limit=2", **auth)
    assert got["X-Total-Count"] == str(N)
    assert "status=succeeded" in got["Link"] and "team=acme" in got["Link"]
    assert "offset=2" in got["Link"]
    last = client.get("/api/v1/jobs?team=acme&status=succeeded&limit=2&offset=4", **auth)
    assert len(last.json()) == 1 and "Link" not in last
    past = client.get("/api/v1/jobs?team=acme&limit=2&offset=1000", **auth)
    assert past.json() == [] and past["X-Total-Count"] == str(N + 1)


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "offset=-1", "limit=two"])
def test_bounds_are_refused_with_the_parameter_named(client, personas, auth, query):
    got = client.get(f"/api/v1/jobs?{query}", **auth)
    assert got.status_code == 422
    assert query.split("=")[0] in got.content.decode()


def test_the_default_page_is_100_and_the_schema_states_the_bounds(client, personas, auth):
    team = personas.team
    for i in range(101):
        make_job(team, personas.prompt_set, name=f"bulk {i}")
    got = client.get("/api/v1/jobs", **auth)
    assert len(got.json()) == 100 and got["X-Total-Count"] == "102" and "Link" in got
    schema = client.get("/api/v1/openapi.json").json()
    params = {p["name"]: p["schema"] for p in schema["paths"]["/api/v1/jobs"]["get"]["parameters"]}
    assert params["limit"]["maximum"] == 500 and params["limit"]["minimum"] == 1
    assert params["limit"]["default"] == 100 and params["offset"]["minimum"] == 0
