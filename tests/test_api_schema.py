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
