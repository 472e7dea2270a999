"""Teacher URLs cannot reach into the site's network: every address form that leads to
an internal host is refused, the worker connects to the address it checked (DNS
rebinding), and a hostile endpoint's reply body never reaches a page
(docs/security.md, "SSRF")."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.security.capture import CaptureServer
from tests.webapp.test_teachers import dns  # noqa: F401 - the fake resolver fixture
from trainer.teacher import TeacherSpec, ask, make_client
from webapp.teachers import actions, ssrf
from webapp.teachers.specs import teacher_spec
from worker.teachers import run_teacher_test

PUBLIC = "93.184.216.34"


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a00:5",  # NAT64 of 10.0.0.5
        "64:ff9b:1::a00:5",  # NAT64, local-use prefix
        "2002:a00:5::1",  # 6to4 of 10.0.0.5
        "2001:0:a00:5::1",  # Teredo
        "::ffff:a00:5",  # IPv4-mapped 10.0.0.5
        "::ffff:5db8:d822",  # IPv4-mapped, even of a public address
        "::a00:5",  # IPv4-compatible
        "fec0::1",  # site-local
        "fd00::1",  # unique local
        "fe80::1",  # link-local
        "::1",
        "100.64.0.1",  # carrier-grade NAT
        "169.254.169.254",  # cloud metadata
    ],
)
def test_every_internal_address_form_is_refused(dns, settings, address):  # noqa: F811
    settings.GAD_ALLOWED_TEACHER_HOSTS = []
    dns["teacher.example.org"] = [address]
    with pytest.raises(ssrf.UnsafeURL, match="resolves to a private address"):
        ssrf.check_base_url("https://teacher.example.org/v1")


def test_the_worker_connects_to_the_address_it_checked(dns, settings, personas):  # noqa: F811
    settings.GAD_ALLOWED_TEACHER_HOSTS = []
    dns["teacher.example.org"] = [PUBLIC]
    endpoint = actions.create_endpoint(
        personas.team, None, name="T", base_url="https://teacher.example.org/v1", model="m"
    )
    spec = teacher_spec(endpoint)
    assert spec.connect_to == PUBLIC  # checked now; DNS may say otherwise in a second


def test_a_rebinding_name_still_reaches_only_the_checked_address(dns):  # noqa: F811
    """The name now resolves to an internal address: the connection does not follow it."""
    dns["rebind.example.org"] = ["10.0.0.5"]
    with CaptureServer() as server:
        port = server.server.server_address[1]
        spec = TeacherSpec(
            base_url=f"http://rebind.example.org:{port}/v1", model="m", connect_to="127.0.0.1"
        )

        async def once():
            client = make_client(spec)
            try:
                return await ask(client, spec, [{"role": "user", "content": "hi"}])
            finally:
                await client.close()

        answer = asyncio.run(once())
    assert answer.response == "OK"
    [request] = server.requests
    host = next(v for k, v in request["headers"].items() if k.lower() == "host")
    assert host == f"rebind.example.org:{port}"  # the Host header names the host


def test_a_hostile_endpoints_error_body_is_never_shown(personas):
    body = json.dumps({"error": {"message": "<script>steal()</script> SECRET-BODY"}}).encode()
    with CaptureServer(reply=body, status=401) as server:
        endpoint = actions.create_endpoint(
            personas.team, None, name="T", base_url=server.url, model="m", api_key="sk-" + "k" * 20
        )
        actions.request_test(endpoint)
        run_teacher_test(endpoint.pk)
    endpoint.refresh_from_db()
    assert endpoint.test_status == "error"
    assert "HTTP 401 Unauthorized" in endpoint.test_error
    assert "SECRET-BODY" not in endpoint.test_error and "<script>" not in endpoint.test_error
