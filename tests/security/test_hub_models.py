"""Hugging Face Hub models are bounded and charged (docs/security.md, "Hub models"): any
org/name used to download in full into the shared model cache, charged to no one, and
the memory planner skipped the models it did not know. Tested against a loopback Hub
(tests/fakehub.py) speaking the part of its API that huggingface_hub calls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fakehub import GB
from webapp.jobs.models import Job
from webapp.teams.actions import create_api_token, storage_used

# A 70B-like model: its config.json is all the planner needs to see it cannot fit.
HUGE = {
    "model_type": "llama",
    "hidden_size": 8192,
    "intermediate_size": 28672,
    "num_hidden_layers": 80,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
}


@pytest.fixture
def launch(client, personas):
    token = create_api_token(personas.member, "t")[1]
    quota = personas.team.quota
    quota.max_concurrent_jobs = 10
    quota.save()

    def post(student: str, gpus: int = 0, **config):
        body = {
            "team": "acme",
            "name": "hub",
            "method": "seqkd",
            "prompt_set": personas.prompt_set.pk,
            "student": student,
            "gpus": gpus,
            "config": config,
        }
        return client.post(
            "/api/v1/jobs",
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    return post


def test_a_hub_model_past_the_teams_cap_is_refused_with_its_size(launch, personas, fake_hub):
    fake_hub.models["big/model"] = {"model.safetensors": 140 * GB, "config.json": 600}
    response = launch("big/model")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "big/model is 140.0 GB on the Hub" in detail and "at most 80 GB" in detail
    assert fake_hub.asked == ["big/model"]
    personas.team.quota.hub_model_gb = 200
    personas.team.quota.save()
    assert launch("big/model").status_code == 201


def test_a_hub_model_is_charged_to_the_teams_storage_once(launch, personas, fake_hub):
    fake_hub.models["org/mid"] = {"model.safetensors": 30 * GB, "tokenizer.json": 10**6}
    before = storage_used(personas.team)
    first = launch("org/mid")
    assert first.status_code == 201
    assert Job.objects.get(pk=first.json()["id"]).student_bytes == 30 * GB + 10**6
    assert storage_used(personas.team) == before + 30 * GB + 10**6
    assert launch("org/mid").status_code == 201  # the same model: charged once
    assert storage_used(personas.team) == before + 30 * GB + 10**6
    # A team whose storage cannot take another one is refused, naming its storage.
    fake_hub.models["org/other"] = {"model.safetensors": 60 * GB}
    personas.team.quota.storage_gb = 50
    personas.team.quota.save()
    refused = launch("org/other")
    assert refused.status_code == 422 and "storage is full" in refused.json()["detail"]


def test_a_gpu_job_whose_hub_students_shape_cannot_be_read_is_refused_with_the_reason(
    launch, fake_hub
):
    """A GPU job is planned before it may start (trainer.plan): a repository without a
    config.json leaves nothing to plan, and the GPU would find out by running out of
    memory. The same student on the CPU needs no plan."""
    fake_hub.models["org/bare"] = {"model.safetensors": 3 * GB, "tokenizer.json": 10**6}
    refused = launch("org/bare", gpus=1)
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert "student: a GPU job needs the memory planner to read its shape" in detail
    assert "the Hub repository 'org/bare' has no config.json (the site looked it up)" in detail
    fake_hub.models["org/odd"] = {
        "model.safetensors": 3 * GB,
        "config.json": b'{"model_type": "x"}',
    }
    refused = launch("org/odd", gpus=1)
    assert refused.status_code == 422
    assert "config.json is not a causal LM config the planner reads" in refused.json()["detail"]
    assert launch("org/bare").status_code == 201  # gpus: 0


@pytest.mark.parametrize(
    "state,message",
    [("missing", "is not a model on the Hugging Face Hub"), ("gated", "is gated")],
)
def test_a_missing_or_gated_hub_model_is_refused_with_the_reason(launch, fake_hub, state, message):
    fake_hub.models["org/x"] = state
    if state == "gated":  # its files listed, its downloads refused
        fake_hub.models["org/x"] = "gated"
    response = launch("org/x")
    assert response.status_code == 422 and message in response.json()["detail"]


def test_an_offline_site_refuses_hub_models_and_says_what_to_use(launch, settings, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    response = launch("org/s")
    assert response.status_code == 422
    assert "does not reach the Hugging Face Hub" in response.json()["detail"]
    settings.GAD_HUB_MODELS = False  # the site's switch: registered models only
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    response = launch("org/s")
    assert response.status_code == 422
    assert "does not start from Hugging Face Hub models" in response.json()["detail"]
    assert "model:NAME" in response.json()["detail"]


def test_the_planner_knows_a_hub_model_from_its_config(launch, fake_hub, personas):
    """The planner used to skip a hub model it had no table entry for: a 70B student
    launched on one 80 GB GPU was accepted. Its config.json now gives the shape."""
    config = json.dumps(HUGE).encode()
    fake_hub.models["acme/seventy"] = {"model.safetensors": 60 * GB, "config.json": config}
    personas.team.quota.hub_model_gb = 200
    personas.team.quota.save()
    response = launch("acme/seventy", gpus=1, batch_size=8)
    assert response.status_code == 422
    assert "does not fit in GPU memory" in response.json()["detail"]


def test_an_evaluation_of_a_hub_model_past_the_cap_is_refused(login, personas, fake_hub):
    """An evaluation's other models download into the cache like a student."""
    from django.urls import reverse

    from webapp.evaluation.models import Evaluation

    personas.prompt_set.prompts.update(split="test")
    fake_hub.models["big/judge-me"] = {"model.safetensors": 120 * GB}
    client = login(personas.member)
    url = reverse("evaluation-create", kwargs={"slug": personas.team.slug})
    form = {
        "name": "hub",
        "prompt_set": personas.prompt_set.pk,
        "prompt_choice": "test",
        "jobs": [personas.job.pk],
        "model_paths": "big/judge-me",
        "max_new_tokens": 8,
    }
    response = client.post(url, form)
    assert response.status_code == 422
    assert "big/judge-me is 120.0 GB on the Hub" in response.content.decode()
    assert not Evaluation.objects.filter(name="hub").exists()
    personas.team.quota.hub_model_gb = 150
    personas.team.quota.save()
    assert client.post(url, form).status_code == 302


def test_the_worker_downloads_a_hub_student_before_the_sandboxed_trainer_starts(
    fake_hub, tmp_path, monkeypatch
):
    """A single-node trainer has no network: the worker brings the model's files (only
    those the launch's size covered) into the model cache first."""
    from huggingface_hub import constants

    from worker import hub_cache

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    fake_hub.models["acme/small"] = {
        "config.json": b'{"model_type": "qwen2"}',
        "model.safetensors": b"\0" * 64,
        "tokenizer.json": b"{}",
        "weights.bin": b"\0" * 64,  # another format: never fetched
    }
    where = Path(hub_cache.fetch("acme/small"))
    assert sorted(p.name for p in where.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    assert str(where).startswith(str(tmp_path / "hub"))
    # A node that does not reach the Hub says what to do.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub_cache.NotFetched, match="not in this node's model cache"):
        hub_cache.fetch("acme/other")
    fake_hub.models["acme/gone"] = "missing"
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(hub_cache.NotFetched, match="missing, private or gated"):
        hub_cache.fetch("acme/gone")
