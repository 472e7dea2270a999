"""A checkpoint's files one by one (GET /api/v1/checkpoints/{id}/files/{path}): listed with
size and ETag, served with HTTP Range as RFC 9110 §14 asks (206, 416, If-Range,
If-None-Match), never a file outside the checkpoint, members only, and handed to the
reverse proxy when GAD_DOWNLOAD_OFFLOAD says so. A real resuming client (curl -C -)
finishes an interrupted download through the production server in
tests/security/test_downloads.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from webapp.jobs.models import Download
from webapp.teams.actions import create_api_token


@pytest.fixture
def auth(personas):
    return {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(personas.member, 't')[1]}"}


@pytest.fixture
def weights(personas) -> bytes:
    blob = os.urandom(3 * 1024 * 1024 + 17)  # past one 1 MiB chunk, not a multiple of it
    (Path(personas.checkpoint.path) / "model.safetensors").write_bytes(blob)
    return blob


def url(checkpoint, path: str = "") -> str:
    return f"/api/v1/checkpoints/{checkpoint.pk}/files" + (f"/{path}" if path else "")


def body(response) -> bytes:
    return b"".join(response.streaming_content)


def test_the_listing_gives_each_file_its_size_etag_and_url(client, personas, auth, weights):
    nested = Path(personas.checkpoint.path) / "sub" / "tokenizer.json"
    nested.parent.mkdir()
    nested.write_text("{}")
    listed = client.get(url(personas.checkpoint), **auth).json()
    assert [f["path"] for f in listed] == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    model = listed[1]
    assert model["size"] == len(weights)
    assert model["url"].endswith(f"{url(personas.checkpoint, 'model.safetensors')}")
    got = client.get(url(personas.checkpoint, "sub/tokenizer.json"), **auth)
    assert body(got) == b"{}" and got["ETag"] == listed[2]["etag"]


def test_a_range_is_answered_with_206_and_resumes_where_it_stopped(client, personas, auth, weights):
    path = url(personas.checkpoint, "model.safetensors")
    whole = client.get(path, **auth)
    assert whole.status_code == 200 and whole["Accept-Ranges"] == "bytes"
    assert int(whole["Content-Length"]) == len(weights) and body(whole) == weights
    etag = whole["ETag"]
    cut = 1_500_000
    rest = client.get(path, HTTP_RANGE=f"bytes={cut}-", HTTP_IF_RANGE=etag, **auth)
    assert rest.status_code == 206
    assert rest["Content-Range"] == f"bytes {cut}-{len(weights) - 1}/{len(weights)}"
    assert int(rest["Content-Length"]) == len(weights) - cut
    assert weights[:cut] + body(rest) == weights
    middle = client.get(path, HTTP_RANGE="bytes=10-19", **auth)
    assert middle.status_code == 206 and body(middle) == weights[10:20]
    tail = client.get(path, HTTP_RANGE="bytes=-5", **auth)
    assert body(tail) == weights[-5:]
    # a resumed part is not a new download; the whole file and a part from 0 are
    assert Download.objects.filter(path="model.safetensors").count() == 1


def test_ranges_it_cannot_or_should_not_honour(client, personas, auth, weights):
    path = url(personas.checkpoint, "model.safetensors")
    past = client.get(path, HTTP_RANGE=f"bytes={len(weights)}-", **auth)
    assert past.status_code == 416 and past["Content-Range"] == f"bytes */{len(weights)}"
    # the file changed since the client's first part: If-Range fails, the whole file again
    stale = client.get(path, HTTP_RANGE="bytes=100-", HTTP_IF_RANGE='"0-0"', **auth)
    assert stale.status_code == 200 and body(stale) == weights
    several = client.get(path, HTTP_RANGE="bytes=0-1,5-6", **auth)
    assert several.status_code == 200 and body(several) == weights  # allowed by the RFC
    garbage = client.get(path, HTTP_RANGE="bytes=oops", **auth)
    assert garbage.status_code == 200 and body(garbage) == weights
    etag = client.get(path, **auth)["ETag"]
    cached = client.get(path, HTTP_IF_NONE_MATCH=etag, **auth)
    assert cached.status_code == 304 and cached["ETag"] == etag


@pytest.mark.parametrize(
    "bad", ["../../secret.txt", "..%2F..%2Fsecret.txt", "%2Fetc%2Fpasswd", "escape", "missing"]
)
def test_nothing_outside_the_checkpoint_is_served(client, personas, auth, bad, tmp_path):
    (tmp_path / "secret.txt").write_text("team data of nobody")
    os.symlink(tmp_path / "secret.txt", Path(personas.checkpoint.path) / "escape")
    response = client.get(url(personas.checkpoint, bad), **auth)
    assert response.status_code == 404
    assert b"team data" not in response.content
    listed = [f["path"] for f in client.get(url(personas.checkpoint), **auth).json()]
    assert "escape" not in listed


def test_only_members_reach_the_files(client, personas, weights):
    outsider = create_api_token(personas.outsider, "t")[1]
    for path in ("", "model.safetensors"):
        got = client.get(url(personas.checkpoint, path), HTTP_AUTHORIZATION=f"Bearer {outsider}")
        assert got.status_code == 404
    assert client.get(url(personas.checkpoint, "config.json")).status_code == 401
    assert not Download.objects.exists()


def test_a_checkpoint_whose_files_are_gone_says_so(client, personas, auth):
    import shutil

    shutil.rmtree(personas.checkpoint.path)
    got = client.get(url(personas.checkpoint), **auth)
    assert got.status_code == 404 and "not on the data volume" in got.json()["detail"]
    bad_part = client.get(url(personas.checkpoint) + "?part=weights", **auth)
    assert bad_part.status_code == 422


def test_the_proxy_sends_the_bytes_when_offload_is_set(
    client, personas, auth, weights, settings, tmp_path
):
    settings.GAD_DATA_DIR = str(tmp_path)  # the checkpoint lies on the data volume
    settings.GAD_DOWNLOAD_OFFLOAD = "x-accel-redirect"
    settings.GAD_DOWNLOAD_OFFLOAD_PREFIX = "/protected-data/"
    path = url(personas.checkpoint, "model.safetensors")
    got = client.get(path, HTTP_RANGE="bytes=5-", **auth)
    rel = Path(personas.checkpoint.path).relative_to(tmp_path) / "model.safetensors"
    assert got.status_code == 200 and got.content == b""  # nginx answers the range itself
    assert got["X-Accel-Redirect"] == f"/protected-data/{rel.as_posix()}"
    assert got["ETag"] and got["Accept-Ranges"] == "bytes"
    settings.GAD_DOWNLOAD_OFFLOAD = "x-sendfile"
    got = client.get(path, **auth)
    assert got["X-Sendfile"] == str(Path(personas.checkpoint.path).resolve() / "model.safetensors")


def test_an_unknown_offload_setting_is_refused_at_start(monkeypatch):
    import subprocess
    import sys

    env = {**os.environ, "GAD_DOWNLOAD_OFFLOAD": "sendfile", "DJANGO_DEBUG": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ.setdefault("
         "'DJANGO_SETTINGS_MODULE', 'webapp.settings'); django.setup()"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0
    assert "GAD_DOWNLOAD_OFFLOAD='sendfile'" in done.stderr and "x-accel-redirect" in done.stderr
