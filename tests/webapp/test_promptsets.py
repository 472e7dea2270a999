"""Prompt sets: uploads in every shape, every bad upload refused saving nothing."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.webapp.conftest import follow_upload
from tests.webapp.factories import make_job
from webapp.promptsets.models import Prompt, PromptSet

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]


def jsonl(*records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def upload(client, name: str, data: bytes, url: str = "/teams/acme/prompt-sets/"):
    """Upload as a person does, and follow the page until the worker's import ends."""
    response = client.post(url, {"name": "", "file": SimpleUploadedFile(name, data)})
    return follow_upload(client, response)


def api_upload(client, token, name, data, team="acme"):
    return client.post(
        "/api/v1/prompt-sets",
        {"team": team, "name": "via api", "file": SimpleUploadedFile(name, data)},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )


@pytest.fixture
def member(client, personas):
    client.force_login(personas.member)
    return client


@pytest.fixture
def token(personas):
    from webapp.teams.actions import create_api_token

    return create_api_token(personas.member, "t")[1]


def nothing_saved(settings, before: int) -> bool:
    uploads = settings.GAD_DATA_DIR / "uploads"
    leftovers = list(uploads.iterdir()) if uploads.exists() else []
    return PromptSet.objects.count() == before and not leftovers


def test_jsonl_upload_in_every_record_shape(importer, member, personas, settings):
    data = jsonl(
        {"messages": MESSAGES, "id": "a"},
        {"prompt": "Plain string prompt", "teacher_response": "An answer."},
        {"content": [{"role": "user", "content": "Reference-code shape"}]},
        {"prompt": "Plain string prompt"},  # a duplicate of the second
    )
    response = upload(member, "chat.jsonl", data)
    prompt_set = PromptSet.objects.exclude(pk=personas.prompt_set.pk).get()
    assert response.status_code == 302
    assert response["Location"] == f"/teams/acme/prompt-sets/{prompt_set.pk}/"
    assert (prompt_set.num_prompts, prompt_set.num_with_teacher, prompt_set.num_duplicates) == (
        4,
        1,
        1,
    )
    first = prompt_set.prompts.get(index=0)
    assert first.messages == MESSAGES and first.external_id == "a" and first.line == 1
    assert prompt_set.prompts.get(index=1).teacher_response == "An answer."
    assert prompt_set.stats["prompt_chars"]["count"] == 4
    assert sum(prompt_set.stats["prompt_chars"]["counts"]) == 4
    assert nothing_saved(settings, PromptSet.objects.count())  # the staged file is gone


