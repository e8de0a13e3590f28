"""/api/models/: register, list (pagination, filters, search), read, edit the description, delete."""

from __future__ import annotations

import pytest

from console.audit.models import AuditEvent
from console.registry.models import Alias, Model, ModelVersion
from tests.api_rows import error_of, make_model, make_version

pytestmark = pytest.mark.django_db


def test_a_maintainer_registers_a_model_and_becomes_its_owner(bob, maintainer_api):
    response = maintainer_api.post("/api/models/", {"name": "smol", "task": "text-generation",
                                                    "description": "a small chat model"}, format="json")
    assert response.status_code == 201
    assert response.json() | {"created_at": None, "updated_at": None} == {
        "name": "smol", "task": "text-generation", "description": "a small chat model", "owner": "bob",
        "created_at": None, "updated_at": None, "versions": 0, "aliases": {}}
    event = AuditEvent.objects.get(action="model.create")
    assert (event.actor, event.model_name, event.target_repr) == (bob, "smol", "smol")
    assert event.data == {"task": "text-generation", "owner": "bob"}


def test_the_owner_may_be_another_user(charlie, maintainer_api):
    response = maintainer_api.post("/api/models/", {"name": "smol", "task": "embeddings", "owner": "charlie"},
                                   format="json")
    assert response.status_code == 201 and response.json()["owner"] == "charlie"
    assert Model.objects.get(name="smol").owner == charlie


def test_an_unknown_owner_is_a_404_naming_the_field(maintainer_api):
    error = error_of(maintainer_api.post("/api/models/", {"name": "smol", "task": "embeddings", "owner": "nobody"},
                                         format="json"), 404)
    assert error["field"] == "owner" and "nobody" in error["message"]
    assert not Model.objects.exists()


def test_a_duplicate_name_is_refused_with_a_clear_message_and_nothing_recorded(bob, maintainer_api):
    make_model("smol", owner=bob)
    error = error_of(maintainer_api.post("/api/models/", {"name": "smol", "task": "embeddings"}, format="json"), 409)
    assert error == {"code": "duplicate", "field": "name",
                     "message": "A model named 'smol' already exists; choose another name."}
    assert Model.objects.count() == 1 and not AuditEvent.objects.exists()


def test_a_name_that_is_not_a_slug_is_refused(maintainer_api):
    error = error_of(maintainer_api.post("/api/models/", {"name": "my model!", "task": "embeddings"},
                                         format="json"), 400)
    assert error["field"] == "name" and "slug" in error["message"]


def test_an_unknown_task_is_refused_with_the_list_of_tasks(maintainer_api):
    error = error_of(maintainer_api.post("/api/models/", {"name": "smol", "task": "chat"}, format="json"), 400)
    assert error["field"] == "task"
    assert error["message"] == ("'chat' is not a task; choose one of: text-generation, text-classification, "
                                "token-classification, embeddings.")


def test_a_missing_task_is_named(maintainer_api):
    error = error_of(maintainer_api.post("/api/models/", {"name": "smol"}, format="json"), 400)
    assert error == {"code": "required", "field": "task", "message": "This field is required."}


def test_the_list_shows_each_models_version_count_and_aliases(bob, user_api):
    tiny = make_model("tiny", owner=bob)
    v1 = make_version(tiny)
    make_version(tiny)
    Alias.move(tiny, "production", v1, bob)
    make_model("empty", task="embeddings")
    body = user_api.get("/api/models/").json()
    assert body["count"] == 2 and body["next"] is None and body["previous"] is None
    assert [(m["name"], m["versions"], m["aliases"]) for m in body["results"]] == [
        ("empty", 0, {}), ("tiny", 2, {"production": 1})]


def test_the_list_is_paginated_with_page_and_page_size(user_api):
    for i in range(5):
        make_model(f"m{i}")
    first = user_api.get("/api/models/?page_size=2").json()
    assert first["count"] == 5 and [m["name"] for m in first["results"]] == ["m0", "m1"]
    assert first["next"].endswith("/api/models/?page=2&page_size=2") and first["previous"] is None
    last = user_api.get("/api/models/?page=3&page_size=2").json()
    assert [m["name"] for m in last["results"]] == ["m4"] and last["next"] is None and last["previous"]
    assert error_of(user_api.get("/api/models/?page=4&page_size=2"), 404)["code"] == "not_found"


