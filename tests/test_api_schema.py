"""The OpenAPI schema: generated with zero warnings, valid, served, and listing the contract's paths."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from drf_spectacular.drainage import GENERATOR_STATS

CONTRACT_PATHS = {
    "/api/models/", "/api/models/{name}/", "/api/models/{name}/versions/", "/api/models/{name}/versions/{number}/",
    "/api/models/{name}/aliases/", "/api/models/{name}/aliases/{alias}", "/api/models/{name}/aliases/{alias}/history",
    "/api/models/{name}/aliases/{alias}/rollback", "/api/jobs/", "/api/jobs/{id}/", "/api/jobs/{id}/cancel",
    "/api/audit/", "/api/audit/{id}/", "/api/keys/", "/api/keys/{id}/", "/api/keys/{id}/revoke",
}


def test_the_schema_validates_with_zero_warnings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    GENERATOR_STATS.reset()
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    assert not GENERATOR_STATS, capsys.readouterr().err
    assert "Warning" not in capsys.readouterr().err
    schema = yaml.safe_load(out.read_text())
    assert schema["openapi"].startswith("3.") and CONTRACT_PATHS <= set(schema["paths"])


def test_every_operation_documents_its_authentication(tmp_path: Path) -> None:
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(out))
    schema = yaml.safe_load(out.read_text())
    assert schema["components"]["securitySchemes"]["apiKey"] == {
        "type": "http", "scheme": "bearer", "description": "A Tauon API key"}
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert {"apiKey": []} in operation["security"], f"{method.upper()} {path}"


def test_the_version_upload_is_documented_as_multipart_or_json(tmp_path: Path) -> None:
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(out))
    body = yaml.safe_load(out.read_text())["paths"]["/api/models/{name}/versions/"]["post"]["requestBody"]
    assert set(body["content"]) == {"multipart/form-data", "application/json"}


def test_the_schema_and_its_swagger_ui_are_served_to_users_only(user_api, anon_api) -> None:
    schema = user_api.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/models/{name}/aliases/{alias}/rollback" in schema.content
    assert anon_api.get("/api/schema/").status_code == 401


def test_the_swagger_ui_works_offline_from_our_own_static_files(charlie) -> None:
    from django.contrib.staticfiles import finders
    from django.test import Client

    browser = Client()
    browser.force_login(charlie)
    page = browser.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "cdn." not in html and "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")


def schema_dict(tmp_path: Path) -> dict:
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(out))
    return yaml.safe_load(out.read_text())


def test_every_operation_documents_its_errors_in_the_one_error_shape(tmp_path: Path) -> None:
    schema = schema_dict(tmp_path)
    error = schema["components"]["schemas"]["Error"]
    assert error["required"] == ["error"] and error["properties"]["error"]["required"] == ["code", "message", "field"]
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            errors = {code: r for code, r in operation["responses"].items() if code[0] in "45"}
            assert {"401", "403"} <= set(errors), f"{method.upper()} {path}"
            if "{" in path or "requestBody" in operation:
                assert "404" in errors, f"{method.upper()} {path}"
            if "requestBody" in operation:
                assert {"400", "415"} <= set(errors), f"{method.upper()} {path}"
            for code, response in errors.items():
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (
                    f"{method.upper()} {path} {code}")


def test_fields_returned_as_null_are_nullable_and_pages_are_bounded(tmp_path: Path) -> None:
    schema = schema_dict(tmp_path)
    components = schema["components"]["schemas"]
    version = components["ModelVersion"]["properties"]
    for name in ("created_by", "parent", "produced_by", "import_job"):
        assert version[name]["nullable"] is True, name
    assert components["Deployment"]["properties"]["created_by"]["nullable"] is True
    parameters = {p["name"]: p["schema"] for p in schema["paths"]["/api/models/"]["get"]["parameters"]}
    assert parameters["page"] == {"type": "integer", "minimum": 1}
    assert parameters["page_size"] == {"type": "integer", "minimum": 1, "maximum": 500}
