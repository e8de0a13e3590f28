"""The import pipeline at the function level: what an upload creates, what the import job records,
and that every refusal leaves nothing behind (no row, no job, no files)."""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import socket
import struct
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from console.audit.models import AuditEvent
from console.jobs.models import Job
from console.registry import importing
from console.registry.importing import ImportRefused, add_version_from_hub, add_version_from_upload
from console.registry.models import Model, ModelVersion
from tests.ggufactory import CHAT_TEMPLATE as GGUF_CHAT_TEMPLATE
from tests.ggufactory import tiny_llama_gguf
from tests.modelfactory import CHAT_TEMPLATE, targz_dir, zip_dir
from workers.importing import run_import

pytestmark = pytest.mark.django_db


# --- helpers -------------------------------------------------------------------------------------

def storage_snapshot() -> set[str]:
    """Everything under TAUON_STORAGE/models and /tmp (the session shares one storage root)."""
    root = Path(settings.TAUON_STORAGE)
    return {f"{sub}/{p.name}" for sub in ("models", "tmp") if (root / sub).exists() for p in (root / sub).iterdir()}


def upload_of(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes())


def run_job_here(job: Job) -> Job:
    """What workers.tasks.run_job does, minus Celery: claim, run, finish or fail with the hook."""
    assert job.claim("test-process")
    try:
        job.succeed(run_import(job))
    except Exception as exc:  # noqa: BLE001 - recorded on the job like the worker does
        job.fail(f"{exc.__class__.__name__}: {exc}")
        importing.import_failed(job)
    job.refresh_from_db()
    return job


@pytest.fixture(scope="module")
def llama_zip(llama_dir, tmp_path_factory) -> Path:
    return zip_dir(llama_dir, tmp_path_factory.mktemp("zip") / "tiny-llama.zip")


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    return path, tiny_llama_gguf(path)


def assert_refused(call, code: str, says: str, *, status: int = 400, field: str = "file") -> ImportRefused:  # type: ignore[no-untyped-def]
    before = storage_snapshot()
    with pytest.raises(ImportRefused) as info:
        call()
    exc = info.value
    assert (exc.code, exc.status, exc.field) == (code, status, field), exc.message
    assert says.lower() in exc.message.lower(), exc.message
    assert not ModelVersion.objects.exists() and not Job.objects.exists()
    assert storage_snapshot() == before
    return exc


# --- what an upload creates ------------------------------------------------------------------------

def test_an_uploaded_zip_becomes_an_importing_version_with_its_files_in_place(llm, bob, llama_zip):
    before = storage_snapshot()
    version = add_version_from_upload(llm, upload_of(llama_zip), bob)
    assert (version.number, version.status, version.source, version.format) == (1, "importing", "upload", "safetensors")
    assert version.source_ref == "tiny-llama.zip" and version.created_by == bob
    assert len(version.storage_key) == 32 and version.path == Path(settings.TAUON_STORAGE) / "models" / version.storage_key
    assert (version.path / "config.json").is_file() and (version.path / "model.safetensors").is_file()
    assert storage_snapshot() - before == {f"models/{version.storage_key}"}  # and no temp folder left
    job = version.import_job
    assert job.kind == "import" and job.params == {"version": version.pk} and job.status == "queued" and job.created_by == bob
    event = AuditEvent.objects.get(action="version.create")
    assert event.actor == bob and event.model_name == "tiny-llm" and event.data["number"] == 1


def test_the_import_job_hashes_inspects_and_marks_the_version_ready(llm, bob, llama_dir, llama_zip):
    from transformers import AutoModelForCausalLM

    version = add_version_from_upload(llm, upload_of(llama_zip), bob)
    job = run_job_here(version.import_job)
    assert job.status == "succeeded", job.error
    version.refresh_from_db()
    assert version.status == "ready" and version.status_reason == ""
    expected = {p.relative_to(llama_dir).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in llama_dir.rglob("*") if p.is_file()}
    assert {f["path"]: f["sha256"] for f in version.files} == expected
    assert version.total_size == sum(p.stat().st_size for p in llama_dir.rglob("*") if p.is_file())
    source = AutoModelForCausalLM.from_pretrained(llama_dir)
    assert version.parameter_count == sum(p.numel() for p in source.parameters())
    assert (version.architecture, version.dtype, version.has_tokenizer) == ("LlamaForCausalLM", "float32", True)
    assert version.chat_template == CHAT_TEMPLATE
    assert job.result["parameter_count"] == version.parameter_count and job.progress == 1.0
    assert AuditEvent.objects.filter(action="version.ready", target_id=str(version.pk)).exists()