def test_the_list_filters_by_task_owner_and_name(bob, charlie, user_api):
    make_model("chat-small", owner=bob)
    make_model("chat-large", owner=charlie)
    make_model("embed-small", task="embeddings", owner=bob)

    def names(query: str) -> list[str]:
        return [m["name"] for m in user_api.get(f"/api/models/?{query}").json()["results"]]

    assert names("task=embeddings") == ["embed-small"]
    assert names("owner=bob") == ["chat-small", "embed-small"]
    assert names("search=SMALL") == ["chat-small", "embed-small"]
    assert names("search=chat&owner=charlie") == ["chat-large"]
    assert names("ordering=-name") == ["embed-small", "chat-small", "chat-large"]
    assert error_of(user_api.get("/api/models/?task=chat"), 400)["field"] == "task"


def test_a_model_is_read_by_name(bob, user_api):
    make_model("tiny", owner=bob, description="hello")
    body = user_api.get("/api/models/tiny/").json()
    assert (body["name"], body["owner"], body["description"]) == ("tiny", "bob", "hello")


def test_an_unknown_model_is_a_404_naming_it(user_api):
    assert error_of(user_api.get("/api/models/nope/"), 404) == {
        "code": "not_found", "field": None, "message": "No model named 'nope'."}


def test_a_maintainer_edits_the_description_and_it_is_audited(bob, charlie, maintainer_api):
    make_model("tiny", owner=bob, description="old words")
    response = maintainer_api.patch("/api/models/tiny/", {"description": "new words", "owner": "charlie"},
                                    format="json")
    assert response.status_code == 200
    assert (response.json()["description"], response.json()["owner"]) == ("new words", "charlie")
    event = AuditEvent.objects.get(action="model.update")
    assert event.actor == bob and event.model_name == "tiny"
    assert event.data == {"changes": {"description": {"from": "old words", "to": "new words"},
                                      "owner": {"from": "bob", "to": "charlie"}}}


def test_the_name_and_task_cannot_be_changed(maintainer_api):
    make_model("tiny", description="same")
    error = error_of(maintainer_api.patch("/api/models/tiny/", {"name": "renamed", "description": "x"},
                                          format="json"), 400)
    assert error["field"] == "name" and "cannot be changed" in error["message"]
    assert Model.objects.get().description == "same"


def test_put_on_a_model_is_not_allowed(maintainer_api):
    make_model("tiny")
    assert error_of(maintainer_api.put("/api/models/tiny/", {"description": "x"}, format="json"),
                    405)["code"] == "method_not_allowed"


def test_an_admin_deletes_a_model_with_its_versions_and_files(alice, admin_api, django_capture_on_commit_callbacks):
    tiny = make_model("tiny")
    version = make_version(tiny)
    version.path.mkdir(parents=True)
    (version.path / "model.safetensors").write_bytes(b"weights")
    with django_capture_on_commit_callbacks(execute=True):
        assert admin_api.delete("/api/models/tiny/").status_code == 204
    assert not Model.objects.exists() and not ModelVersion.objects.exists()
    assert not version.path.exists()
    event = AuditEvent.objects.get(action="model.delete")
    assert (event.actor, event.model_name, event.data) == (alice, "tiny", {"versions": 1})


def test_a_model_with_aliases_cannot_be_deleted(bob, admin_api):
    tiny = make_model("tiny")
    Alias.move(tiny, "production", make_version(tiny), bob)
    error = error_of(admin_api.delete("/api/models/tiny/"), 409)
    assert "still has aliases (production)" in error["message"]
    assert Model.objects.filter(name="tiny").exists()


def test_a_model_with_a_version_still_importing_cannot_be_deleted(admin_api):
    make_version(make_model("tiny"), status="importing")
    assert "still importing" in error_of(admin_api.delete("/api/models/tiny/"), 409)["message"]


def test_listing_models_costs_the_same_few_queries_however_many_there_are(bob, user_api,
                                                                         django_assert_max_num_queries):
    for i in range(12):
        model = make_model(f"m{i:02}", owner=bob)
        Alias.move(model, "production", make_version(model), bob)
        make_version(model)
    user_api.get("/api/models/")  # the key's last-use stamp is written on the first request
    with django_assert_max_num_queries(4):  # key, count, page, aliases
        body = user_api.get("/api/models/").json()
    assert body["count"] == 12 and body["results"][0]["aliases"] == {"production": 1}


def test_a_task_change_is_refused_as_fixed_whatever_task_it_names(maintainer_api):
    make_model("tiny")
    error = error_of(maintainer_api.patch("/api/models/tiny/", {"task": "bogus"}, format="json"), 400)
    assert error == {"code": "invalid", "field": "task",
                     "message": "A model's task cannot be changed; only description and owner can."}
    assert Model.objects.get().task == "text-generation"
