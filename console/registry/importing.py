"""Adding versions to the registry: validate what arrives, store it under a generated name,
and finish the heavy part (hashing, GGUF conversion, inspection) in an `import` job.

Owner: the import pipeline. The API and the pages call only the functions below."""

from __future__ import annotations

from typing import Any

from django.core.files.uploadedfile import UploadedFile

from console.jobs.models import Job
from console.registry.models import Model, ModelVersion


class ImportRefused(Exception):
    """Bad input, refused before anything is created. `status` is the HTTP status to answer."""

    def __init__(self, message: str, *, code: str = "invalid_upload", field: str = "file", status: int = 400):
        super().__init__(message)
        self.message, self.code, self.field, self.status = message, code, field, status


def add_version_from_upload(model: Model, upload: UploadedFile, actor: Any, *, config: dict[str, Any] | None = None,
                            parent: ModelVersion | None = None) -> ModelVersion:
    """Validate an uploaded .zip/.tar.gz/.gguf synchronously, store it, create an `importing` version
    and enqueue its import job. Raise ImportRefused (leaving nothing behind) on bad input."""
    raise NotImplementedError


def add_version_from_hub(model: Model, hub_id: str, actor: Any, *, revision: str | None = None,
                         config: dict[str, Any] | None = None) -> ModelVersion:
    """Check the hub is reachable and the repo exists (bounded timeout), then create an `importing`
    version whose job downloads safetensors + tokenizer files. ImportRefused when offline."""
    raise NotImplementedError


def import_failed(job: Job) -> None:
    """on_failed hook of the `import` job kind: mark the version failed and delete its files."""
    raise NotImplementedError
