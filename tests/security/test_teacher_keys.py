"""A stored teacher key never leaves for a host its owner did not type it for
(docs/security.md, "Teacher keys")."""

from __future__ import annotations

from django.urls import reverse

from tests.security.capture import CaptureServer
from webapp.teachers import actions
from webapp.teachers.models import TeacherEndpoint
from worker.teachers import run_teacher_test

KEY = "sk-the-teams-secret-key-1234"


def _test_connection(endpoint: TeacherEndpoint) -> str:
    """ "Test connection" as the page does it, run by the worker's task in this process."""
    actions.request_test(endpoint)
    return run_teacher_test(endpoint.pk)


def test_an_edit_to_another_host_drops_the_key_and_the_test_sends_none(login, personas):
    with CaptureServer() as first, CaptureServer() as second:
        endpoint = actions.create_endpoint(
            personas.team, personas.member, name="T", base_url=first.url, model="m", api_key=KEY
        )
        assert _test_connection(endpoint) == "ok"
        assert first.authorizations() == [f"Bearer {KEY}"]
        # A member edits the URL (another port: another origin) and leaves the key blank.
        client = login(personas.member)
        url = reverse("teacher", kwargs={"slug": personas.team.slug, "pk": endpoint.pk})
        response = client.post(url, {"name": "T", "base_url": second.url, "model": "m"})
        assert response.status_code == 302
        endpoint.refresh_from_db()
        assert not endpoint.has_key
        assert "The API key was removed" in client.get(url).content.decode()
        assert _test_connection(endpoint) == "ok"
    assert second.authorizations() == [None]


def test_a_url_changed_behind_the_actions_back_gets_no_key(personas):
    with CaptureServer() as first, CaptureServer() as second:
        endpoint = actions.create_endpoint(
            personas.team, None, name="T", base_url=first.url, model="m", api_key=KEY
        )
        # Changed in the database (or by a future code path that skips the actions).
        TeacherEndpoint.objects.filter(pk=endpoint.pk).update(base_url=second.url)
        endpoint.refresh_from_db()
        assert _test_connection(endpoint) == "ok"
    assert first.requests == [] and second.authorizations() == [None]


def test_an_edit_with_a_new_key_or_on_the_same_host_keeps_working(personas):
    with CaptureServer() as first, CaptureServer() as second:
        endpoint = actions.create_endpoint(
            personas.team, None, name="T", base_url=first.url, model="m", api_key=KEY
        )
        # Same origin, another path: the key stays.
        endpoint = actions.update_endpoint(
            endpoint, name="T", base_url=first.url + "/", model="m2", params={}
        )
        assert endpoint.has_key
        # Another origin with the key typed again: bound to the new one.
        endpoint = actions.update_endpoint(
            endpoint, name="T", base_url=second.url, model="m", params={}, api_key=KEY + "x"
        )
        assert _test_connection(endpoint) == "ok"
    assert second.authorizations() == [f"Bearer {KEY}x"]
