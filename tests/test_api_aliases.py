"""/api/models/{name}/aliases/…: move (PUT), delete, history, rollback; each move audited with who,
from and to which version, and the comment."""

from __future__ import annotations

import pytest

from console.audit.models import AuditEvent
from console.registry.models import Alias, AliasEvent
from tests.api_rows import error_of, make_model, make_version

pytestmark = pytest.mark.django_db

PROD = "/api/models/tiny/aliases/production"


@pytest.fixture
def tiny(bob):
    model = make_model("tiny", owner=bob)
    for _ in range(3):
        make_version(model)
    return model


def put(client, version: int, comment: str = "", path: str = PROD):  # type: ignore[no-untyped-def]
    return client.put(path, {"version": version, "comment": comment}, format="json")


def version_of_production() -> int:
    return Alias.objects.get(name="production").version.number


def test_putting_an_alias_creates_it_and_records_who_moved_it_where(tiny, bob, maintainer_api):
    response = put(maintainer_api, 1, "first release")
    assert response.status_code == 200
    assert response.json() | {"updated_at": None} == {"model": "tiny", "name": "production", "version": 1,
                                                       "updated_at": None}
    event = AuditEvent.objects.get(action="alias.set")
    assert (event.actor, event.model_name, event.target_type) == (bob, "tiny", "alias")
    assert event.data == {"alias": "production", "from_version": None, "to_version": 1, "comment": "first release"}


def test_moving_an_alias_records_the_version_it_came_from(tiny, alice, admin_api, maintainer_api):
    put(maintainer_api, 1)
    assert put(admin_api, 2, "promote").json()["version"] == 2
    event = AuditEvent.objects.filter(action="alias.set").first()
    assert event.actor == alice and event.data == {"alias": "production", "from_version": 1, "to_version": 2,
                                                   "comment": "promote"}


def test_the_model_and_its_versions_show_where_aliases_point(tiny, maintainer_api):
    put(maintainer_api, 2)
    put(maintainer_api, 2, path="/api/models/tiny/aliases/staging")
    assert maintainer_api.get("/api/models/tiny/").json()["aliases"] == {"production": 2, "staging": 2}
    assert maintainer_api.get("/api/models/tiny/versions/2/").json()["aliases"] == ["production", "staging"]
    listed = maintainer_api.get("/api/models/tiny/aliases/").json()
    assert [(a["name"], a["version"]) for a in listed["results"]] == [("production", 2), ("staging", 2)]
    assert maintainer_api.get(PROD).json()["version"] == 2


@pytest.mark.parametrize(("status", "says"), [("failed", "is 'failed'"), ("importing", "is 'importing'")])
def test_an_alias_cannot_point_at_a_version_that_is_not_ready(tiny, maintainer_api, status, says):
    put(maintainer_api, 1)
    make_version(tiny, status=status)
    error = error_of(put(maintainer_api, 4), 400)
    assert error["field"] == "version" and says in error["message"] and "only ready versions" in error["message"]
    assert version_of_production() == 1
    assert AliasEvent.objects.count() == 1 and AuditEvent.objects.count() == 1


def test_an_alias_cannot_point_at_a_version_of_another_model(tiny, maintainer_api):
    other = make_model("other")
    for _ in range(5):
        make_version(other)
    error = error_of(put(maintainer_api, 5), 404)
    assert error["field"] == "version"
    assert error["message"].startswith("Model 'tiny' has no version 5; version numbers count per model")
    assert not Alias.objects.exists() and not AuditEvent.objects.exists()


@pytest.mark.parametrize(("body", "field", "says"), [
    ({}, "version", "This field is required."),
    ({"version": "latest"}, "version", "A valid integer is required."),
    ({"version": 0}, "version", "greater than or equal to 1"),
])
def test_a_move_without_a_usable_version_number_is_refused(tiny, maintainer_api, body, field, says):
    error = error_of(maintainer_api.put(PROD, body, format="json"), 400)
    assert error["field"] == field and says in error["message"]


def test_an_alias_name_must_be_a_short_slug(tiny, maintainer_api):
    error = error_of(put(maintainer_api, 1, path=f"/api/models/tiny/aliases/{'x' * 51}"), 400)
    assert error == {"code": "invalid", "field": "alias", "message": "Alias names are at most 50 characters."}
    assert maintainer_api.put("/api/models/tiny/aliases/not a slug", {"version": 1}, format="json").status_code == 404


