"""Every REST endpoint against every role: anonymous gets 401, a role below the endpoint's gets 403,
the rest get the endpoint's own answer. Plus the ways a credential stops working."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from console.accounts.models import ApiKey
from console.audit.models import record
from console.jobs.models import Job
from console.registry.models import Alias
from tests.api_rows import error_of, make_model, make_version
from tests.conftest import key_client, make_user

pytestmark = pytest.mark.django_db

RANK = {"anonymous": 0, "user": 1, "maintainer": 2, "admin": 3}
CLIENTS = {"anonymous": "anon_api", "user": "user_api", "maintainer": "maintainer_api", "admin": "admin_api"}


@pytest.fixture
def world(alice, bob, charlie) -> dict[str, Any]:
    """A model with two ready versions and an alias moved once, a spare model, a queued job, an audit event,
    and a key of erin (another user): only erin and admins may see or revoke it."""
    tiny = make_model("tiny", owner=bob)
    v1, v2 = make_version(tiny), make_version(tiny)
    Alias.move(tiny, "production", v1, bob)
    Alias.move(tiny, "production", v2, bob)
    make_model("spare", task="embeddings")
    job = Job.objects.create(kind="test-sleep", created_by=bob)
    event = record(bob, "model.create", tiny, model_name="tiny")
    key, _ = ApiKey.issue(make_user("erin", "user"), "erin-laptop")
    return {"job": job.pk, "event": event.pk, "key": key.pk}


# (method, path, body, the least role allowed, the status an allowed role gets)
ENDPOINTS = [
    ("get", "/api/models/", None, "user", 200),
    ("post", "/api/models/", {"name": "fresh", "task": "embeddings"}, "maintainer", 201),
    ("get", "/api/models/tiny/", None, "user", 200),
    ("patch", "/api/models/tiny/", {"description": "new words"}, "maintainer", 200),
    ("delete", "/api/models/spare/", None, "admin", 204),
    ("get", "/api/models/tiny/versions/", None, "user", 200),
    ("post", "/api/models/tiny/versions/", {}, "maintainer", 400),  # allowed, then refused: no hub_id
    ("get", "/api/models/tiny/versions/1/", None, "user", 200),
    ("patch", "/api/models/tiny/versions/1/", {"config": {"notes": "hi"}}, "maintainer", 200),
    ("get", "/api/models/tiny/aliases/", None, "user", 200),
    ("get", "/api/models/tiny/aliases/production", None, "user", 200),
    ("put", "/api/models/tiny/aliases/staging", {"version": 1}, "maintainer", 200),
    ("delete", "/api/models/tiny/aliases/production", None, "maintainer", 204),
    ("get", "/api/models/tiny/aliases/production/history", None, "user", 200),
    ("post", "/api/models/tiny/aliases/production/rollback", {"comment": "bad"}, "maintainer", 200),
    ("get", "/api/jobs/", None, "user", 200),
    ("get", "/api/jobs/{job}/", None, "user", 200),
    ("post", "/api/jobs/", {"kind": "test-sleep"}, "maintainer", 400),  # allowed, then refused: not creatable
    ("post", "/api/jobs/{job}/cancel", None, "maintainer", 202),
    ("get", "/api/audit/", None, "maintainer", 200),
    ("get", "/api/audit/{event}/", None, "maintainer", 200),
    ("get", "/api/keys/", None, "user", 200),
    ("post", "/api/keys/", {"name": "mine"}, "user", 201),
    ("get", "/api/keys/{key}/", None, "admin", 200),
    ("post", "/api/keys/{key}/revoke", None, "admin", 200),
    ("delete", "/api/keys/{key}/", None, "admin", 204),
]


@pytest.mark.parametrize("role", list(RANK))
@pytest.mark.parametrize(("method", "path", "body", "least", "allowed_status"), ENDPOINTS,
                         ids=[f"{m.upper()} {p}" for m, p, *_ in ENDPOINTS])
def test_each_endpoint_answers_each_role_as_its_rules_say(request, world, role, method, path, body, least,
                                                          allowed_status):
    client: APIClient = request.getfixturevalue(CLIENTS[role])
    response = getattr(client, method)(path.format(**world), body, format="json")
    if role == "anonymous":
        error_of(response, 401)
        assert response["WWW-Authenticate"] == "Bearer"
    elif RANK[role] >= RANK[least]:
        assert response.status_code == allowed_status, response.content
    elif path.startswith("/api/keys/{key}"):
        # Someone else's key is not found, rather than forbidden, so its id leaks nothing.
        assert error_of(response, 404)["code"] == "not_found"
    else:
        assert error_of(response, 403)["code"] == "permission_denied"


def test_a_user_may_read_and_revoke_their_own_key(charlie, user_api):
    key, _ = ApiKey.issue(charlie, "charlie-laptop")
    assert user_api.get(f"/api/keys/{key.pk}/").status_code == 200
    assert user_api.post(f"/api/keys/{key.pk}/revoke").json()["status"] == "revoked"


def test_a_refused_write_changes_nothing(world, user_api):
    user_api.put("/api/models/tiny/aliases/production", {"version": 1}, format="json")
    user_api.post("/api/models/", {"name": "sneaky", "task": "embeddings"}, format="json")
    assert Alias.objects.get(name="production").version.number == 2
    assert not user_api.get("/api/models/?search=sneaky").json()["results"]


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_a_key_of_an_inactive_user_is_refused(bob):
    _, raw = ApiKey.issue(bob, "ci")
    bob.is_active = False
    bob.save()
    assert "Invalid, expired or revoked" in error_of(bearer(raw).get("/api/models/"), 401)["message"]


def test_a_revoked_key_is_refused(bob):
    key, raw = ApiKey.issue(bob, "ci")
    assert bearer(raw).get("/api/models/").status_code == 200
    key.revoke()
    error_of(bearer(raw).get("/api/models/"), 401)


def test_an_expired_key_is_refused(bob):
    key, raw = ApiKey.issue(bob, "ci", expires_at=timezone.now() + timedelta(hours=1))
    assert bearer(raw).get("/api/models/").status_code == 200
    ApiKey.objects.filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    error_of(bearer(raw).get("/api/models/"), 401)


def test_an_unknown_key_and_a_malformed_header_are_refused(bob):
    error_of(bearer("tau_00000000_made-up").get("/api/models/"), 401)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer two words")
    assert "Bearer <api key>" in error_of(client.get("/api/models/"), 401)["message"]


def test_a_browser_session_authenticates_with_the_users_role(charlie):
    client = APIClient()
    assert client.login(username="charlie", password="charlie-Pass-123!")
    assert client.get("/api/models/").status_code == 200
    error_of(client.post("/api/models/", {"name": "x", "task": "embeddings"}, format="json"), 403)


def test_a_superuser_counts_as_an_admin_whatever_its_role_field(db):
    root = make_user("root", "user", is_superuser=True)
    assert key_client(root).get("/api/audit/").status_code == 200
