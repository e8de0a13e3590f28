"""Adding versions to the registry: validate what arrives, store it under a generated name,
and finish the heavy part (hashing, GGUF conversion, inspection) in an `import` job.

Owner: the import pipeline. The API and the pages call only the functions below.

In the request: check the input (type, archive safety, pickles, config.json, remote code,
complete safetensors, GGUF header), extract it into a temp folder under TAUON_STORAGE/tmp, then
in one transaction create the version, move the folder into place (a rename on the same
filesystem), enqueue the job and write the audit record. Anything that fails leaves nothing.
The job body (download from the hub, convert GGUF once, hash, inspect, mark ready) is
workers/importing.py; its on_failed hooks (`import_failed`, `fail_unimported`) are here."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.db import transaction

from console.audit.models import record
from console.jobs.choices import JobStatus
from console.jobs.models import Job
from console.registry import archives
from console.registry.choices import VersionFormat, VersionSource, VersionStatus
from console.registry.models import Model, ModelVersion
from engine.inspect import GGUF_NAME, HOW_TO_CONVERT, PICKLE_SUFFIXES, InvalidModel, inspect_folder, read_gguf

log = logging.getLogger(__name__)

ACCEPTED = "a .zip or .tar.gz (.tgz) of a Hugging Face model folder (config.json, *.safetensors, tokenizer files), or a single .gguf file"
HASH_CHUNK = 4 * 1024 * 1024
STALE_STAGING_S = 24 * 3600  # a temp folder this old belongs to a process that died
HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
HUB_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$")


class ImportRefused(Exception):
    """Bad input, refused before anything is created. `status` is the HTTP status to answer."""

    def __init__(self, message: str, *, code: str = "invalid_upload", field: str = "file", status: int = 400):
        super().__init__(message)
        self.message, self.code, self.field, self.status = message, code, field, status


# --- storage ---------------------------------------------------------------------------------

def storage_dir(name: str) -> Path:
    path = Path(settings.TAUON_STORAGE) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def sweep_stale_staging(older_than_s: float = STALE_STAGING_S) -> None:
    """Remove what a killed process left behind (a normal exit always cleans up its own): temp
    folders, and version folders moved into place whose transaction never committed (no row)."""
    cutoff = time.time() - older_than_s
    old = [p for p in storage_dir("tmp").glob("import-*") if _mtime(p) < cutoff]
    candidates = {p.name: p for p in storage_dir("models").iterdir() if _mtime(p) < cutoff}
    if candidates:
        known = set(ModelVersion.objects.filter(storage_key__in=list(candidates)).values_list("storage_key", flat=True))
        old += [path for key, path in candidates.items() if key not in known]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


@contextmanager
def staging() -> Iterator[Path]:
    """A temp folder under TAUON_STORAGE/tmp (same filesystem as models/, so moving out of it is a
    rename), removed whatever happens."""
    sweep_stale_staging()
    path = Path(tempfile.mkdtemp(prefix="import-", dir=storage_dir("tmp")))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _authenticated(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) else None


def _create_version(model: Model, folder: Path | None, actor: Any, *, source: str, source_ref: str, fmt: str,
                    config: dict[str, Any], parent: ModelVersion | None, produced_by: Job | None = None,
                    job_params: dict[str, Any] | None = None, enqueue: bool = True) -> ModelVersion:
    """One transaction: the version row (next number under a lock on the model), its files moved
    into place, its import job and the audit record. On any failure the moved files go too."""
    key = uuid.uuid4().hex
    dest = storage_dir("models") / key
    try:
        with transaction.atomic():
            locked = Model.objects.select_for_update().get(pk=model.pk)
            version = ModelVersion.objects.create(
                model=locked, number=locked.next_version_number(), status=VersionStatus.IMPORTING, source=source,
                source_ref=source_ref[:300], storage_key=key, format=fmt, config=config, parent=parent,
                produced_by=produced_by, created_by=_authenticated(actor))
            if folder is not None:
                os.replace(folder, dest)
            params = {"version": version.pk, **(job_params or {})}
            job = (Job.enqueue("import", params, actor) if enqueue
                   else Job.objects.create(kind="import", params=params, created_by=_authenticated(actor)))
            version.import_job = job
            version.save(update_fields=["import_job"])
            record(actor, "version.create", version, model_name=locked.name, number=version.number, source=source,
                   source_ref=source_ref[:300], format=fmt, job=job.pk, parent=parent.number if parent else None)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return version


def _clean_config(config: dict[str, Any] | None) -> dict[str, Any]:
    from console.registry.config_schema import validate_config

    config = config or {}
    try:
        validate_config(config)
    except ValidationError as exc:
        raise ImportRefused(exc.message_dict["config"][0], code="invalid_config", field="config") from exc
    return config


def _check_parent(model: Model, parent: ModelVersion | None) -> None:
    if parent is not None and parent.model_id != model.pk:
        raise ImportRefused(f"The parent version {parent} belongs to another model; a parent must be a version of "
                            f"'{model.name}'.", code="invalid_parent", field="parent")


def _refused(exc: InvalidModel | archives.ArchiveRefused) -> ImportRefused:
    return ImportRefused(exc.message, code=exc.code, field="file")


def _stage_gguf(src: Any, tmp: Path, display_name: str) -> Path:
    """Copy a GGUF stream into tmp/model/source.gguf after checking its magic; validate its header."""
    head = src.read(4)
    if head != b"GGUF":
        raise ImportRefused(f"'{display_name}' is not a GGUF file (it does not start with the GGUF magic bytes). "
                            f"Upload a .gguf written by llama.cpp, or {ACCEPTED}.", code="invalid_gguf")
    folder = tmp / "model"
    folder.mkdir()
    with (folder / GGUF_NAME).open("xb") as out:
        out.write(head)
        shutil.copyfileobj(src, out, HASH_CHUNK)
    try:
        read_gguf(folder / GGUF_NAME, display_name)
    except InvalidModel as exc:
        raise _refused(exc) from exc
    return folder


# --- the three ways in ------------------------------------------------------------------------

def add_version_from_upload(model: Model, upload: UploadedFile, actor: Any, *, config: dict[str, Any] | None = None,
                            parent: ModelVersion | None = None) -> ModelVersion:
    """Validate an uploaded .zip/.tar.gz/.gguf synchronously, store it, create an `importing` version
    and enqueue its import job. Raise ImportRefused (leaving nothing behind) on bad input."""
    config = _clean_config(config)
    _check_parent(model, parent)
    name = upload.name or ""
    limit = settings.TAUON_MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise ImportRefused(f"'{name}' is {upload.size} bytes, over the upload limit of {limit} bytes "
                            f"(TAUON_MAX_UPLOAD_BYTES).", code="upload_too_large", status=413)
    suffix = Path(name.lower()).suffix
    if suffix in PICKLE_SUFFIXES:
        raise ImportRefused(f"'{name}' is a pickle checkpoint; Tauon accepts only safetensors and GGUF because "
                            f"loading a pickle can run arbitrary code. {HOW_TO_CONVERT}", code="pickle_refused")
    kind = "gguf" if suffix == ".gguf" else archives.kind_of(name)
    if kind is None:
        hint = " A single .safetensors file is not enough: zip it with its folder." if suffix == ".safetensors" else ""
        raise ImportRefused(f"'{name}' is not a file type Tauon imports. Upload {ACCEPTED}.{hint}",
                            code="unsupported_file_type")
    with staging() as tmp:
        upload.seek(0)
        if kind == "gguf":
            folder, fmt = _stage_gguf(upload, tmp, name), VersionFormat.GGUF
        else:
            (tmp / "x").mkdir()
            try:
                folder = archives.extract(upload, upload.size, kind, tmp / "x")
                inspect_folder(folder)
            except (archives.ArchiveRefused, InvalidModel) as exc:
                raise _refused(exc) from exc
            fmt = VersionFormat.SAFETENSORS
        return _create_version(model, folder, actor, source=VersionSource.UPLOAD, source_ref=name, fmt=fmt,
                               config=config, parent=parent)


def add_version_from_path(model: Model, path: Path, actor: Any, *, source: str = VersionSource.BUNDLED,
                          source_ref: str = "", config: dict[str, Any] | None = None,
                          parent: ModelVersion | None = None, produced_by: Job | None = None,
                          enqueue: bool = True) -> ModelVersion:
    """Register a model folder or .gguf file already on this machine (bundled packages, job outputs).
    The files are copied; the same checks as an upload apply. `enqueue=False` creates the import
    job without sending it, for a caller that runs it in-process."""
    config = _clean_config(config)
    _check_parent(model, parent)
    with staging() as tmp:
        if path.is_dir():
            folder = tmp / "model"
            shutil.copytree(path, folder, ignore=shutil.ignore_patterns("__pycache__"))
            originals = (GGUF_NAME,) if (folder / GGUF_NAME).is_file() else ()  # a GGUF job output keeps both
            try:
                inspect_folder(folder, originals=originals)
                if originals:
                    read_gguf(folder / GGUF_NAME, GGUF_NAME)
            except InvalidModel as exc:
                raise _refused(exc) from exc
            fmt = VersionFormat.GGUF if originals else VersionFormat.SAFETENSORS
        else:
            with path.open("rb") as src:
                folder = _stage_gguf(src, tmp, path.name)
            fmt = VersionFormat.GGUF
        return _create_version(model, folder, actor, source=source, source_ref=source_ref or path.name, fmt=fmt,
                               config=config, parent=parent, produced_by=produced_by, enqueue=enqueue)


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"} or bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str | None:
    """HF_ENDPOINT read now, not when huggingface_hub was imported (a mirror can be set per process)."""
    return os.environ.get("HF_ENDPOINT") or None


def _hub_model_info(hub_id: str, revision: str | None) -> Any:
    """HfApi.model_info with a hard bound: the call runs in a thread we stop waiting for."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    upload_instead = "Download the model where the hub is reachable and upload it as a .zip/.tar.gz or .gguf instead."
    if _hub_offline():
        raise ImportRefused(f"Cannot reach the Hugging Face hub: HF_HUB_OFFLINE is set on this server. {upload_instead}",
                            code="hub_unreachable", field="hub_id")
    timeout = settings.TAUON_HUB_TIMEOUT_S
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-info")
    future = pool.submit(HfApi(endpoint=hub_endpoint()).model_info, hub_id, revision=revision, timeout=timeout)
    try:
        return future.result(timeout=timeout + 1)
    except FutureTimeout as exc:
        raise ImportRefused(f"Cannot reach the Hugging Face hub: no answer within {timeout}s. {upload_instead}",
                            code="hub_unreachable", field="hub_id") from exc
    except GatedRepoError as exc:
        raise ImportRefused(f"'{hub_id}' is gated on the Hugging Face hub; accept its terms and configure a token "
                            f"(HF_TOKEN) on the server, or upload the files.", code="hub_gated", field="hub_id") from exc
    except RevisionNotFoundError as exc:
        raise ImportRefused(f"'{hub_id}' has no revision '{revision}' on the Hugging Face hub.",
                            code="hub_not_found", field="revision") from exc
    except RepositoryNotFoundError as exc:
        raise ImportRefused(f"There is no model '{hub_id}' on the Hugging Face hub (or it is private). Check the "
                            f"id, e.g. 'HuggingFaceTB/SmolLM2-135M-Instruct'.", code="hub_not_found",
                            field="hub_id") from exc
    except HfHubHTTPError as exc:
        raise ImportRefused(f"The Hugging Face hub answered with an error for '{hub_id}': {exc}",
                            code="hub_error", field="hub_id") from exc
    except Exception as exc:  # noqa: BLE001 - DNS, connection refused, TLS, proxy: all mean "unreachable"
        raise ImportRefused(f"Cannot reach the Hugging Face hub ({exc.__class__.__name__}: {exc}). {upload_instead}",
                            code="hub_unreachable", field="hub_id") from exc
    finally:
        pool.shutdown(wait=False)