def test_csv_and_parquet_uploads(importer, member, personas):
    csv_data = b'prompt,teacher_response,id\n"Hello, there",Hi,1\nSecond,,2\n'
    assert upload(member, "set.csv", csv_data).status_code == 302
    table = pa.table({"messages": [MESSAGES, MESSAGES[1:]], "teacher_response": ["x", None]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    assert upload(member, "set.parquet", buffer.getvalue()).status_code == 302
    csv_set, parquet_set = PromptSet.objects.exclude(pk=personas.prompt_set.pk).order_by(
        "created_at"
    )
    assert (csv_set.num_prompts, csv_set.num_with_teacher) == (2, 1)
    assert csv_set.prompts.get(index=0).messages == [{"role": "user", "content": "Hello, there"}]
    assert (parquet_set.num_prompts, parquet_set.num_with_teacher) == (2, 1)
    assert parquet_set.prompts.get(index=0).messages == MESSAGES


@pytest.mark.parametrize(
    "name,data,message",
    [
        ("bad.jsonl", b'{"prompt": "ok"}\n{oops\n', "line 2"),
        ("bad.jsonl", jsonl({"prompt": "ok"}, {"id": 3}), "line 2: no prompt"),
        ("bad.jsonl", jsonl({"prompt": 42}), "line 1: &#x27;prompt&#x27; must be a string"),
        ("bad.jsonl", jsonl({"messages": [{"role": "user"}]}), "line 1: &#x27;messages[0]&#x27;"),
        ("bad.jsonl", b'{"prompt": "ok"}\n{"prompt": "\xff\xfe"}\n', "line 2: invalid UTF-8"),
        ("empty.jsonl", b"", "empty file"),
        ("set.txt", b"hello", "unsupported file type .txt"),
    ],
)
def test_bad_upload_names_the_problem_and_saves_nothing(
    importer, member, settings, name, data, message
):
    before = PromptSet.objects.count()
    response = upload(member, name, data)
    assert response.status_code == 422
    assert message in response.content.decode()
    assert nothing_saved(settings, before)


def test_only_the_first_20_problems_are_listed(importer, member):
    data = b"".join(b"{broken\n" for _ in range(25))
    body = upload(member, "bad.jsonl", data).content.decode()
    assert "line 20:" in body and "line 21:" not in body
    assert "and 5 more problems" in body


def test_upload_over_the_limit_is_413_before_parsing(member, settings, token, client):
    settings.GAD_MAX_UPLOAD_MB = 1
    before = PromptSet.objects.count()
    big = jsonl(*({"prompt": "x" * 1000} for _ in range(1200)))
    response = upload(member, "big.jsonl", big)
    assert response.status_code == 413
    assert "GAD_MAX_UPLOAD_MB" in response.content.decode()
    api = api_upload(client, token, "big.jsonl", big)
    assert api.status_code == 413 and api.json()["error"] == "too_large"
    assert nothing_saved(settings, before)


def test_api_upload_and_read(importer, client, personas, token):
    response = api_upload(client, token, "p.jsonl", jsonl({"prompt": "a", "teacher_response": "b"}))
    assert response.status_code == 201
    body = response.json()
    assert (body["name"], body["num_prompts"], body["num_with_teacher"]) == ("via api", 1, 1)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert client.get(f"/api/v1/prompt-sets/{body['id']}", **auth).json()["id"] == body["id"]
    listed = client.get("/api/v1/prompt-sets?team=acme", **auth).json()
    assert {p["id"] for p in listed} == {body["id"], personas.prompt_set.pk}


def test_api_bad_upload_is_422_with_line_numbers(importer, client, personas, token):
    response = api_upload(client, token, "p.jsonl", b"{nope\n")
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_file"
    assert "line 1" in response.json()["detail"]


def test_api_outsider_and_annotator(client, personas):
    from webapp.teams.actions import create_api_token

    outsider = create_api_token(personas.outsider, "t")[1]
    annotator = create_api_token(personas.annotator, "t")[1]
    url = f"/api/v1/prompt-sets/{personas.prompt_set.pk}"
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {outsider}").status_code == 404
    assert client.get(url, HTTP_AUTHORIZATION=f"Bearer {annotator}").status_code == 403
    assert api_upload(client, outsider, "p.jsonl", jsonl({"prompt": "a"})).status_code == 404
    assert api_upload(client, annotator, "p.jsonl", jsonl({"prompt": "a"})).status_code == 403


def test_preview_search_and_pagination(importer, member, personas):
    upload(
        member, "many.jsonl", jsonl(*({"prompt": f"question {i} about cats"} for i in range(45)))
    )
    prompt_set = PromptSet.objects.exclude(pk=personas.prompt_set.pk).get()
    url = f"/teams/acme/prompt-sets/{prompt_set.pk}/"
    body = member.get(url).content.decode()
    assert "Page 1 of 3" in body and "question 0 about" in body and "question 20 " not in body
    body = member.get(url, {"q": "question 44"}).content.decode()
    assert "question 44 about" in body and "(1 prompts)" in body
    assert "No prompt matches" in member.get(url, {"q": "dogs"}).content.decode()


def test_held_out_split(member, personas):
    prompt_set = personas.prompt_set
    refused = member.post(
        f"/teams/acme/prompt-sets/{prompt_set.pk}/split/", {"num_test": 1}, follow=True
    )
    assert "used by running job" in refused.content.decode()
    personas.job.status = "failed"
    personas.job.save()
    response = member.post(
        f"/teams/acme/prompt-sets/{prompt_set.pk}/split/", {"num_test": 2, "seed": 1}
    )
    assert response.status_code == 302
    prompt_set.refresh_from_db()
    assert prompt_set.num_test == 2 and prompt_set.prompts.filter(split="test").count() == 2
    member.post(f"/teams/acme/prompt-sets/{prompt_set.pk}/split/", {"num_test": 3, "seed": 1})
    prompt_set.refresh_from_db()
    assert prompt_set.num_test == 2  # refused: nothing would be left to train on


def test_download_round_trips_with_answers_and_split(member, personas):
    response = member.get(f"/teams/acme/prompt-sets/{personas.prompt_set.pk}/download/")
    rows = [json.loads(line) for line in b"".join(response.streaming_content).decode().splitlines()]
    assert [r["teacher_response"] for r in rows] == ["a0", "a1", "a2"]
    assert rows[0]["messages"] == [{"role": "user", "content": "q0"}]
    assert {r["split"] for r in rows} == {"train"}


def test_delete_refused_while_a_running_job_uses_the_set(member, personas):
    url = f"/teams/acme/prompt-sets/{personas.prompt_set.pk}/delete/"
    response = member.post(url, follow=True)
    assert "used by running job" in response.content.decode()
    assert PromptSet.objects.filter(pk=personas.prompt_set.pk).exists()
    personas.job.status = "succeeded"
    personas.job.save()
    member.post(url)
    assert not PromptSet.objects.filter(pk=personas.prompt_set.pk).exists()
    assert not Prompt.objects.filter(prompt_set_id=personas.prompt_set.pk).exists()


def test_object_of_another_team_is_404_under_your_own_slug(client, personas):
    from tests.webapp.factories import make_prompt_set

    theirs = make_prompt_set(personas.other_team)
    make_job(personas.other_team, theirs)
    client.force_login(personas.member)
    assert client.get(f"/teams/acme/prompt-sets/{theirs.pk}/").status_code == 404
    assert client.get(f"/teams/acme/prompt-sets/{theirs.pk}/download/").status_code == 404
