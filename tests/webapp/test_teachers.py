"""Teacher endpoints: pages, REST API, the encrypted write-only key, SSRF, Test connection."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from unittest import mock

import pytest
from django.db import connection
from django.urls import reverse

import worker.teachers
from tests.conftest import free_port
from webapp.jobs.models import Job, Status
from webapp.lib import crypto
from webapp.teachers import actions, ssrf
from webapp.teachers.models import ConnectionStatus, TeacherEndpoint
from webapp.teachers.params import ParamError, clean_params
from webapp.teams.actions import create_api_token

KEY = "sk-test-SECRET-9f8e7d"
HINT = "••••8e7d"
LOOPBACK = ["127.0.0.1", "localhost", "::1"]
PUBLIC_IP = "93.184.216.34"  # only ever "resolved" by the fake DNS below, never contacted


def make_endpoint(team, **fields) -> TeacherEndpoint:
    """A saved endpoint on loopback (factory for this module and the persona matrix)."""
    key = fields.pop("api_key", None)
    values = {"name": "local", "base_url": "http://127.0.0.1:9/v1", "model": "tiny"} | fields
    endpoint = TeacherEndpoint(team=team, **values)
    if key:
        endpoint.api_key_encrypted = crypto.encrypt(key)
        endpoint.api_key_last4 = key[-4:]
        endpoint.api_key_origin = ssrf.origin(endpoint.base_url)  # entered for this URL
    endpoint.save()
    return endpoint


@pytest.fixture(autouse=True)
def _loopback_teachers_allowed(settings):
    settings.GAD_ALLOWED_TEACHER_HOSTS = list(LOOPBACK)


@pytest.fixture
def dns(monkeypatch):
    """Fake DNS: ``dns[name] = [addresses]`` (or None: no such host).

    IP literals resolve for real (no traffic); any other name not in the table fails
    the test, so that no test ever sends a DNS query.
    """
    table: dict[str, list[str] | None] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in table:
            if table[host] is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return [
                (
                    socket.AF_INET6 if ":" in ip else socket.AF_INET,
                    socket.SOCK_STREAM,
                    6,
                    "",
                    (ip, port),
                )
                for ip in table[host]
            ]
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in str(host) else socket.AF_INET, str(host))
        except OSError:
            raise AssertionError(f"test tried to resolve {host!r} for real") from None
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.fixture
def token(personas):
    _, plain = create_api_token(personas.member, "script")
    return {"HTTP_AUTHORIZATION": f"Bearer {plain}"}


def url(name: str, team, endpoint=None) -> str:
    kwargs = {"slug": team.slug} | ({"pk": endpoint.pk} if endpoint else {})
    return reverse(name, kwargs=kwargs)


def form_data(**overrides) -> dict:
    data = {
        "name": "GPT on OpenAI",
        "base_url": "http://127.0.0.1:8000/v1",
        "model": "gpt-4o-mini",
        "api_key": KEY,
        "temperature": "0.7",
        "top_p": "",
        "max_tokens": "256",
        "seed": "",
    }
    return data | overrides


def post_json(client, path: str, body: dict, headers: dict):
    return client.post(path, data=json.dumps(body), content_type="application/json", **headers)


# ---------------------------------------------------------------------------- pages


def test_empty_list_invites_to_add_the_first_teacher(login, personas):
    body = login(personas.member).get(url("teachers", personas.team)).content.decode()
    assert 'data-testid="empty"' in body
    assert url("teacher-create", personas.team) in body


def test_member_creates_edits_and_deletes_a_teacher_through_the_pages(login, personas):
    client = login(personas.member)
    team = personas.team
    response = client.post(url("teacher-create", team), form_data())
    endpoint = TeacherEndpoint.objects.get(team=team)
    assert response.status_code == 302
    assert response["Location"] == url("teacher", team, endpoint)
    assert endpoint.created_by == personas.member
    assert endpoint.params == {"temperature": 0.7, "max_tokens": 256}
    assert crypto.decrypt(endpoint.api_key_encrypted) == KEY

    listing = client.get(url("teachers", team)).content.decode()
    assert "GPT on OpenAI" in listing and HINT in listing

    detail = client.get(url("teacher", team, endpoint)).content.decode()
    assert HINT in detail and "temperature=0.7" in detail and "not tested" in detail

    response = client.post(
        url("teacher", team, endpoint), form_data(name="Renamed", api_key="", max_tokens="")
    )
    assert response.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.name == "Renamed"
    assert endpoint.params == {"temperature": 0.7}
    assert crypto.decrypt(endpoint.api_key_encrypted) == KEY, "a blank key field keeps the key"

    response = client.post(url("teacher-delete", team, endpoint))
    assert response["Location"] == url("teachers", team)
    assert not TeacherEndpoint.objects.filter(pk=endpoint.pk).exists()


def test_editing_replaces_or_removes_the_key(login, personas):
    client = login(personas.owner)
    endpoint = make_endpoint(personas.team, api_key=KEY)
    page = url("teacher", personas.team, endpoint)
    base = {"name": "local", "base_url": endpoint.base_url, "model": "tiny"}

    client.post(page, base | {"api_key": "sk-other-key-000011112222"})
    endpoint.refresh_from_db()
    assert crypto.decrypt(endpoint.api_key_encrypted) == "sk-other-key-000011112222"
    assert endpoint.api_key_hint == "••••2222"

    response = client.post(page, base | {"api_key": "sk-new-key-12345678", "remove_key": "on"})
    assert response.status_code == 422
    assert "api_key: either enter a new key or tick" in response.content.decode()

    client.post(page, base | {"remove_key": "on"})
    endpoint.refresh_from_db()
    assert endpoint.api_key_encrypted == "" and endpoint.api_key_hint is None
    assert "none" in client.get(page).content.decode()


def test_duplicate_name_in_a_team_is_refused_on_the_page(login, personas):
    make_endpoint(personas.team, name="GPT on OpenAI")
    response = login(personas.member).post(url("teacher-create", personas.team), form_data())
    assert response.status_code == 422
    assert "already has a teacher named" in response.content.decode()
    # Another team may use the same name.
    actions.create_endpoint(
        personas.other_team, None, name="GPT on OpenAI", base_url="http://localhost:1/v1", model="m"
    )


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("temperature", "hot", "params.temperature: &#x27;hot&#x27; is not valid"),
        ("max_tokens", "-1", "params.max_tokens: &#x27;-1&#x27; is not valid"),
        ("top_p", "0", "params.top_p"),
    ],
)
def test_bad_sampling_params_get_a_message_naming_the_field(login, personas, field, value, message):
    response = login(personas.member).post(
        url("teacher-create", personas.team), form_data(**{field: value})
    )
    assert response.status_code == 422
    body = response.content.decode()
    assert message in body
    assert not TeacherEndpoint.objects.exists()


def test_annotator_gets_403_and_outsider_404_on_a_teacher_page(login, personas):
    endpoint = make_endpoint(personas.team)
    assert login(personas.annotator).get(url("teacher", personas.team, endpoint)).status_code == 403
    assert login(personas.outsider).get(url("teacher", personas.team, endpoint)).status_code == 404


def test_a_teacher_of_another_team_is_404_under_my_team(login, personas):
    theirs = make_endpoint(personas.other_team)
    response = login(personas.owner).get(url("teacher", personas.team, theirs))
    assert response.status_code == 404


def test_delete_is_refused_while_an_active_job_uses_the_teacher(login, personas):
    endpoint = make_endpoint(personas.team)
    Job.objects.create(
        team=personas.team,
        name="distil",
        method="gad",
        student="tiny",
        teacher=endpoint,
        status=Status.TRAINING,
    )
    client = login(personas.member)
    response = client.post(url("teacher-delete", personas.team, endpoint), follow=True)
    assert TeacherEndpoint.objects.filter(pk=endpoint.pk).exists()
    body = response.content.decode()
    assert "is used by 1 active job(s) (&#x27;distil&#x27;); cancel them or wait" in body


def test_test_connection_marks_pending_and_the_page_polls_the_status_url(
    login, personas, django_capture_on_commit_callbacks
):
    endpoint = make_endpoint(personas.team)
    client = login(personas.member)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(url("teacher-test", personas.team, endpoint))
    assert response["Location"] == url("teacher", personas.team, endpoint)
    assert len(callbacks) == 1, "the task is enqueued once the row is committed"

    body = client.get(url("teacher", personas.team, endpoint)).content.decode()
    assert 'data-status="pending"' in body
    assert url("teacher-status", personas.team, endpoint) in body
    status = client.get(url("teacher-status", personas.team, endpoint)).json()
    assert status["status"] == "pending" and status["latency_ms"] is None

    # Clicking again while the test runs does not enqueue a second one...
    with django_capture_on_commit_callbacks() as callbacks:
        client.post(url("teacher-test", personas.team, endpoint))
    assert callbacks == []
    # ...unless the first one was lost long ago.
    endpoint.refresh_from_db()
    TeacherEndpoint.objects.filter(pk=endpoint.pk).update(
        test_requested_at=endpoint.test_requested_at - timedelta(minutes=5)
    )
    with django_capture_on_commit_callbacks() as callbacks:
        assert actions.request_test(endpoint) is True
    assert len(callbacks) == 1


def test_changing_the_url_forgets_the_last_test_and_discards_a_running_one(personas):
    endpoint = make_endpoint(personas.team)
    actions.request_test(endpoint)
    actions.update_endpoint(
        endpoint, name="local", base_url="http://127.0.0.1:10/v1", model="tiny", params={}
    )
    assert actions.record_test_ok(endpoint.pk, 12) is False
    endpoint.refresh_from_db()
    assert endpoint.test_status == "" and endpoint.test_latency_ms is None


# ---------------------------------------------------------------------------- the key


def test_key_never_appears_in_pages_api_responses_or_logs(client, login, personas, token, caplog):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    page = login(personas.member)
    response = page.post(url("teacher-create", personas.team), form_data(), follow=True)
    seen.append(response.content.decode())
    endpoint = TeacherEndpoint.objects.get()
    # A refused form comes back without the key in its (password) field.
    seen.append(
        page.post(url("teacher-create", personas.team), form_data(max_tokens="x")).content.decode()
    )
    for name in ("teachers", "teacher-create"):
        seen.append(page.get(url(name, personas.team)).content.decode())
    for name in ("teacher", "teacher-status"):
        seen.append(page.get(url(name, personas.team, endpoint)).content.decode())
    seen.append(page.post(url("teacher", personas.team, endpoint), form_data()).content.decode())

    body = {"team": "acme", "name": "api", "base_url": "http://localhost:1/v1", "model": "m"}
    api = post_json(client, "/api/v1/teachers", body | {"api_key": KEY}, token)
    assert api.status_code == 201
    seen.append(api.content.decode())
    seen.append(
        post_json(client, "/api/v1/teachers", body | {"api_key": KEY}, token).content.decode()
    )
    for path in ("/api/v1/teachers", f"/api/v1/teachers/{endpoint.pk}"):
        seen.append(client.get(path, **token).content.decode())
    seen.append(client.post(f"/api/v1/teachers/{endpoint.pk}/test", **token).content.decode())

    assert all(KEY not in text for text in seen)
    assert any(HINT in text for text in seen)
    assert KEY not in caplog.text
    assert KEY not in repr(endpoint) and KEY not in str(endpoint)
    assert endpoint.api_key_encrypted not in repr(endpoint)


def test_key_is_encrypted_at_rest_and_decrypts_back(personas):
    endpoint = actions.create_endpoint(
        personas.team, None, name="t", base_url="http://localhost/v1", model="m", api_key=KEY
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT api_key_encrypted, api_key_last4 FROM teachers_teacherendpoint WHERE id = %s",
            [endpoint.pk],
        )
        stored, last4 = cursor.fetchone()
    assert KEY not in stored and "SECRET" not in stored
    assert crypto.decrypt(stored) == KEY
    assert last4 == "8e7d"


def test_a_short_key_shows_no_characters(personas):
    endpoint = actions.create_endpoint(
        personas.team, None, name="t", base_url="http://localhost/v1", model="m", api_key="abc123"
    )
    assert endpoint.api_key_hint == "••••"


@pytest.mark.parametrize("debug", [True, False])
def test_error_pages_hide_the_key_posted_and_held_in_locals(
    client, login, personas, token, settings, monkeypatch, debug
):
    """DEBUG's technical 500 page lists POST data and every frame's locals."""
    settings.DEBUG = debug

    def broken_cipher():
        raise RuntimeError("cipher unavailable")

    monkeypatch.setattr(crypto, "_fernet", broken_cipher)
    page = login(personas.member)
    page.raise_request_exception = False
    body = {"team": "acme", "name": "api", "base_url": "http://localhost:1/v1", "model": "m"}
    client.raise_request_exception = False
    responses = [
        page.post(url("teacher-create", personas.team), form_data()),
        page.post(url("teacher", personas.team, make_endpoint(personas.team)), form_data()),
        post_json(client, "/api/v1/teachers", body | {"api_key": KEY}, token),
    ]
    for response in responses:
        assert response.status_code == 500
        text = response.content.decode()
        assert ("cipher unavailable" in text) is debug, "the technical page when DEBUG"
        assert KEY not in text


def test_wrong_field_key_says_what_to_do(personas, settings):
    endpoint = make_endpoint(personas.team, api_key=KEY)
    settings.GAD_FIELD_KEY = "B" * 43 + "="
    with pytest.raises(crypto.KeyUnreadable, match="GAD_FIELD_KEY"):
        crypto.decrypt(endpoint.api_key_encrypted)
    actions.request_test(endpoint)
    worker.teachers.run_teacher_test(endpoint.pk)
    endpoint.refresh_from_db()
    assert endpoint.test_error_kind == "run"
    assert "enter the key again" in endpoint.test_error


# ---------------------------------------------------------------------------- SSRF


@pytest.mark.parametrize(
    "base_url,message",
    [
        (
            "http://10.0.0.5/v1",
            "base_url: host 10.0.0.5 resolves to a private address; ask an administrator "
            "to add it to GAD_ALLOWED_TEACHER_HOSTS",
        ),
        ("http://169.254.169.254/latest", "host 169.254.169.254 resolves to a private address"),
        ("http://[::ffff:192.168.1.1]/v1", "resolves to a private address"),
        ("http://0.0.0.0:8000/v1", "resolves to a private address"),
        ("ftp://example.org/v1", "base_url: 'ftp' is not allowed; use an http:// or https://"),
        ("api.openai.com/v1", "base_url: no scheme is not allowed"),
        ("https://user:pw@api.example.org/v1", "credentials in the URL are not allowed"),
        ("http:///v1", "base_url: no host"),
        ("http://api.example.org:99999/v1", "base_url: the port"),
    ],
)
def test_unsafe_base_urls_are_refused_naming_the_field(dns, base_url, message):
    with pytest.raises(ssrf.UnsafeURL) as refused:
        ssrf.check_base_url(base_url)
    assert message in str(refused.value)


def test_a_name_is_refused_when_any_of_its_addresses_is_private(dns):
    dns["teacher.example.org"] = [PUBLIC_IP, "10.1.2.3"]
    with pytest.raises(
        ssrf.UnsafeURL, match=r"teacher.example.org \(10.1.2.3\) resolves to a private"
    ):
        ssrf.check_base_url("https://teacher.example.org/v1")
    dns["teacher.example.org"] = [PUBLIC_IP, "2606:2800:220:1:248:1893:25c8:1946"]
    assert (
        ssrf.check_base_url(" https://teacher.example.org/v1 ") == "https://teacher.example.org/v1"
    )


def test_a_name_that_does_not_resolve_is_refused(dns):
    dns["nowhere.example.org"] = None
    with pytest.raises(ssrf.UnsafeURL, match="base_url: host nowhere.example.org does not resolve"):
        ssrf.check_base_url("https://nowhere.example.org/v1")


def test_listed_hosts_are_allowed_without_resolving(dns, settings):
    settings.GAD_ALLOWED_TEACHER_HOSTS = ["vllm.internal", "10.0.0.5"]
    assert ssrf.check_base_url("http://VLLM.internal:8000/v1")  # no DNS: the fake would fail
    assert ssrf.check_base_url("http://10.0.0.5/v1")


def test_loopback_is_refused_unless_listed(dns, settings):
    settings.GAD_ALLOWED_TEACHER_HOSTS = []
    for base_url in ("http://127.0.0.1:8000/v1", "http://[::1]:8000/v1"):
        with pytest.raises(ssrf.UnsafeURL, match="GAD_ALLOWED_TEACHER_HOSTS"):
            ssrf.check_base_url(base_url)
    settings.GAD_ALLOWED_TEACHER_HOSTS = ["::1"]
    assert ssrf.check_base_url("http://[::1]:8000/v1")


def test_page_and_api_refuse_a_private_url(login, client, personas, token, dns):
    dns["internal.example.org"] = ["10.0.0.5"]
    response = login(personas.member).post(
        url("teacher-create", personas.team), form_data(base_url="http://internal.example.org/v1")
    )
    assert response.status_code == 422
    assert "base_url: host internal.example.org (10.0.0.5) resolves to a private" in (
        response.content.decode()
    )
    body = {"team": "acme", "name": "x", "base_url": "http://10.0.0.5/v1", "model": "m"}
    response = post_json(client, "/api/v1/teachers", body, token)
    assert response.status_code == 422
    assert response.json()["detail"].startswith("base_url: host 10.0.0.5 resolves to a private")
    assert not TeacherEndpoint.objects.exists()


def test_worker_checks_again_before_connecting(personas, dns, settings):
    """DNS can change between save and test: the worker refuses what resolves privately now."""
    dns["teacher.example.org"] = [PUBLIC_IP]
    endpoint = actions.create_endpoint(
        personas.team, None, name="t", base_url="http://teacher.example.org/v1", model="m"
    )
    dns["teacher.example.org"] = ["192.168.0.7"]
    actions.request_test(endpoint)
    assert worker.teachers.run_teacher_test(endpoint.pk) == "error"
    endpoint.refresh_from_db()
    assert endpoint.test_status == ConnectionStatus.ERROR
    assert endpoint.test_error_kind == "run"
    assert "base_url: host teacher.example.org (192.168.0.7) resolves to a private" in (
        endpoint.test_error
    )

    # And a loopback endpoint saved while loopback was allowed, after it no longer is.
    local = make_endpoint(personas.team, name="local")
    settings.GAD_ALLOWED_TEACHER_HOSTS = []
    actions.request_test(local)
    worker.teachers.run_teacher_test(local.pk)
    local.refresh_from_db()
    assert "GAD_ALLOWED_TEACHER_HOSTS" in local.test_error


# ---------------------------------------------------------------------------- params


def test_clean_params_accepts_numbers_and_numeric_strings_and_drops_blanks():
    raw = {"temperature": "0.5", "top_p": 1, "max_tokens": 8.0, "seed": None}
    assert clean_params(raw) == {"temperature": 0.5, "top_p": 1.0, "max_tokens": 8}
    assert clean_params(None) == {}


@pytest.mark.parametrize(
    "raw,field",
    [
        ({"temperature": "hot"}, "params.temperature"),
        ({"temperature": 2.5}, "params.temperature"),
        ({"temperature": True}, "params.temperature"),
        ({"temperature": float("nan")}, "params.temperature"),
        ({"max_tokens": -1}, "params.max_tokens"),
        ({"max_tokens": 8.5}, "params.max_tokens"),
        ({"seed": "x"}, "params.seed"),
        ({"top_k": 5}, "params.top_k"),
        ([1, 2], "params"),
    ],
)
def test_clean_params_names_the_bad_field(raw, field):
    with pytest.raises(ParamError) as bad:
        clean_params(raw)
    assert str(bad.value).startswith(f"{field}: ")


def test_unknown_param_lists_the_valid_ones():
    with pytest.raises(ParamError, match="valid ones are temperature, top_p, max_tokens, seed"):
        clean_params({"top_k": 5})


# ---------------------------------------------------------------------------- REST API


def test_api_creates_lists_and_gets_a_teacher(client, personas, token):
    body = {
        "team": "acme",
        "name": "openai",
        "base_url": "http://localhost:8000/v1",
        "model": "gpt-4o-mini",
        "api_key": KEY,
        "params": {"temperature": 0.3, "max_tokens": 64},
    }
    response = post_json(client, "/api/v1/teachers", body, token)
    assert response.status_code == 201
    created = response.json()
    assert "api_key" not in created
    assert created["api_key_hint"] == HINT
    assert created["team"] == "acme" and created["params"] == {"temperature": 0.3, "max_tokens": 64}
    assert created["last_test"]["status"] == ""

    make_endpoint(personas.other_team, name="theirs")
    listed = client.get("/api/v1/teachers", **token).json()
    assert [t["name"] for t in listed] == ["openai"]
    assert client.get("/api/v1/teachers?team=acme", **token).json() == listed
    got = client.get(f"/api/v1/teachers/{created['id']}", **token).json()
    assert got["id"] == created["id"] and got["api_key_hint"] == HINT

    keyless = post_json(
        client, "/api/v1/teachers", body | {"name": "nokey", "api_key": None}, token
    )
    assert keyless.json()["api_key_hint"] is None


def test_api_test_is_accepted_with_202_and_pending(client, personas, token):
    endpoint = make_endpoint(personas.team)
    response = client.post(f"/api/v1/teachers/{endpoint.pk}/test", **token)
    assert response.status_code == 202
    assert response.json()["last_test"]["status"] == "pending"


def test_api_hides_other_teams_teachers_and_refuses_annotators(client, personas, token):
    theirs = make_endpoint(personas.other_team)
    assert client.get(f"/api/v1/teachers/{theirs.pk}", **token).status_code == 404
    assert client.post(f"/api/v1/teachers/{theirs.pk}/test", **token).status_code == 404
    assert client.get("/api/v1/teachers?team=other", **token).status_code == 404
    body = {"team": "other", "name": "x", "base_url": "http://localhost/v1", "model": "m"}
    assert post_json(client, "/api/v1/teachers", body, token).json()["error"] == "not_found"

    ours = make_endpoint(personas.team)
    _, plain = create_api_token(personas.annotator, "a")
    annotator = {"HTTP_AUTHORIZATION": f"Bearer {plain}"}
    assert client.get(f"/api/v1/teachers/{ours.pk}", **annotator).status_code == 403
    assert client.get("/api/v1/teachers", **annotator).json() == []


@pytest.mark.parametrize(
    "change,status,detail",
    [
        ({"params": {"temperature": "hot"}}, 422, "params.temperature: 'hot' is not valid"),
        ({"params": {"max_tokens": -1}}, 422, "params.max_tokens: -1 is not valid"),
        ({"base_url": "file:///etc/passwd"}, 422, "base_url: 'file' is not allowed"),
        ({"name": "  "}, 422, "name: is required"),
        ({"name": "taken"}, 409, "name: the team already has a teacher named 'taken'"),
        ({"api_key": "two words"}, 422, "api_key: contains spaces"),
    ],
)
def test_api_validation_errors_name_the_field(client, personas, token, change, status, detail):
    make_endpoint(personas.team, name="taken")
    body = {"team": "acme", "name": "new", "base_url": "http://localhost/v1", "model": "m"}
    response = post_json(client, "/api/v1/teachers", body | change, token)
    assert response.status_code == status
    assert response.json()["detail"].startswith(detail)
    assert response.json()["error"] == ("conflict" if status == 409 else "validation_error")


def test_api_schema_lists_the_teacher_endpoints(client, db):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert {
        "/api/v1/teachers",
        "/api/v1/teachers/{teacher_id}",
        "/api/v1/teachers/{teacher_id}/test",
    } <= set(paths)


# ---------------------------------------------------------------------------- the task


class FakeTeacher:
    """A loopback HTTP server answering chat completions with a fixed status.

    Error answers echo the Authorization header, as a careless server might.
    """

    def __init__(self, status: int = 200):
        self.status = status
        self.auth: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                auth = self.headers.get("Authorization", "")
                fake.auth.append(auth)
                if fake.status == 200:
                    payload = {
                        "id": "x",
                        "object": "chat.completion",
                        "created": 0,
                        "model": "m",
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": "OK"},
                            }
                        ],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
                    }
                else:
                    payload = {"error": {"message": f"bad request with {auth}"}}
                data = json.dumps(payload).encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeTeacher:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_task_sends_the_decrypted_key_and_records_the_latency(personas, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeTeacher(200) as fake:
        endpoint = make_endpoint(personas.team, base_url=fake.url, api_key=KEY)
        actions.request_test(endpoint)
        assert worker.teachers.run_teacher_test(endpoint.pk) == "ok"
    assert fake.auth == [f"Bearer {KEY}"]
    endpoint.refresh_from_db()
    assert endpoint.test_status == "ok" and endpoint.test_latency_ms >= 1
    assert endpoint.tested_at is not None
    assert KEY not in caplog.text


@pytest.mark.parametrize("status,kind", [(401, "run"), (400, "prompt"), (503, "transient")])
def test_task_records_the_typed_error_without_the_key(personas, caplog, status, kind):
    caplog.set_level(logging.DEBUG)
    with FakeTeacher(status) as fake:
        endpoint = make_endpoint(personas.team, base_url=fake.url, api_key=KEY)
        actions.request_test(endpoint)
        worker.teachers.run_teacher_test(endpoint.pk)
    endpoint.refresh_from_db()
    assert endpoint.test_status == "error" and endpoint.test_error_kind == kind
    assert f"HTTP {status}" in endpoint.test_error
    # The server echoed the key in its body: the body is never shown (status and reason).
    assert KEY not in endpoint.test_error and "bad request with" not in endpoint.test_error
    assert KEY not in caplog.text


def test_an_unexpected_failure_is_written_not_left_pending(personas, monkeypatch):
    broken = mock.create_autospec(worker.teachers.discover, side_effect=RuntimeError(KEY))
    monkeypatch.setattr(worker.teachers, "discover", broken)
    endpoint = make_endpoint(personas.team, api_key=KEY)
    actions.request_test(endpoint)
    with pytest.raises(RuntimeError):
        worker.teachers.run_teacher_test(endpoint.pk)
    endpoint.refresh_from_db()
    assert endpoint.test_status == "error" and endpoint.test_error_kind == "transient"
    assert "RuntimeError" in endpoint.test_error and KEY not in endpoint.test_error


def test_task_ignores_an_endpoint_that_is_not_pending(personas):
    endpoint = make_endpoint(personas.team)
    assert worker.teachers.run_teacher_test(endpoint.pk) == "skipped"
    assert worker.teachers.run_teacher_test(10**9) == "skipped"


# ---------------------------------------------------------------------------- end to end


def _wait_for_result(client, status_url: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        result = client.get(status_url).json()
        if result["status"] != "pending":
            return result
        assert time.monotonic() < deadline, "the test stayed pending: is the worker running?"
        time.sleep(0.2)


@pytest.mark.slow
def test_test_connection_through_the_worker_ends_ok_with_a_latency(
    celery_worker, teacher_server, login, personas, caplog
):
    caplog.set_level(logging.DEBUG)
    base_url, model = teacher_server
    endpoint = actions.create_endpoint(
        personas.team, personas.member, name="tiny", base_url=base_url, model=model, api_key=KEY
    )
    client = login(personas.member)
    client.post(url("teacher-test", personas.team, endpoint))
    result = _wait_for_result(client, url("teacher-status", personas.team, endpoint))
    assert result["status"] == "ok", result
    assert result["latency_ms"] >= 1 and result["tested_at"]
    page = client.get(url("teacher", personas.team, endpoint)).content.decode()
    assert f"answered in {result['latency_ms']:,} ms" in page  # intcomma: 1,076
    assert KEY not in page and KEY not in caplog.text


@pytest.mark.slow
def test_test_connection_to_a_closed_port_ends_with_a_typed_error(celery_worker, login, personas):
    endpoint = actions.create_endpoint(
        personas.team,
        None,
        name="closed",
        base_url=f"http://127.0.0.1:{free_port()}/v1",
        model="tiny",
    )
    client = login(personas.owner)
    client.post(url("teacher-test", personas.team, endpoint))
    result = _wait_for_result(client, url("teacher-status", personas.team, endpoint))
    assert result["status"] == "error"
    assert result["error_kind"] in ("transient", "run")
    assert "cannot connect" in result["error"]
    page = client.get(url("teacher", personas.team, endpoint)).content.decode()
    assert "cannot connect" in page


def test_rotating_the_field_key_reencrypts_every_stored_key(personas, settings):
    """GAD_FIELD_KEY rotation: the new key plus the old one in GAD_FIELD_KEY_PREVIOUS,
    then `manage.py rotate_field_key`; afterwards the old key is not needed."""
    from cryptography.fernet import Fernet
    from django.core.management import CommandError, call_command

    old, new = settings.GAD_FIELD_KEY, Fernet.generate_key().decode()
    a = make_endpoint(personas.team, name="a", api_key="sk-first-1234")
    b = make_endpoint(personas.team, name="b", api_key="sk-second-5678")
    settings.GAD_FIELD_KEY, settings.GAD_FIELD_KEY_PREVIOUS = new, [old]
    assert crypto.decrypt(a.api_key_encrypted) == "sk-first-1234"  # still readable
    out = io.StringIO()
    call_command("rotate_field_key", stdout=out)
    assert "re-encrypted 2 API key(s)" in out.getvalue()
    settings.GAD_FIELD_KEY_PREVIOUS = []  # the old key removed
    for endpoint, key in ((a, "sk-first-1234"), (b, "sk-second-5678")):
        endpoint.refresh_from_db()
        assert crypto.decrypt(endpoint.api_key_encrypted) == key
    # A key written with a key nobody kept: named, not silently dropped.
    settings.GAD_FIELD_KEY = Fernet.generate_key().decode()
    with pytest.raises(CommandError, match="'a'.*'b'|'b'.*'a'"):
        call_command("rotate_field_key", stdout=io.StringIO())
