"""Contamination: held-out prompts that also occur in training, on a prompt set's page and
API, in the split it chooses (without duplicates by default), in an evaluation of jobs
that trained on its prompts; and uploads that drop duplicates."""

from __future__ import annotations

import json

import pytest

from tests.webapp.test_promptsets import api_upload, upload
from webapp.promptsets.models import PromptSet, Split

WORDS = ["pear", "violin", "granite", "harbour", "meadow", "lantern", "cobalt", "saffron",
         "thistle", "quartz", "walnut", "glacier", "falcon", "orchid", "tundra"]  # fmt: skip
UNIQUE = [
    f"Task {i}: reverse the list {' '.join(str(i * 7 + k) for k in range(6))} and explain why."
    for i in range(10)
]
EXACT = [  # each also uploaded as a case-and-punctuation variant
    f"Sort the words {WORDS[i]}, {WORDS[i + 5]} and {WORDS[i + 10]} alphabetically."
    for i in range(5)
]
NEAR = [  # each also uploaded with one number changed; unlike each other
    f"How many letters are in {WORDS[(3 * i + 1) % 15]} {WORDS[(3 * i + 2) % 15]} "
    f"{WORDS[(7 * i + 4) % 15]} if you count {i * 111 + 505} twice"
    for i in range(5)
]


def records() -> list[str]:
    texts = list(UNIQUE)
    texts += EXACT + [t.upper().replace(",", " ;") + "!!" for t in EXACT]
    texts += NEAR + [t.replace("twice", "twice 9") for t in NEAR]
    return texts


def data(texts: list[str]) -> bytes:
    return "".join(json.dumps({"prompt": t}) + "\n" for t in texts).encode()


@pytest.fixture
def token(personas):
    from webapp.teams.actions import create_api_token

    return create_api_token(personas.member, "t")[1]


@pytest.fixture
def uploaded(importer, client, token, personas) -> PromptSet:
    response = api_upload(client, token, "dups.jsonl", data(records()))
    assert response.status_code == 201, response.content
    return PromptSet.objects.get(pk=response.json()["id"])


def split(client, token, prompt_set, **body):
    return client.post(
        f"/api/v1/prompt-sets/{prompt_set.pk}/split", body, content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )  # fmt: skip


def expected(prompt_set: PromptSet) -> dict[str, int]:
    """Counted from how the file was built: a held-out prompt whose twin is trained on."""
    split_of = {p.text.removeprefix("user: "): p.split for p in prompt_set.prompts.all()}
    texts = records()
    exact = near = 0
    for i, kind in ((len(UNIQUE), "exact"), (len(UNIQUE) + 2 * len(EXACT), "near")):
        for j in range(5):
            a, b = split_of[texts[i + j]], split_of[texts[i + 5 + j]]
            crossed = (a == Split.TEST) + (b == Split.TEST) == 1
            exact += crossed and kind == "exact"
            near += crossed and kind == "near"
    return {"exact": exact, "near": near, "checked": prompt_set.num_test}


def test_a_split_without_duplicates_by_default_leaves_nothing_to_find(client, token, uploaded):
    body = client.get(
        f"/api/v1/prompt-sets/{uploaded.pk}", HTTP_AUTHORIZATION=f"Bearer {token}"
    ).json()
    assert body["num_prompts"] == 30 and body["num_dropped"] == 0
    assert body["contamination"] == {"exact": 0, "near": 0, "checked": 0}
    # Only the 10 prompts with no twin may be held out; 11 is refused, nothing changed.
    refused = split(client, token, uploaded, num_test=11, seed=0)
    assert refused.status_code == 422
    assert "Only 10 of the 30 prompts have no exact or near duplicate" in refused.json()["detail"]
    assert not uploaded.prompts.filter(split=Split.TEST).exists()
    done = split(client, token, uploaded, num_test=10, seed=3)
    assert done.status_code == 200, done.content
    body = done.json()
    assert body["split"] == {"train": 20, "test": 10}
    assert body["contamination"] == {"exact": 0, "near": 0, "checked": 10}
    held_out = set(uploaded.prompts.filter(split=Split.TEST).values_list("text", flat=True))
    assert held_out == {f"user: {t}" for t in UNIQUE}


