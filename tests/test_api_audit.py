"""/api/audit/: the audit log, newest first, filtered by actor, model, action, target type and time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from console.audit.models import AuditEvent, record
from console.jobs.models import Job
from console.registry.models import Alias
from tests.api_rows import error_of, make_model, make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def history(alice, bob):
    """Real changes by bob and alice on two models, the oldest backdated by a day."""
    tiny = make_model("tiny", owner=bob)
    record(bob, "model.create", tiny, model_name="tiny")
    other = make_model("other", owner=alice)
    record(alice, "model.create", other, model_name="other")
    Alias.move(tiny, "production", make_version(tiny), bob, comment="go")
    AuditEvent.objects.filter(model_name="tiny", action="model.create").update(
        created_at=timezone.now() - timedelta(days=1))


def actions(client, query: str = "") -> list[tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    body = client.get(f"/api/audit/?{query}").json()
    return [(e["actor"], e["action"], e["model_name"]) for e in body["results"]]


def test_the_log_lists_changes_newest_first_with_who_what_and_data(history, maintainer_api):
    body = maintainer_api.get("/api/audit/").json()
    assert body["count"] == 3
    newest = body["results"][0]
    assert newest | {"id": None, "created_at": None, "target_id": None} == {
        "id": None, "created_at": None, "actor": "bob", "action": "alias.set", "target_type": "alias",
        "target_id": None, "target_repr": "tiny@production", "model_name": "tiny",
        "data": {"alias": "production", "from_version": None, "to_version": 1, "comment": "go"}}
    assert [e["action"] for e in body["results"]] == ["alias.set", "model.create", "model.create"]


def test_the_log_filters_by_actor_model_action_and_target_type(history, maintainer_api):
    assert actions(maintainer_api, "actor=alice") == [("alice", "model.create", "other")]
    assert actions(maintainer_api, "model=tiny") == [("bob", "alias.set", "tiny"), ("bob", "model.create", "tiny")]
    assert actions(maintainer_api, "action=model.create&actor=bob") == [("bob", "model.create", "tiny")]
    assert actions(maintainer_api, "action_prefix=alias.") == [("bob", "alias.set", "tiny")]
    assert actions(maintainer_api, "target_type=model") == [("alice", "model.create", "other"),
                                                           ("bob", "model.create", "tiny")]


def test_the_log_filters_by_time(history, maintainer_api):
    an_hour_ago = (timezone.now() - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert len(actions(maintainer_api, f"since={an_hour_ago}")) == 2
    assert actions(maintainer_api, f"until={an_hour_ago}") == [("bob", "model.create", "tiny")]
    error = error_of(maintainer_api.get("/api/audit/?since=yesterday"), 400)
    assert error["field"] == "since" and "date/time" in error["message"]


def test_the_log_is_paginated(history, admin_api):
    page = admin_api.get("/api/audit/?page_size=2&page=2").json()
    assert page["count"] == 3 and len(page["results"]) == 1 and page["next"] is None and page["previous"]


def test_one_event_is_read_by_id(history, maintainer_api):
    event = AuditEvent.objects.get(action="alias.set")
    assert maintainer_api.get(f"/api/audit/{event.pk}/").json()["data"]["comment"] == "go"
    assert error_of(maintainer_api.get("/api/audit/999999/"), 404)["message"] == "No audit event #999999."


def test_users_below_maintainer_cannot_read_the_log(history, user_api):
    assert error_of(user_api.get("/api/audit/"), 403)["message"] == "This action needs the 'maintainer' role or above."


def test_changes_made_through_the_api_land_in_the_log(bob, charlie, maintainer_api, user_api, admin_api):
    """One of each: model, version config, alias, job and key changes are all browsable afterwards."""
    maintainer_api.post("/api/models/", {"name": "tiny", "task": "text-generation"}, format="json")
    make_version(make_model("tiny2"))
    maintainer_api.patch("/api/models/tiny2/versions/1/", {"config": {"notes": "x"}}, format="json")
    maintainer_api.put("/api/models/tiny2/aliases/staging", {"version": 1}, format="json")
    maintainer_api.delete("/api/models/tiny2/aliases/staging")
    maintainer_api.post(f"/api/jobs/{Job.objects.create(kind='import').pk}/cancel")
    key_id = user_api.post("/api/keys/", {"name": "laptop"}, format="json").json()["id"]
    admin_api.post(f"/api/keys/{key_id}/revoke")
    seen = sorted(e["action"] for e in admin_api.get("/api/audit/?page_size=100").json()["results"])
    assert seen == ["alias.delete", "alias.set", "apikey.create", "apikey.revoke", "job.cancel", "model.create",
                    "version.config"]
    assert actions(admin_api, "actor=charlie") == [("charlie", "apikey.create", "")]
