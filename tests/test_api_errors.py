"""Every REST error has one shape: {"error": {"code", "message", "field"}}, whatever the status."""

from __future__ import annotations

import pytest

from console.registry.models import Alias
from tests.api_rows import error_of, make_model, make_version

pytestmark = pytest.mark.django_db


def test_bad_input_names_the_field(maintainer_api):
    assert error_of(maintainer_api.post("/api/models/", {"task": "embeddings"}, format="json"), 400) == {
        "code": "required", "field": "name", "message": "This field is required."}


def test_malformed_json_is_a_parse_error(maintainer_api):
    response = maintainer_api.post("/api/models/", "{not json", content_type="application/json")
    error = error_of(response, 400)
    assert error["code"] == "parse_error" and "JSON parse error" in error["message"]


def test_missing_credentials_are_a_401_with_a_bearer_challenge(anon_api):
    response = anon_api.get("/api/jobs/")
    assert error_of(response, 401) == {"code": "not_authenticated", "field": None,
                                       "message": "Authentication credentials were not provided."}
    assert response["WWW-Authenticate"] == "Bearer"


def test_a_missing_role_is_a_403(user_api):
    assert error_of(user_api.get("/api/audit/"), 403)["code"] == "permission_denied"


def test_an_unknown_object_is_a_404(user_api):
    assert error_of(user_api.get("/api/jobs/12345/"), 404)["code"] == "not_found"


def test_a_wrong_method_is_a_405(maintainer_api):
    assert error_of(maintainer_api.put("/api/jobs/", {}, format="json"), 405) == {
        "code": "method_not_allowed", "field": None, "message": 'Method "PUT" not allowed.'}


def test_a_state_conflict_is_a_409(bob, admin_api):
    tiny = make_model("tiny")
    Alias.move(tiny, "production", make_version(tiny), bob)
    assert error_of(admin_api.delete("/api/models/tiny/"), 409)["code"] == "conflict"


def test_an_unsupported_body_type_is_a_415(maintainer_api):
    response = maintainer_api.post("/api/models/", "name=x", content_type="text/plain")
    assert error_of(response, 415)["code"] == "unsupported_media_type"


def test_a_nested_field_error_names_its_path(maintainer_api):
    make_version(make_model("tiny"))
    response = maintainer_api.patch("/api/models/tiny/versions/1/", {"config": {"dtype": "int3"}}, format="json")
    assert error_of(response, 400)["field"] == "config"


@pytest.mark.parametrize(("query", "field"), [
    ("page_size=null", "page_size"), ("page_size=0", "page_size"), ("page_size=501", "page_size"),
    ("page=first", "page"), ("page=-1", "page"),
])
def test_a_page_or_page_size_out_of_range_is_a_400_naming_it(user_api, query, field):
    error = error_of(user_api.get(f"/api/models/?{query}"), 400)
    assert error["field"] == field and "whole number from 1" in error["message"], error


def test_the_largest_page_size_is_accepted(user_api):
    assert user_api.get("/api/models/?page_size=500").status_code == 200


@pytest.mark.parametrize(("url", "field"), [
    ("/api/deployments/?stopped=null", "stopped"), ("/api/jobs/?active=yes", "active"),
    ("/api/audit/?since=", "since"), ("/api/evaluations/?version=0.5", "version"),
])
def test_a_filter_value_that_cannot_be_read_is_a_400_not_ignored(admin_api, url, field):
    assert error_of(admin_api.get(url), 400)["field"] == field


def test_a_filter_value_that_can_be_read_filters(admin_api):
    assert admin_api.get("/api/deployments/?stopped=false").status_code == 200
    assert admin_api.get("/api/jobs/?active=true").json()["count"] == 0


def test_a_body_naming_an_object_that_does_not_exist_is_a_404_naming_the_field(maintainer_api):
    error = error_of(maintainer_api.post("/api/deployments/", {"name": "x", "model": "nope"}, format="json"), 404)
    assert error["code"] == "does_not_exist" and error["field"] == "model"


def test_a_number_where_a_string_is_due_is_a_400(maintainer_api):
    response = maintainer_api.post("/api/playground/sessions/", {"title": 7}, format="json")
    assert error_of(response, 400)["field"] == "title"


def test_a_form_encoded_body_is_refused_where_json_is_due(maintainer_api):
    response = maintainer_api.post("/api/models/", {"name": "x", "task": "embeddings"})  # multipart
    assert error_of(response, 415)["code"] == "unsupported_media_type"