def test_without_dedupe_the_counts_are_what_crossed_the_split(client, token, uploaded):
    for seed in range(4):
        done = split(client, token, uploaded, num_test=20, seed=seed, dedupe=False)
        assert done.status_code == 200, done.content
        uploaded.refresh_from_db()
        assert done.json()["contamination"] == expected(uploaded)
    assert done.json()["contamination"]["exact"] + done.json()["contamination"]["near"] > 0


def test_another_teams_prompt_set_cannot_be_split(client, uploaded, personas):
    from webapp.teams.actions import create_api_token

    theirs = create_api_token(personas.outsider, "t")[1]
    assert split(client, theirs, uploaded, num_test=2).status_code == 404
    assert not uploaded.prompts.filter(split=Split.TEST).exists()


def test_an_upload_may_drop_duplicates_and_says_how_many(importer, client, token, personas):
    response = client.post(
        "/api/v1/prompt-sets",
        {"team": "acme", "name": "dropped", "drop_duplicates": "true",
         "file": _file("dups.jsonl", data(records()))},
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    # The case-and-punctuation variants go; the near duplicates are different prompts.
    assert (body["num_prompts"], body["num_dropped"]) == (25, 5)
    kept = PromptSet.objects.get(pk=body["id"])
    assert [p.line for p in kept.prompts.order_by("index")][-5:] == list(range(26, 31))


def test_the_page_shows_the_check_and_offers_the_split_without_duplicates(
    importer, client, personas
):
    client.force_login(personas.member)
    upload(client, "dups.jsonl", data(records()))
    prompt_set = PromptSet.objects.exclude(pk=personas.prompt_set.pk).get()
    url = f"/teams/acme/prompt-sets/{prompt_set.pk}/"
    page = client.get(url).content.decode()
    assert "10 of the 30 prompts have no exact or near duplicate" in page
    client.post(url + "split/", {"num_test": 20, "seed": 0})  # the box left unticked
    body = client.get(url).content.decode()
    prompt_set.refresh_from_db()
    found = expected(prompt_set)
    assert f"of 20 held-out prompts,\n    <strong>{found['exact']}</strong>" in body
    assert "choose the split again" in body
    client.post(url + "split/", {"num_test": 10, "seed": 0, "dedupe": "on"})
    body = client.get(url).content.decode()
    assert "<strong>0</strong> also occur in training" in body and "choose the split" not in body


def test_an_evaluation_warns_when_a_job_it_compares_trained_on_its_prompts(client, personas):
    from tests.webapp.test_evaluation import make_evaluation
    from webapp.teams.actions import create_api_token

    evaluation = make_evaluation(personas.team, n_prompts=5)
    evaluation.prompt_set.prompts.filter(index__lt=2).update(split=Split.TRAIN)
    token = create_api_token(personas.member, "t")[1]
    body = client.get(
        f"/api/v1/evaluations/{evaluation.pk}", HTTP_AUTHORIZATION=f"Bearer {token}"
    ).json()
    rows = {
        row["name"]: (row["exact"], row["near"], row["checked"]) for row in body["contamination"]
    }
    assert set(rows.values()) == {(2, 0, 5)} and len(rows) == 2  # GAD and SeqKD, once each
    client.force_login(personas.member)
    page = client.get(f"/teams/acme/evaluations/{evaluation.pk}/").content.decode()
    assert "trained on 2 of them" in page and "measure recall, not generalisation" in page
    evaluation.prompt_set.prompts.update(split=Split.TEST)
    body = client.get(
        f"/api/v1/evaluations/{evaluation.pk}", HTTP_AUTHORIZATION=f"Bearer {token}"
    ).json()
    assert body["contamination"] == []
    page = client.get(f"/teams/acme/evaluations/{evaluation.pk}/").content.decode()
    assert (
        "Contamination check: 0 of the 5 prompts occur in the training prompts of the 2 job(s)"
        in page
    )


def test_the_evaluation_form_marks_a_prompt_set_whose_held_out_prompts_leaked(
    importer, client, token, personas, uploaded
):
    split(client, token, uploaded, num_test=20, seed=0, dedupe=False)
    uploaded.refresh_from_db()
    leaked = sum(expected(uploaded)[k] for k in ("exact", "near"))
    client.force_login(personas.member)
    form = client.get("/teams/acme/evaluations/new/").content.decode()
    assert (
        f"(warning: {leaked} of its 20 held-out prompts also occur in its training split)" in form
    )


def _file(name: str, content: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content)