def test_an_unknown_alias_or_model_is_a_404_naming_it(tiny, user_api):
    assert error_of(user_api.get(PROD), 404)["message"] == "Model 'tiny' has no alias 'production'."
    assert error_of(user_api.get("/api/models/nope/aliases/"), 404)["message"] == "No model named 'nope'."
    assert error_of(user_api.get(f"{PROD}/history"), 404)["message"] == (
        "Model 'tiny' has no alias 'production' and never had one.")


def test_deleting_an_alias_keeps_its_history_and_is_audited(tiny, bob, maintainer_api):
    put(maintainer_api, 1)
    assert maintainer_api.delete(PROD).status_code == 204
    assert not Alias.objects.exists()
    event = AuditEvent.objects.get(action="alias.delete")
    assert event.actor == bob and event.data == {"alias": "production", "from_version": 1, "comment": ""}
    history = maintainer_api.get(f"{PROD}/history").json()["results"]
    assert [(e["action"], e["from_version"], e["to_version"]) for e in history] == [("delete", 1, None),
                                                                                      ("set", None, 1)]
    assert error_of(maintainer_api.delete(PROD), 404)["message"] == "Model 'tiny' has no alias 'production'."


def test_history_lists_every_move_newest_first_with_actor_and_comment(tiny, admin_api, maintainer_api):
    put(maintainer_api, 1, "first")
    put(admin_api, 2, "second")
    maintainer_api.post(f"{PROD}/rollback", {"comment": "v2 is slow"}, format="json")
    body = maintainer_api.get(f"{PROD}/history").json()
    assert body["count"] == 3
    assert [(e["alias"], e["action"], e["from_version"], e["to_version"], e["actor"], e["comment"])
            for e in body["results"]] == [
        ("production", "rollback", 2, 1, "bob", "v2 is slow"),
        ("production", "set", 1, 2, "alice", "second"),
        ("production", "set", None, 1, "bob", "first")]
    page = maintainer_api.get(f"{PROD}/history?page_size=1&page=2").json()
    assert page["count"] == 3 and [e["comment"] for e in page["results"]] == ["second"] and page["next"]


def test_rollback_puts_the_alias_back_on_the_previous_version_and_is_audited(tiny, bob, maintainer_api):
    put(maintainer_api, 1)
    put(maintainer_api, 3)
    response = maintainer_api.post(f"{PROD}/rollback", {"comment": "v3 regressed"}, format="json")
    assert response.status_code == 200 and response.json()["version"] == 1
    assert version_of_production() == 1
    event = AuditEvent.objects.get(action="alias.rollback")
    assert event.actor == bob and event.data == {"alias": "production", "from_version": 3, "to_version": 1,
                                                 "comment": "v3 regressed"}


def test_rolling_back_twice_undoes_the_rollback(tiny, maintainer_api):
    put(maintainer_api, 1)
    put(maintainer_api, 2)
    assert maintainer_api.post(f"{PROD}/rollback").json()["version"] == 1
    assert maintainer_api.post(f"{PROD}/rollback").json()["version"] == 2


def test_a_new_alias_has_nothing_to_roll_back_to(tiny, maintainer_api):
    put(maintainer_api, 1)
    error = error_of(maintainer_api.post(f"{PROD}/rollback", {}, format="json"), 409)
    assert error == {"code": "conflict", "field": "alias",
                     "message": "Alias 'production' has no previous version to roll back to."}
    assert version_of_production() == 1 and AliasEvent.objects.count() == 1


def test_rollback_refuses_a_previous_version_that_has_since_failed(tiny, maintainer_api):
    put(maintainer_api, 1)
    put(maintainer_api, 2)
    tiny.versions.filter(number=1).update(status="failed")
    error = error_of(maintainer_api.post(f"{PROD}/rollback"), 409)
    assert error["field"] == "version" and "only ready versions" in error["message"]
    assert version_of_production() == 2


def test_rolling_back_an_unknown_alias_is_a_404(tiny, maintainer_api):
    assert error_of(maintainer_api.post(f"{PROD}/rollback"), 404)["message"] == (
        "Model 'tiny' has no alias 'production'.")
