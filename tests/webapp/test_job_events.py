"""A job's events (GET /api/v1/jobs/{id}/events): recorded where its state changes,
oldest first, polled with ``after``; members only. The full sequence of a real run
(created, started, each stage, checkpoints, succeeded) is checked under real workers
in tests/worker/test_pipeline.py."""

from __future__ import annotations

from tests.webapp.factories import make_checkpoint, make_job
from webapp.jobs import actions
from webapp.teams.actions import create_api_token


def bearer(user) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(user, 't')[1]}"}


def test_events_are_listed_oldest_first_and_polled_with_after(client, personas):
    auth = bearer(personas.member)
    paused = make_job(personas.team, personas.prompt_set, status="paused", guard_paused=True)
    actions.resume_guarded(paused)
    actions.cancel(paused)  # queued again, not running: cancelled at once
    url = f"/api/v1/jobs/{paused.pk}/events"
    events = client.get(url, **auth).json()
    assert [e["kind"] for e in events] == ["job.resumed", "job.cancelled"]
    assert events[0]["id"] < events[1]["id"] and events[0]["level"] == "info"
    assert [e["kind"] for e in client.get(f"{url}?after={events[0]['id']}", **auth).json()] == [
        "job.cancelled"
    ]
    assert client.get(f"{url}?after={events[1]['id']}", **auth).json() == []
    assert len(client.get(f"{url}?limit=1", **auth).json()) == 1
    assert client.get(url, **bearer(personas.outsider)).status_code == 404
    assert client.get(f"{url}?after=-1", **auth).status_code == 422


def test_a_running_jobs_cancel_and_a_deleted_checkpoint_are_events(client, personas, tmp_path):
    running = make_job(personas.team, personas.prompt_set, status="training")
    actions.cancel(running)
    kinds = list(running.events.values_list("kind", flat=True))
    assert kinds == ["job.cancel_requested"]
    old = make_job(personas.team, personas.prompt_set, status="succeeded")
    first = make_checkpoint(old, tmp_path / "x" / "student", step=1)
    make_checkpoint(old, tmp_path / "y" / "student", step=2)
    got = client.delete(f"/api/v1/checkpoints/{first.pk}", **bearer(personas.member))
    assert got.status_code == 204
    deleted = client.get(f"/api/v1/jobs/{old.pk}/events", **bearer(personas.member)).json()
    assert [(e["kind"], e["data"]) for e in deleted] == [("checkpoint.deleted", {"step": 1})]


def test_the_job_page_shows_the_latest_events(client, personas):
    client.force_login(personas.member)
    empty = client.get(f"/teams/acme/jobs/{personas.job.pk}/").content.decode()
    assert "No events yet" in empty
    actions.cancel(personas.job)
    page = client.get(f"/teams/acme/jobs/{personas.job.pk}/").content.decode()
    assert 'data-testid="events"' in page and "job.cancelled" in page
