"""The served OpenAPI schema is exact: schemathesis sends every operation a few generated requests
(valid and invalid, a fixed seed) through the WSGI app and fails on any 5xx or any answer the schema
does not describe (status, content type, body), on invalid input accepted and on valid input refused."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiJsonRenderer
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from console.accounts.models import ApiKey
from console.deployments.models import Deployment
from console.evaluation.models import DatasetVersion
from console.registry.models import Alias
from tests.api_rows import make_model, make_version
from tests.conftest import make_user

# Two random examples per operation beside the coverage phase's boundary cases, one seed, no example database:
# the same ~3,300 requests every run (about 35 s of CPU).
CONFIG = {
    "seed": 15,
    "suppress-health-check": ["all"],
    "generation": {"mode": "all", "max-examples": 2, "deterministic": True, "database": "none", "no-shrink": True},
    # Path parameters name the rows run_key makes, so operations reach real objects rather than a 404 each.
    "parameters": {"path.name": "tiny", "path.alias": "production", "path.number": 1},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
}


def served_schema() -> schemathesis.schemas.BaseSchema:
    """The schema /api/schema/ serves (generated the same way, without a request), run against the WSGI app."""
    spec = json.loads(OpenApiJsonRenderer().render(SchemaGenerator().get_schema(request=None, public=True)))
    loaded = schemathesis.openapi.from_dict(spec, config=SchemathesisConfig.from_dict(CONFIG))
    loaded.app = get_wsgi_application()
    return loaded


schema = served_schema()


@pytest.fixture
def run_key(db) -> Iterator[ApiKey]:  # type: ignore[no-untyped-def]
    """alice's key that the run sends, and the rows its path parameters name: bob's model `tiny` with version 1
    as `production`, a deployment and a dataset named `tiny`."""
    alice = make_user("alice", "admin")
    bob = make_user("bob", "maintainer")
    key, raw = ApiKey.issue(alice, name="schemathesis")
    key.raw = raw
    key.spare = ApiKey.issue(alice, name="spare")[0].pk
    tiny = make_model("tiny", owner=bob)
    Alias.move(tiny, "production", make_version(tiny), bob)
    Deployment.create(bob, name="tiny", model=tiny, alias="production", config={}, replicas=1)
    DatasetVersion.add("tiny", "text", "tiny.txt", b"Plain English text to evaluate on.\n", bob)
    # As Django's test client does: the test's transaction holds the connection the app must reuse.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield key
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@schema.parametrize()
def test_every_operation_answers_as_its_schema_says(case, run_key) -> None:  # type: ignore[no-untyped-def]
    if case.path.startswith("/api/keys/{id}") and str(case.path_parameters.get("id")) == str(run_key.pk):
        # Revoking the run's own key would turn every later request into a 401: aim at the spare key.
        case.path_parameters["id"] = run_key.spare
    auth = {"Authorization": f"Bearer {run_key.raw}"}
    response = case.call(headers=auth)
    excluded = []
    if response.status_code == 400 and beyond_the_schema(case, response.json()["error"]["field"] or ""):
        excluded.append(positive_data_acceptance)
    case.validate_response(response, headers=auth, excluded_checks=excluded, transport_kwargs={"headers": auth})


def beyond_the_schema(case, field: str) -> bool:  # type: ignore[no-untyped-def]
    """Rules a schema cannot state, so a schema-valid request may still get a 400 naming the field."""
    if case.media_type == "multipart/form-data" and field in ("file", "config"):
        return True  # an upload must be a model archive or a dataset of its kind; its config a JSON string
    field = field.split(".")[0]
    return (case.method, case.path, field) in {
        ("POST", "/api/keys/", "expires_at"),  # must be in the future
        ("POST", "/api/keys/", "own_limits"),  # limits of its own only with own_limits, set by an admin
        ("PATCH", "/api/keys/{id}/", "own_limits"),
        ("PUT", "/api/keys/{id}/", "own_limits"),
        ("POST", "/api/jobs/", "params"),  # each kind's own parameters
        ("POST", "/api/deployments/", "config"),  # sampling.max_tokens within max_tokens
        ("PUT", "/api/deployments/{name}/", "config"),
        ("PATCH", "/api/deployments/{name}/", "config"),
        ("PUT", "/api/deployments/{name}/", "name"),  # name and model are fixed once created
        ("PATCH", "/api/deployments/{name}/", "name"),
        ("PUT", "/api/deployments/{name}/", "model"),
        ("PATCH", "/api/deployments/{name}/", "model"),
        ("POST", "/api/deployments/{name}/predict", "name"),  # predict is for classification deployments
        ("POST", "/api/deployments/{name}/predict-dataset", "name"),  # likewise
        ("POST", "/api/deployments/{name}/predict-dataset", "dataset"),  # one of a kind fitting the task
        ("POST", "/api/models/{name}/versions/", "hub_id"),  # what the hub says (unreachable from tests)
    } or (case.method, case.path) == ("POST", "/api/deployments/{name}/explain")  # depends on the task
