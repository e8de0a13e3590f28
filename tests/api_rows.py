"""Rows and assertions shared by the REST API tests: registry rows made directly (no import needed)."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from console.registry.models import Model, ModelVersion


def make_model(name: str = "tiny", task: str = "text-generation", owner: Any = None, **fields: Any) -> Model:
    return Model.objects.create(name=name, task=task, owner=owner, **fields)


def make_version(model: Model, number: int | None = None, status: str = "ready", **fields: Any) -> ModelVersion:
    """A version row as an import would leave it, without files on disk."""
    defaults: dict[str, Any] = dict(
        source="upload", source_ref="tiny.zip", format="safetensors", architecture="LlamaForCausalLM",
        files=[{"path": "model.safetensors", "size": 1234, "sha256": "ab" * 32}], total_size=1234,
        parameter_count=1_000_000, dtype="float32", has_tokenizer=True)
    defaults.update(fields)
    return ModelVersion.objects.create(model=model, number=number or model.next_version_number(), status=status,
                                       storage_key=uuid4().hex, **defaults)


def error_of(response: Any, status: int) -> dict[str, Any]:
    """Assert the status and the one error shape; return the error object."""
    assert response.status_code == status, (response.status_code, getattr(response, "data", response.content))
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["message"], body
    return body["error"]