def add_version_from_hub(model: Model, hub_id: str, actor: Any, *, revision: str | None = None,
                         config: dict[str, Any] | None = None) -> ModelVersion:
    """Check the hub is reachable and the repo exists (bounded timeout), then create an `importing`
    version whose job downloads safetensors + tokenizer files. ImportRefused when offline."""
    config = _clean_config(config)
    hub_id = (hub_id or "").strip()
    if not HUB_ID.match(hub_id) or ".." in hub_id or "--" in hub_id:
        raise ImportRefused(f"'{hub_id}' is not a Hugging Face model id; use the form 'owner/name', e.g. "
                            f"'HuggingFaceTB/SmolLM2-135M-Instruct'.", code="invalid_hub_id", field="hub_id")
    if revision is not None and (not HUB_REVISION.match(revision) or ".." in revision):
        raise ImportRefused(f"'{revision}' is not a valid revision; give a branch, tag or commit hash.",
                            code="invalid_hub_id", field="revision")
    info = _hub_model_info(hub_id, revision)
    files = [s.rfilename for s in (getattr(info, "siblings", None) or [])]
    if "config.json" not in files:
        raise ImportRefused(f"'{hub_id}' has no config.json, so it is not a transformers model Tauon can import.",
                            code="unsupported_hub_repo", field="hub_id")
    if not any(f.endswith(".safetensors") for f in files):
        raise ImportRefused(f"'{hub_id}' has no safetensors weights (only pickle or other formats); Tauon imports "
                            f"safetensors only. Pick a repository that has *.safetensors files.",
                            code="unsupported_hub_repo", field="hub_id")
    pinned = getattr(info, "sha", None) or revision or "main"
    return _create_version(model, None, actor, source=VersionSource.HUB, source_ref=f"{hub_id}@{pinned}",
                           fmt=VersionFormat.SAFETENSORS, config=config, parent=None,
                           job_params={"hub_id": hub_id, "revision": pinned})