def test_versions_are_numbered_in_order_and_can_name_a_parent(llm, bob, llama_zip):
    first = add_version_from_upload(llm, upload_of(llama_zip), bob)
    second = add_version_from_upload(llm, upload_of(llama_zip), bob, parent=first, config={"sampling": {"temperature": 0.2}})
    assert (first.number, second.number) == (1, 2)
    assert second.parent == first and second.config == {"sampling": {"temperature": 0.2}}


def test_a_tar_gz_with_a_top_folder_is_accepted(llm, bob, llama_dir, tmp_path):
    archive = targz_dir(llama_dir, tmp_path / "tiny.tar.gz", prefix="tiny-llama/")
    version = add_version_from_upload(llm, upload_of(archive), bob)
    assert (version.path / "config.json").is_file() and not (version.path / "tiny-llama").exists()
    assert run_job_here(version.import_job).status == "succeeded"


def test_a_gguf_upload_is_converted_once_into_safetensors_that_load_fast_and_match(llm, bob, tiny_gguf):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, source = tiny_gguf
    version = add_version_from_upload(llm, upload_of(path), bob)
    assert version.format == "gguf" and [p.name for p in version.path.iterdir()] == ["source.gguf"]
    job = run_job_here(version.import_job)
    assert job.status == "succeeded", job.error
    version.refresh_from_db()
    names = {f["path"] for f in version.files}
    assert {"source.gguf", "config.json", "model.safetensors", "tokenizer.json"} <= names
    assert version.architecture == "LlamaForCausalLM" and version.has_tokenizer
    assert version.chat_template == GGUF_CHAT_TEMPLATE
    assert version.parameter_count == sum(p.numel() for p in source.parameters())
    assert "convert_seconds" in job.result
    config = json.loads((version.path / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF quantizer was dropped before saving

    started = time.perf_counter()
    loaded = AutoModelForCausalLM.from_pretrained(version.path)
    assert time.perf_counter() - started < 1.0
    tokenizer = AutoTokenizer.from_pretrained(version.path)
    ids = tokenizer("hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, source.eval()(ids).logits)


# --- refusals: each leaves nothing ---------------------------------------------------------------

def folder_zip(tmp_path: Path, llama_dir: Path, change) -> SimpleUploadedFile:  # type: ignore[no-untyped-def]
    import shutil

    folder = tmp_path / "m"
    shutil.copytree(llama_dir, folder)
    change(folder)
    return upload_of(zip_dir(folder, tmp_path / "m.zip"))


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def edit_json(path: Path, **changes) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(("change", "code", "says"), [
    (lambda d: (d / "pytorch_model.bin").write_bytes(pickle.dumps({"w": 1}, protocol=2)), "pickle_refused", "pickle checkpoint"),
    (lambda d: (d / "extra.safetensors").write_bytes(pickle.dumps({"w": 1}, protocol=4)), "pickle_refused", "is a Python pickle"),
    (lambda d: (d / "config.json").unlink(), "missing_config", "no config.json"),
    (lambda d: edit_json(d / "config.json", auto_map={"AutoModel": "modeling_x.X"}), "remote_code_refused", "auto_map"),
    (lambda d: edit_json(d / "tokenizer_config.json", auto_map={"AutoTokenizer": ["t.T", None]}), "remote_code_refused", "auto_map"),
    (lambda d: truncate(d / "model.safetensors", 5000), "truncated_safetensors", "incomplete"),
    (lambda d: truncate(d / "model.safetensors", 4), "truncated_safetensors", "too short"),
    (lambda d: (d / "model.safetensors").unlink(), "missing_weights", "no *.safetensors"),
    (lambda d: (d / "config.json").write_text("{not json"), "invalid_config", "not valid JSON"),
], ids=["pickle-bin", "pickle-in-disguise", "no-config", "auto-map", "tokenizer-auto-map", "truncated",
        "truncated-header", "no-weights", "bad-json"])
def test_a_bad_model_folder_is_refused_and_leaves_nothing(llm, bob, llama_dir, tmp_path, change, code, says):
    upload = folder_zip(tmp_path, llama_dir, change)
    assert_refused(lambda: add_version_from_upload(llm, upload, bob), code, says)


@pytest.mark.parametrize(("name", "content", "code", "says"), [
    ("model.bin", pickle.dumps({"w": 1}), "pickle_refused", "only safetensors and GGUF"),
    ("model.pt", b"PK\x03\x04", "pickle_refused", "pickle checkpoint"),
    ("weights.pkl", pickle.dumps([1]), "pickle_refused", "arbitrary code"),
    ("notes.txt", b"hello", "unsupported_file_type", "not a file type Tauon imports"),
    ("model.safetensors", b"\x00" * 16, "unsupported_file_type", "zip it with its folder"),
    ("model.gguf", b"NOPE" + b"\x00" * 100, "invalid_gguf", "GGUF magic"),
    ("model.zip", b"not a zip", "invalid_archive", "not a valid zip"),
])
def test_a_bad_file_is_refused_and_leaves_nothing(llm, bob, name, content, code, says):
    assert_refused(lambda: add_version_from_upload(llm, SimpleUploadedFile(name, content), bob), code, says)


def test_a_truncated_gguf_is_refused(llm, bob, tiny_gguf):
    data = tiny_gguf[0].read_bytes()
    for keep in (len(data) - 100, 2000, 10):
        upload = SimpleUploadedFile("cut.gguf", data[:keep])
        assert_refused(lambda u=upload: add_version_from_upload(llm, u, bob), "truncated_gguf", "incomplete")


def test_an_old_gguf_version_is_refused(llm, bob):
    upload = SimpleUploadedFile("old.gguf", b"GGUF" + struct.pack("<I", 1) + b"\x00" * 64)
    assert_refused(lambda: add_version_from_upload(llm, upload, bob), "invalid_gguf", "version 1")


def test_an_upload_over_the_size_limit_is_refused_with_413(llm, bob, llama_zip, settings):
    settings.TAUON_MAX_UPLOAD_BYTES = 1000
    assert_refused(lambda: add_version_from_upload(llm, upload_of(llama_zip), bob), "upload_too_large",
                   "TAUON_MAX_UPLOAD_BYTES", status=413)


def test_an_invalid_config_is_refused(llm, bob, llama_zip):
    assert_refused(lambda: add_version_from_upload(llm, upload_of(llama_zip), bob, config={"sampling": {"top_p": 5}}),
                   "invalid_config", "top_p", field="config")


def test_a_parent_from_another_model_is_refused(llm, bob, llama_zip):
    other = Model.objects.create(name="other", task="text-generation")
    parent = ModelVersion.objects.create(model=other, number=1, source="upload", storage_key="0" * 32, status="ready")
    before = storage_snapshot()
    with pytest.raises(ImportRefused) as info:
        add_version_from_upload(llm, upload_of(llama_zip), bob, parent=parent)
    assert info.value.field == "parent" and "another model" in info.value.message
    assert not llm.versions.exists() and storage_snapshot() == before


def test_a_failure_inside_the_transaction_leaves_no_row_no_job_and_no_files(llm, bob, llama_zip, monkeypatch):
    def broken_audit(*args, **kwargs):  # noqa: ANN002, ANN003
        raise RuntimeError("audit store unavailable")

    monkeypatch.setattr(importing, "record", broken_audit)
    before = storage_snapshot()
    with pytest.raises(RuntimeError, match="audit store unavailable"):
        add_version_from_upload(llm, upload_of(llama_zip), bob)
    assert not ModelVersion.objects.exists() and not Job.objects.exists()
    assert storage_snapshot() == before


# --- a failing import job -------------------------------------------------------------------------

def test_a_failed_import_marks_the_version_failed_with_the_reason_and_deletes_its_files(llm, bob, llama_zip):
    version = add_version_from_upload(llm, upload_of(llama_zip), bob)
    truncate(version.path / "model.safetensors", 1000)  # the disk lost data between upload and import
    job = run_job_here(version.import_job)
    version.refresh_from_db()
    assert job.status == "failed" and version.status == "failed"
    assert "model.safetensors" in version.status_reason and "incomplete" in version.status_reason
    assert not version.path.exists()
    assert AuditEvent.objects.filter(action="version.failed", target_id=str(version.pk)).exists()


def test_a_cancelled_import_leaves_a_failed_version_without_files(llm, bob, llama_zip):
    version = add_version_from_upload(llm, upload_of(llama_zip), bob)
    job = version.import_job
    assert job.request_cancel()
    importing.import_failed(job)
    version.refresh_from_db()
    assert version.status == "failed" and "cancelled" in version.status_reason and not version.path.exists()


# --- the hub -------------------------------------------------------------------------------------

@pytest.mark.parametrize("hub_id", ["", "not a repo", "../etc/passwd", "a/b/c", "owner/-name", "x" * 200])
def test_a_malformed_hub_id_is_refused(llm, bob, hub_id):
    assert_refused(lambda: add_version_from_hub(llm, hub_id, bob), "invalid_hub_id", "not a Hugging Face model id",
                   field="hub_id")


def test_a_hub_id_while_hf_hub_offline_is_set_is_refused_at_once(llm, bob, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    assert_refused(lambda: add_version_from_hub(llm, "HuggingFaceTB/SmolLM2-135M-Instruct", bob), "hub_unreachable",
                   "Cannot reach the Hugging Face hub", field="hub_id")
    assert time.monotonic() - started < 1


def test_a_hub_that_never_answers_is_given_up_on_within_the_timeout(llm, bob, monkeypatch, settings):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections into the backlog, never answers
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    settings.TAUON_HUB_TIMEOUT_S = 1
    started = time.monotonic()
    try:
        assert_refused(lambda: add_version_from_hub(llm, "owner/model", bob), "hub_unreachable",
                       "Cannot reach the Hugging Face hub", field="hub_id")
    finally:
        silent.close()
    assert time.monotonic() - started < 4


def test_a_hub_id_without_network_is_refused_quickly(llm, bob, monkeypatch, settings):
    """This machine has no internet: the real endpoint fails fast. (Online, the repo below does not exist.)"""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    settings.TAUON_HUB_TIMEOUT_S = 3
    started = time.monotonic()
    before = storage_snapshot()
    with pytest.raises(ImportRefused) as info:
        add_version_from_hub(llm, "tauon-tests/no-such-model-0000", bob)
    assert info.value.code in {"hub_unreachable", "hub_not_found"} and info.value.status == 400
    assert time.monotonic() - started < 5
    assert not ModelVersion.objects.exists() and storage_snapshot() == before


def test_temp_folders_left_by_a_killed_process_are_swept_on_the_next_import(llm, bob, llama_zip):
    import os

    stale = Path(settings.TAUON_STORAGE) / "tmp" / "import-killed"
    (stale / "x").mkdir(parents=True)
    os.utime(stale, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    add_version_from_upload(llm, upload_of(llama_zip), bob)
    assert not stale.exists()


def test_a_version_folder_whose_transaction_never_committed_is_swept_but_real_versions_stay(llm, bob, llama_zip):
    import os

    kept = add_version_from_upload(llm, upload_of(llama_zip), bob)
    orphan = Path(settings.TAUON_STORAGE) / "models" / "0123456789abcdef0123456789abcdef"
    (orphan / "model.safetensors").parent.mkdir(parents=True)
    (orphan / "model.safetensors").write_bytes(b"x")
    long_ago = time.time() - 3 * 86400
    os.utime(orphan, (long_ago, long_ago))
    os.utime(kept.path, (long_ago, long_ago))
    try:
        add_version_from_upload(llm, upload_of(llama_zip), bob)
        assert not orphan.exists()
        assert (kept.path / "config.json").exists()
    finally:  # this test's rows roll back; its folders must not look like old orphans to later tests
        shutil.rmtree(orphan, ignore_errors=True)
        shutil.rmtree(kept.path, ignore_errors=True)
