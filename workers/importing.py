"""The `import` job: download (hub), convert GGUF once, hash every file, inspect, mark the version ready.

The request side (checks, staging, the version row and this job, created in one transaction) is
console/registry/importing.py; so is `import_failed`, the kind's on_failed hook."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from django.conf import settings

from console.audit.models import record
from console.jobs.models import Job
from console.registry.choices import VersionFormat, VersionSource, VersionStatus
from console.registry.importing import HASH_CHUNK, hub_endpoint, import_failed, staging
from console.registry.models import ModelVersion
from engine.inspect import GGUF_NAME, inspect_folder

# What a hub import downloads: safetensors weights, configs and tokenizer files; never pickles or code.
HUB_ALLOW = ["*.safetensors", "*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
HUB_IGNORE = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.h5", "*.msgpack", "*.onnx", "*.py", "*.gguf"]


def _download_from_hub(job: Job, version: ModelVersion) -> None:
    from huggingface_hub import snapshot_download

    hub_id, revision = job.params["hub_id"], job.params.get("revision")
    job.report(0.02, f"Downloading {hub_id}", log=f"downloading {hub_id}@{revision} (safetensors, json, tokenizer files)")
    with staging() as tmp:
        folder = tmp / "model"
        snapshot_download(hub_id, revision=revision, local_dir=folder, allow_patterns=HUB_ALLOW,
                          ignore_patterns=HUB_IGNORE, etag_timeout=settings.TAUON_HUB_TIMEOUT_S,
                          endpoint=hub_endpoint())
        shutil.rmtree(folder / ".cache", ignore_errors=True)  # huggingface_hub's bookkeeping for local_dir
        inspect_folder(folder)  # the same checks as an upload
        os.replace(folder, version.path)


def _convert_gguf(job: Job, version: ModelVersion) -> float:
    from engine.convert import gguf_to_safetensors

    job.report(0.1, "Converting GGUF to safetensors", log="converting GGUF to safetensors (dequantize + tokenizer)")
    started = time.monotonic()
    out = version.path / ".converted"
    shutil.rmtree(out, ignore_errors=True)
    gguf_to_safetensors(version.path / GGUF_NAME, out, task=version.model.task)
    for item in out.iterdir():
        os.replace(item, version.path / item.name)
    out.rmdir()
    seconds = time.monotonic() - started
    job.report(0.7, "Converted", log=f"converted in {seconds:.1f}s")
    return seconds


def _hash_files(job: Job, root: Path, files: list[str], start: float, end: float) -> list[dict[str, Any]]:
    total = sum((root / rel).stat().st_size for rel in files) or 1
    done, out = 0, []
    for rel in files:
        digest = hashlib.sha256()
        with (root / rel).open("rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
        size = (root / rel).stat().st_size
        done += size
        out.append({"path": rel, "size": size, "sha256": digest.hexdigest()})
        job.report(start + (end - start) * done / total, f"Hashed {rel}")
    job.report(end, "Hashed", log=f"hashed {len(files)} files ({done} bytes)")
    return out


def run_import(job: Job) -> dict[str, Any]:
    """The `import` job: download (hub), convert GGUF once, hash every file, inspect, mark ready."""
    started = time.monotonic()
    version = ModelVersion.objects.select_related("model").get(pk=job.params["version"])
    if version.status != VersionStatus.IMPORTING:
        raise RuntimeError(f"Version {version} is '{version.status}', not importing; nothing to do.")
    result: dict[str, Any] = {"version": version.pk, "number": version.number}
    if version.source == VersionSource.HUB and not version.path.exists():
        _download_from_hub(job, version)
    if version.format == VersionFormat.GGUF and not (version.path / "config.json").exists():
        result["convert_seconds"] = round(_convert_gguf(job, version), 2)
    originals = (GGUF_NAME,) if version.format == VersionFormat.GGUF else ()
    job.report(0.72, "Inspecting")
    info = inspect_folder(version.path, originals=originals)
    files = _hash_files(job, version.path, info.files, 0.75, 0.98)
    updated = ModelVersion.objects.filter(pk=version.pk, status=VersionStatus.IMPORTING).update(
        status=VersionStatus.READY, status_reason="", files=files, total_size=info.total_size,
        architecture=info.architecture[:100], parameter_count=info.parameter_count, dtype=info.dtype[:32],
        has_tokenizer=info.has_tokenizer, chat_template=info.chat_template)
    if not updated:
        raise RuntimeError(f"Version {version} stopped importing while its job ran.")
    record(None, "version.ready", version, model_name=version.model.name, number=version.number, job=job.pk)
    result.update(files=len(files), total_size=info.total_size, parameter_count=info.parameter_count,
                  architecture=info.architecture, dtype=info.dtype, seconds=round(time.monotonic() - started, 2))
    job.report(1.0, "Ready", log=f"ready: {info.architecture}, {info.parameter_count} parameters, {info.dtype}")
    return result


def import_in_process(version: ModelVersion, worker: str) -> None:
    """Run `version`'s import job here (hash, inspect, mark ready) rather than on another worker, for jobs
    that produce a version and should end with it ready; a failure fails the import and is re-raised."""
    job = version.import_job
    job.claim(worker)
    try:
        job.succeed(run_import(job))
    except BaseException as exc:
        job.fail(str(exc)[:2000] or type(exc).__name__)
        import_failed(job)
        raise
