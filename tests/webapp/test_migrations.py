"""The apps split out of ``evaluation`` (annotation, judging) and ``jobs`` (nodes) keep
every existing row: their migrations move Django's state and rename the tables."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

BEFORE = [
    ("evaluation", "0006_unsent"),
    ("jobs", "0007_unsent"),
    ("annotation", None),
    ("judging", None),
    ("nodes", None),
]


def _migrate(targets):
    """Migrate the test database to ``targets``; the apps (models) of that state."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state([t for t in targets if t[1] is not None]).apps


def _latest():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


@pytest.mark.django_db(transaction=True)
def test_moved_models_keep_their_rows_and_tables_are_renamed():
    try:
        _carried_over()
    finally:
        _migrate(_latest())  # the next tests need the whole schema


def _carried_over():
    old = _migrate(BEFORE)
    User = old.get_model("auth", "User")
    Team = old.get_model("teams", "Team")
    Evaluation = old.get_model("evaluation", "Evaluation")
    System = old.get_model("evaluation", "System")
    Job = old.get_model("jobs", "Job")
    user = User.objects.create(username="carried")
    team = Team.objects.create(name="Carried", slug="carried")
    evaluation = Evaluation.objects.create(team=team, name="old evaluation")
    a = System.objects.create(evaluation=evaluation, name="A", kind="path", path="a")
    b = System.objects.create(evaluation=evaluation, name="B", kind="path", path="b")
    campaign = old.get_model("evaluation", "Campaign").objects.create(
        evaluation=evaluation, title="Which is better?"
    )
    old.get_model("evaluation", "Pair").objects.create(campaign=campaign, system_a=a, system_b=b)
    old.get_model("evaluation", "JudgeRun").objects.create(evaluation=evaluation, judge_name="J")
    job = Job.objects.create(team=team, name="j", method="gad", student="s", config={})
    old.get_model("jobs", "GpuLease").objects.create(
        node="n", gpu_index=0, job=job, expires_at=timezone.now()
    )
    assert user.pk

    new = _migrate(_latest())

    assert new.get_model("annotation", "Campaign").objects.get().title == "Which is better?"
    pair = new.get_model("annotation", "Pair").objects.get()
    assert (pair.system_a_id, pair.system_b_id) == (a.pk, b.pk)
    assert new.get_model("judging", "JudgeRun").objects.get().judge_name == "J"
    assert new.get_model("nodes", "GpuLease").objects.get().job_id == job.pk
    tables = set(connection.introspection.table_names())
    assert {"annotation_campaign", "judging_judgerun", "nodes_gpulease"} <= tables
    assert not {"evaluation_campaign", "evaluation_judgerun", "jobs_gpulease"} & tables


@pytest.mark.django_db(transaction=True)
def test_shared_teacher_answers_become_each_teams_own():
    try:
        _scoped_answers()
    finally:
        _migrate(_latest())


def _scoped_answers():
    from trainer.teacher import Sampling, TeacherSpec
    from webapp.teachers.models import TeacherEndpoint

    old = _migrate([("teachers", "0002_api_key_origin"), ("promptsets", "0002_teacheranswer")])
    Team = old.get_model("teams", "Team")
    Endpoint = old.get_model("teachers", "TeacherEndpoint")
    Answer = old.get_model("promptsets", "TeacherAnswer")
    a, b = (Team.objects.create(name=n, slug=n) for n in ("a", "b"))
    for team in (a, b):  # the same URL, model and sampling in two teams
        Endpoint.objects.create(team=team, name="T", base_url="http://t/v1", model="m")
    # No params: every sampling parameter left to the server.
    unset = Sampling(temperature=None, top_p=None, max_tokens=None, seed=None)
    shared = TeacherSpec("http://t/v1", "m", sampling=unset).fingerprint
    Answer.objects.create(prompt_hash="h", fingerprint=shared, response="paid once", flag="ok")

    _migrate(_latest())

    rows = dict(Answer.objects.values_list("fingerprint", "response"))
    mine = {e.fingerprint for e in TeacherEndpoint.objects.all()}
    assert shared not in rows and len(mine) == 2 and set(rows) == mine
