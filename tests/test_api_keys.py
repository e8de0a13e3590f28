"""/api/keys/ and `manage.py create_api_key`: keys shown once, stored hashed, revocable, expiring."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from console.accounts.models import ApiKey, hash_key
from console.audit.models import AuditEvent
from tests.api_rows import error_of
from tests.conftest import make_user

pytestmark = pytest.mark.django_db

LISTED_FIELDS = {"id", "name", "prefix", "user", "status", "created_at", "expires_at", "last_used_at", "revoked_at",
                 "own_limits", "requests_per_minute", "tokens_per_minute"}


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_a_new_key_is_shown_once_works_and_is_stored_only_hashed(charlie, user_api):
    response = user_api.post("/api/keys/", {"name": "laptop"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert set(body) == LISTED_FIELDS | {"key"}
    assert (body["name"], body["user"], body["status"], body["expires_at"]) == ("laptop", "charlie", "active", None)
    raw = body["key"]
    assert raw.startswith(f"tau_{body['prefix']}_")
    key = ApiKey.objects.get(pk=body["id"])
    assert key.hashed_key == hash_key(raw) and raw not in str(ApiKey.objects.filter(pk=key.pk).values().get())
    assert bearer(raw).get("/api/models/").status_code == 200
    listed = user_api.get("/api/keys/").json()["results"]
    assert all(set(k) == LISTED_FIELDS for k in listed)  # no raw key, no hash, ever again
    event = AuditEvent.objects.get(action="apikey.create")
    assert event.actor == charlie and event.data == {"user": "charlie", "name": "laptop", "prefix": body["prefix"],
                                                     "expires_at": None}
    assert raw not in str(event.data) and key.hashed_key not in str(event.data)


def test_a_key_may_expire_and_stops_working_then(charlie, user_api):
    expires = timezone.now() + timedelta(days=30)
    body = user_api.post("/api/keys/", {"name": "ci", "expires_at": expires.isoformat()}, format="json").json()
    assert body["expires_at"] and body["status"] == "active"
    ApiKey.objects.filter(pk=body["id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    error_of(bearer(body["key"]).get("/api/models/"), 401)
    assert user_api.get(f"/api/keys/{body['id']}/").json()["status"] == "expired"


@pytest.mark.parametrize(("body", "field", "says"), [
    ({}, "name", "This field is required."),
    ({"name": ""}, "name", "This field may not be blank."),
    ({"name": "x" * 101}, "name", "no more than 100 characters"),
    ({"name": "old", "expires_at": "2000-01-01T00:00:00Z"}, "expires_at", "expires_at must be in the future"),
    ({"name": "soon", "expires_at": "next week"}, "expires_at", "Datetime has wrong format"),
])
def test_a_bad_key_request_is_refused_and_creates_nothing(charlie, user_api, body, field, says):
    before = ApiKey.objects.count()
    error = error_of(user_api.post("/api/keys/", body, format="json"), 400)
    assert error["field"] == field and says in error["message"]
    assert ApiKey.objects.count() == before and not AuditEvent.objects.exists()


def test_the_last_use_of_a_key_is_recorded(charlie, user_api):
    body = user_api.post("/api/keys/", {"name": "laptop"}, format="json").json()
    assert body["last_used_at"] is None
    bearer(body["key"]).get("/api/models/")
    assert user_api.get(f"/api/keys/{body['id']}/").json()["last_used_at"]


def test_each_user_lists_only_their_own_keys(bob, charlie, user_api):
    ApiKey.issue(bob, "bobs")
    ApiKey.issue(charlie, "charlies")
    names = sorted(k["name"] for k in user_api.get("/api/keys/").json()["results"])
    assert names == ["charlie-test", "charlies"]
    assert user_api.get("/api/keys/?user=charlie").json()["count"] == 2
    assert error_of(user_api.get("/api/keys/?user=bob"), 403)["message"] == "Only admins can list other users' keys."


def test_an_admin_lists_anyones_keys_with_the_user_filter(bob, admin_api):
    ApiKey.issue(bob, "bobs")
    assert sorted(k["name"] for k in admin_api.get("/api/keys/?user=bob").json()["results"]) == ["bobs"]
    assert [k["name"] for k in admin_api.get("/api/keys/").json()["results"]] == ["alice-test"]


def test_revoking_a_key_stops_it_at_once_and_is_audited(charlie, user_api):
    body = user_api.post("/api/keys/", {"name": "laptop"}, format="json").json()
    assert user_api.delete(f"/api/keys/{body['id']}/").status_code == 204
    error_of(bearer(body["key"]).get("/api/models/"), 401)
    listed = user_api.get(f"/api/keys/{body['id']}/").json()
    assert listed["status"] == "revoked" and listed["revoked_at"]
    event = AuditEvent.objects.get(action="apikey.revoke")
    assert event.actor == charlie and event.data == {"user": "charlie", "name": "laptop", "prefix": body["prefix"]}


def test_revoking_twice_is_harmless_and_audited_once(charlie, user_api):
    key, _ = ApiKey.issue(charlie, "laptop")
    assert user_api.post(f"/api/keys/{key.pk}/revoke").json()["status"] == "revoked"
    assert user_api.post(f"/api/keys/{key.pk}/revoke").json()["status"] == "revoked"
    assert user_api.delete(f"/api/keys/{key.pk}/").status_code == 204
    assert AuditEvent.objects.filter(action="apikey.revoke").count() == 1


def test_a_user_cannot_see_or_revoke_someone_elses_key(bob, user_api):
    key, raw = ApiKey.issue(bob, "bobs")
    assert error_of(user_api.post(f"/api/keys/{key.pk}/revoke"), 404)["message"] == f"You have no API key #{key.pk}."
    error_of(user_api.delete(f"/api/keys/{key.pk}/"), 404)
    error_of(user_api.get(f"/api/keys/{key.pk}/"), 404)
    assert bearer(raw).get("/api/models/").status_code == 200


def test_an_admin_revokes_anyones_key(alice, bob, admin_api):
    key, raw = ApiKey.issue(bob, "leaked")
    assert admin_api.post(f"/api/keys/{key.pk}/revoke").json() | {"revoked_at": None, "created_at": None} == {
        "id": key.pk, "name": "leaked", "prefix": key.prefix, "user": "bob", "status": "revoked",
        "created_at": None, "expires_at": None, "last_used_at": None, "revoked_at": None,
        "own_limits": False, "requests_per_minute": None, "tokens_per_minute": None}
    error_of(bearer(raw).get("/api/models/"), 401)
    event = AuditEvent.objects.get(action="apikey.revoke")
    assert event.actor == alice and event.data["user"] == "bob"


# --- manage.py create_api_key ----------------------------------------------------------------------
def create_api_key(*args: str) -> list[str]:
    out = StringIO()
    call_command("create_api_key", *args, stdout=out)
    return out.getvalue().rstrip("\n").split("\n")


def test_the_command_prints_a_working_key_as_its_last_line(bob):
    lines = create_api_key("bob", "--name", "deploy-bot")
    raw = lines[-1]
    assert raw.startswith("tau_") and " " not in raw and len(lines) > 1
    assert "deploy-bot" in lines[0] and "never expires" in lines[0]
    key = ApiKey.objects.get(hashed_key=hash_key(raw))
    assert (key.user, key.name, key.expires_at) == (bob, "deploy-bot", None)
    assert bearer(raw).get("/api/audit/").status_code == 200  # with bob's maintainer role
    event = AuditEvent.objects.get(action="apikey.create")
    assert event.actor is None and event.data["via"] == "create_api_key" and raw not in str(event.data)


def test_the_command_sets_an_expiry_in_days(charlie):
    raw = create_api_key("charlie", "--expires-days", "7")[-1]
    key = ApiKey.objects.get(hashed_key=hash_key(raw))
    assert key.name == "cli"
    assert timedelta(days=6, hours=23) < key.expires_at - timezone.now() <= timedelta(days=7)


def test_each_run_of_the_command_makes_a_new_key(bob):
    assert create_api_key("bob")[-1] != create_api_key("bob")[-1]
    assert ApiKey.objects.filter(user=bob).count() == 2


@pytest.mark.parametrize(("args", "says"), [
    (["nobody"], "No user named 'nobody'"),
    (["erin"], "User 'erin' is inactive"),
    (["bob", "--expires-days", "0"], "--expires-days must be 1 or more"),
    (["bob", "--name", " "], "--name must be 1 to 100 characters"),
])
def test_the_command_refuses_what_would_not_work(bob, args, says):
    make_user("erin", "user", is_active=False)
    with pytest.raises(CommandError, match=says):
        create_api_key(*args)
    assert not ApiKey.objects.exists()


def test_only_admins_give_a_key_its_own_rate_limits(admin_api, user_api):
    made = admin_api.post("/api/keys/", {"name": "batch", "requests_per_minute": 0, "tokens_per_minute": 5000},
                          format="json")
    assert made.status_code == 201, made.content
    assert (made.json()["own_limits"], made.json()["requests_per_minute"], made.json()["tokens_per_minute"]) == (
        True, 0, 5000)
    refused = user_api.post("/api/keys/", {"name": "mine", "requests_per_minute": 0}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["field"] == "requests_per_minute"
    assert "Only admins" in refused.json()["error"]["message"]
    refused = user_api.post("/api/keys/", {"name": "mine", "own_limits": True}, format="json")
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "own_limits"
    assert not ApiKey.objects.filter(name="mine").exists()


def test_an_admin_gives_an_existing_key_its_own_budget_and_its_owner_cannot(alice, charlie, admin_api, user_api):
    key, _ = ApiKey.issue(charlie, "laptop")
    assert key.own_limits is False  # a user's keys share the user's budget
    error_of(user_api.patch(f"/api/keys/{key.pk}/", {"own_limits": True}, format="json"), 403)
    res = admin_api.patch(f"/api/keys/{key.pk}/", {"tokens_per_minute": 900}, format="json")
    assert res.status_code == 200, res.content
    assert (res.json()["own_limits"], res.json()["requests_per_minute"], res.json()["tokens_per_minute"]) == (
        True, None, 900)
    key.refresh_from_db()
    assert key.own_limits and key.limits() == (settings.TAUON_USER_REQUESTS_PER_MINUTE, 900)  # the site default fills what was not given
    event = AuditEvent.objects.get(action="apikey.limits")
    assert event.actor == alice and event.data["tokens_per_minute"] == 900
    back = admin_api.patch(f"/api/keys/{key.pk}/", {"own_limits": False}, format="json").json()
    assert (back["own_limits"], back["tokens_per_minute"]) == (False, None)
    error_of(admin_api.patch(f"/api/keys/{key.pk}/", {"own_limits": False, "tokens_per_minute": 5}, format="json"),
             400)
