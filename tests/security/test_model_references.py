"""A member of one team cannot start from, evaluate or download another team's weights
by naming a path on the workers (docs/security.md, "Model references")."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from tests.webapp.factories import make_checkpoint, make_job, make_prompt_set, register_model
from tests.webapp.test_jobs import launch_data
from webapp.catalog.models import RegisteredModel
from webapp.jobs import references
from webapp.jobs.configs import build_configs
from webapp.jobs.models import Job
from webapp.teams.actions import create_api_token

REFUSED = "is not a model you can use"


@pytest.fixture
def theirs(personas, settings):
    """Team "other" trained a job: its final checkpoint lies where every run's does."""
    prompt_set = make_prompt_set(personas.other_team, name="secret")
    job = make_job(personas.other_team, prompt_set, status="succeeded", name="secret")
    final = settings.GAD_DATA_DIR / "jobs" / str(job.pk) / "run" / "final"
    return make_checkpoint(job, final)


def _detail(text: str, value: str) -> str:
    """The refusal with the refused value taken out: it must not depend on the disk."""
    return re.sub(re.escape(repr(value)), "VALUE", text)


def test_launch_form_refuses_another_teams_run_directory_like_a_missing_one(
    login, personas, theirs
):
    client = login(personas.member)
    url = reverse("job-launch", kwargs={"slug": personas.team.slug})
    existing, missing = theirs.path, theirs.path.replace("/run/", "/nothing-here/")
    errors = []
    for path in (existing, missing):
        response = client.post(url, launch_data(personas, student=path, gpus=0))
        assert response.status_code == 422
        shown = re.findall(r'class="field-error">([^<]*)<', response.content.decode())
        assert any(REFUSED in e for e in shown), shown
        errors.append([_detail(e.replace("&#x27;", "'"), path) for e in shown])
    assert not Job.objects.filter(student__in=[existing, missing]).exists()
    assert errors[0] == errors[1]  # word for word, whether the path exists or not


@pytest.mark.parametrize(
    "student",
    ["{path}", "checkpoint:{id}", "../../jobs/{job}/run/final", "/etc", "model:secret", "x"],
)
def test_api_refuses_every_reference_that_is_not_the_teams_own(
    client, personas, theirs, settings, student
):
    RegisteredModel.objects.create(name="secret", path=str(settings.GAD_DATA_DIR))
    RegisteredModel.objects.get(name="secret").teams.add(personas.other_team)
    value = student.format(path=theirs.path, id=theirs.pk, job=theirs.job_id)
    token = create_api_token(personas.member, "t")[1]
    response = client.post(
        "/api/v1/jobs",
        {"team": "acme", **launch_data(personas, student=value, gpus=0)},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 422
    assert response.json()["detail"].startswith("student: ")
    assert REFUSED in response.json()["detail"]


def test_the_teams_own_checkpoint_a_hub_id_and_a_registered_model_are_accepted(
    personas, settings, tmp_path
):
    own = f"checkpoint:{personas.checkpoint.pk}"
    model = tmp_path / "models" / "base"
    model.mkdir(parents=True)
    registered = register_model(settings, model, name="base")
    for ref in (own, "Qwen/Qwen2.5-7B-Instruct", registered):
        spec, errors = build_configs(personas.team, "gad", ref, {})
        assert errors == [] and spec.configs["gad"]["student"] == ref


def test_a_registered_model_for_other_teams_or_outside_the_roots_is_refused(
    personas, settings, tmp_path
):
    model = tmp_path / "models" / "base"
    model.mkdir(parents=True)
    ref = register_model(settings, model, name="base")
    RegisteredModel.objects.get(name="base").teams.add(personas.other_team)
    with pytest.raises(references.InvalidReference):
        references.resolve(ref, personas.team)
    RegisteredModel.objects.get(name="base").teams.clear()
    assert references.resolve(ref, personas.team) == str(model)
    settings.GAD_MODEL_ROOTS = [str(tmp_path / "elsewhere")]  # the root was withdrawn
    with pytest.raises(references.InvalidReference):
        references.resolve(ref, personas.team)


def test_a_link_out_of_a_model_root_is_refused(personas, settings, tmp_path, theirs):
    root = tmp_path / "models"
    root.mkdir()
    (root / "sneaky").symlink_to(theirs.path)
    settings.GAD_MODEL_ROOTS = [str(root)]
    RegisteredModel.objects.create(name="sneaky", path=str(root / "sneaky"))
    with pytest.raises(references.InvalidReference):
        references.resolve("model:sneaky", personas.team)


def test_evaluation_form_refuses_another_teams_checkpoint(login, personas, theirs):
    personas.prompt_set.prompts.update(split="test")
    client = login(personas.member)
    url = reverse("evaluation-create", kwargs={"slug": personas.team.slug})
    for value in (f"checkpoint:{theirs.pk}", theirs.path):
        response = client.post(
            url,
            {
                "name": "steal",
                "prompt_set": personas.prompt_set.pk,
                "prompt_choice": "test",
                "jobs": [personas.job.pk],
                "model_paths": value,
                "max_new_tokens": 8,
            },
        )
        assert response.status_code == 422 and REFUSED in response.content.decode()


def test_the_worker_checks_the_student_again_before_it_loads(personas, theirs, tmp_path):
    """The stored job was edited in the database after the launch: its config's student
    is not what the trainer loads (the launch's resolution is), and the stored student
    and its resolution are checked again."""
    import yaml

    from worker import pipeline

    job = personas.job
    space = pipeline.Workspace(tmp_path / "work")
    space.root.mkdir()
    job.config = {**job.config, "student": theirs.path}
    pipeline.write_config(job, space)
    assert yaml.safe_load(space.config.read_text())["student"] == "org/tiny-student"
    space.config.unlink()
    job.student = job.student_path = theirs.path
    job.save()
    with pytest.raises(pipeline.JobFailed, match=REFUSED):
        pipeline.write_config(job, space)
    assert not space.config.exists()


def test_admin_cannot_register_a_model_outside_the_roots(client, personas, settings, tmp_path):
    from django.contrib.auth import get_user_model

    settings.GAD_MODEL_ROOTS = [str(tmp_path / "models")]
    admin = get_user_model().objects.create_superuser("root", "r@example.com", "pw")
    client.force_login(admin)
    response = client.post(
        "/admin/catalog/registeredmodel/add/", {"name": "x", "path": "/etc", "description": ""}
    )
    assert response.status_code == 200 and "Not under a model root" in response.content.decode()
    assert not RegisteredModel.objects.exists()