# --- when an import job ends -------------------------------------------------------------------

def import_failed(job: Job) -> None:
    """on_failed hook of the `import` job kind: mark the version failed and delete its files."""
    version = ModelVersion.objects.select_related("model").filter(pk=(job.params or {}).get("version")).first()
    if version is None:
        return
    reason = job.error or ("The import was cancelled." if job.status == JobStatus.CANCELLED else "The import failed.")
    with transaction.atomic():
        failed = ModelVersion.objects.filter(pk=version.pk, status=VersionStatus.IMPORTING).update(
            status=VersionStatus.FAILED, status_reason=reason)
        if failed:
            record(None, "version.failed", version, model_name=version.model.name, number=version.number,
                   job=job.pk, reason=reason[:1000])
    if failed or version.status == VersionStatus.FAILED:
        shutil.rmtree(version.path, ignore_errors=True)


def fail_unimported(job: Job) -> None:
    """For the on_failed hook of a job that stores a version and imports it in-process (compress,
    finetune): a version it stored but never imported (its worker died in between) fails like a failed
    import, its files removed."""
    stored = ModelVersion.objects.filter(produced_by=job, status=VersionStatus.IMPORTING).select_related("import_job")
    for version in stored:
        if version.import_job is not None and version.import_job.fail(
                f"The {job} that produced this version ended ({job.status}) before importing it."):
            import_failed(version.import_job)
