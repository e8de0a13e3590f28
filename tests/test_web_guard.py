"""Against the real ASGI app under uvicorn (issue 15): an anonymous request body is refused from its
headers before a byte of it is read (no temp file), authenticated bodies still stream, and a revoked
key, or the key of a deactivated user, stops working on /v1 within a second."""

from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from django.test import Client

from console.accounts.models import ApiKey
from console.registry.models import ModelVersion
from tests.api_rows import make_model
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)
VERSIONS = "/api/models/tiny-llm/versions/"
BIG = 18 * 1024 * 1024


def temp_files(pid: int) -> set[str]:
    """The temp files (named or unlinked) the process holds open."""
    found = set()
    tmp = tempfile.gettempdir()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(tmp) and not target.endswith(".log"):
            found.add(target)
    return found


def send_headers(port: int, path: str, length: int, **headers: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {length}",
             "Content-Type: multipart/form-data; boundary=x", *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    return sock


def read_response(sock: socket.socket) -> tuple[int, dict, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body)


@pytest.fixture
def llm(bob):  # type: ignore[no-untyped-def]
    return make_model("tiny-llm", owner=bob)


@pytest.fixture
def no_new_temp_files(web_server) -> Iterator[None]:
    before = temp_files(web_server.proc.pid)
    yield
    assert temp_files(web_server.proc.pid) <= before


def test_an_anonymous_18_mib_upload_is_refused_before_its_body_is_sent(web_server, llm, no_new_temp_files):
    for auth in ({}, {"Authorization": "Bearer tau_not_a_key"}, {"Authorization": "\xa0"},
                 {"Cookie": "sessionid=nosuchsession"}):
        with send_headers(web_server.port, VERSIONS, BIG, **auth) as sock:
            started = time.monotonic()
            status, headers, body = read_response(sock)  # not a byte of the body sent
            assert status == 401 and time.monotonic() - started < 5, body
            assert headers["connection"] == "close" and headers["www-authenticate"] == "Bearer"
            assert body["error"]["code"] == "not_authenticated" and "Authorization: Bearer" in body["error"]["message"]
    assert not ModelVersion.objects.exists()


def test_v1_answers_an_anonymous_large_body_in_openai_shape_and_login_with_413(web_server, no_new_temp_files):
    with send_headers(web_server.port, "/v1/chat/completions", BIG) as sock:
        status, _, body = read_response(sock)
    assert status == 401 and body["error"]["type"] == "authentication_error"
    assert body["error"]["code"] == "invalid_api_key"
    with send_headers(web_server.port, "/login/", BIG) as sock:
        status, _, body = read_response(sock)
    assert status == 413 and body["error"]["code"] == "request_too_large"


def test_small_anonymous_bodies_reach_django_which_refuses_them_as_before(web_server):
    request = urllib.request.Request(f"{web_server.url}/api/deployments/", data=b'{"name": "x"}',
                                     headers={"Content-Type": "application/json"}, method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 401 and json.loads(info.value.read())["error"]["code"] == "not_authenticated"


def test_an_authenticated_upload_streams_to_disk_while_it_is_sent(web_server, bob, llm):
    key = ApiKey.issue(bob, name="upload")[1]
    with send_headers(web_server.port, VERSIONS, BIG, Authorization=f"Bearer {key}") as sock:
        before = temp_files(web_server.proc.pid)
        sock.sendall(bytes(4 * 1024 * 1024))  # past the 2 MiB Django keeps in memory: spooled to a file
        wait_for(lambda: temp_files(web_server.proc.pid) - before, 10, what="the body spooled to a temp file")
    wait_for(lambda: not temp_files(web_server.proc.pid) - before, 10, what="the temp file closed")


def test_a_live_session_cookie_passes_the_guard(web_server, bob, llm):
    client = Client()
    client.force_login(bob)
    session = client.cookies["sessionid"].value
    body = b"x" * (128 * 1024)
    with send_headers(web_server.port, VERSIONS, len(body), Cookie=f"sessionid={session}") as sock:
        sock.sendall(body)
        status, _, answer = read_response(sock)
    assert status == 403 and "CSRF" in answer["error"]["message"]  # past the guard: Django's CSRF check answers


# --- revocation on /v1 -------------------------------------------------------------------------------------

def v1_models(web_server, key: str) -> int:  # type: ignore[no-untyped-def]
    request = urllib.request.Request(f"{web_server.url}/v1/models", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.parametrize("how", ["revoke", "delete", "deactivate"])
def test_a_revoked_key_stops_working_on_v1_within_a_second(web_server, charlie, how):
    key, raw = ApiKey.issue(charlie, name="soon-gone")
    assert v1_models(web_server, raw) == 200 and v1_models(web_server, raw) == 200  # cached in the web process
    if how == "revoke":
        assert key.revoke()
    elif how == "delete":
        key.delete()
    else:
        charlie.is_active = False
        charlie.save()
    time.sleep(1.0)
    assert v1_models(web_server, raw) == 401
