"""/api/models/{name}/versions/: list, read, edit the config, and add versions (multipart upload or hub id).

Bad archives and files are covered in test_upload_api.py; here: the API's own checks, the mapping of an
import refusal to the error body, and one real upload through a real worker."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from console.audit.models import AuditEvent
from console.jobs.models import Job
from console.registry.models import Alias, ModelVersion
from tests.api_rows import error_of, make_model, make_version
from tests.conftest import wait_for
from tests.modelfactory import tiny_llama_dir, zip_dir

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny(bob):
    return make_model("tiny", owner=bob)


def test_versions_are_listed_newest_first_without_storage_internals(tiny, user_api):
    for _ in range(3):
        make_version(tiny)
    body = user_api.get("/api/models/tiny/versions/?page_size=2").json()
    assert body["count"] == 3 and [v["number"] for v in body["results"]] == [3, 2] and body["next"]
    assert "storage_key" not in body["results"][0] and "path" not in body["results"][0]


def test_versions_filter_by_status(tiny, user_api):
    make_version(tiny)
    make_version(tiny, status="failed", status_reason="truncated safetensors")
    body = user_api.get("/api/models/tiny/versions/?status=failed").json()
    assert [(v["number"], v["status_reason"]) for v in body["results"]] == [(2, "truncated safetensors")]


def test_a_version_shows_its_metadata_lineage_job_and_aliases(tiny, bob, user_api):
    parent = make_version(tiny)
    job = Job.objects.create(kind="import", created_by=bob, status="succeeded", progress=1.0)
    child = make_version(tiny, parent=parent, produced_by=job, import_job=job, created_by=bob,
                         config={"sampling": {"temperature": 0.2}}, chat_template="{{ messages }}")
    Alias.move(tiny, "staging", child, bob)
    body = user_api.get("/api/models/tiny/versions/2/").json()
    expected = {
        "model": "tiny", "number": 2, "status": "ready", "source": "upload", "source_ref": "tiny.zip",
        "format": "safetensors", "files": [{"path": "model.safetensors", "size": 1234, "sha256": "ab" * 32}],
        "total_size": 1234, "architecture": "LlamaForCausalLM", "parameter_count": 1_000_000, "dtype": "float32",
        "has_tokenizer": True, "chat_template": "{{ messages }}", "config": {"sampling": {"temperature": 0.2}},
        "parent": 1, "produced_by": job.pk, "created_by": "bob", "aliases": ["staging"],
        "import_job": {"id": job.pk, "status": "succeeded", "progress": 1.0, "progress_message": "", "error": ""}}
    assert {key: body[key] for key in expected} == expected


def test_an_unknown_version_or_model_is_a_404_naming_it(tiny, user_api):
    assert error_of(user_api.get("/api/models/tiny/versions/9/"), 404)["message"] == "Model 'tiny' has no version 9."
    assert error_of(user_api.get("/api/models/nope/versions/"), 404)["message"] == "No model named 'nope'."


def test_a_maintainer_edits_the_config_and_it_is_audited_with_old_and_new(tiny, bob, maintainer_api):
    make_version(tiny, config={"notes": "old"})
    new = {"sampling": {"temperature": 0.7, "max_tokens": 64}, "batching": {"max_num_seqs": 8}}
    response = maintainer_api.patch("/api/models/tiny/versions/1/", {"config": new}, format="json")
    assert response.status_code == 200 and response.json()["config"] == new
    assert ModelVersion.objects.get().config == new
    event = AuditEvent.objects.get(action="version.config")
    assert (event.actor, event.model_name, event.data) == (bob, "tiny", {"old": {"notes": "old"}, "new": new})


@pytest.mark.parametrize(("config", "message"), [
    ({"sampling": {"temperature": 9}}, "config sampling/temperature: 9 is greater than the maximum of 2"),
    ({"batching": {"max_num_seqs": "many"}}, "config batching/max_num_seqs: 'many' is not of type 'integer'"),
    ({"temprature": 0.5}, "config (top level): Additional properties are not allowed ('temprature' was unexpected)"),
    (["not", "an", "object"], "config (top level): ['not', 'an', 'object'] is not of type 'object'"),
])
def test_an_invalid_config_is_refused_with_the_path_of_the_problem(tiny, maintainer_api, config, message):
    make_version(tiny, config={"notes": "kept"})
    error = error_of(maintainer_api.patch("/api/models/tiny/versions/1/", {"config": config}, format="json"), 400)
    assert (error["field"], error["message"]) == ("config", message)
    assert ModelVersion.objects.get().config == {"notes": "kept"} and not AuditEvent.objects.exists()


def test_a_config_edit_without_a_config_is_refused(tiny, maintainer_api):
    make_version(tiny)
    error = error_of(maintainer_api.patch("/api/models/tiny/versions/1/", {"notes": "x"}, format="json"), 400)
    assert error == {"code": "required", "field": "config", "message": "This field is required."}


def upload(name: str = "tiny.zip", content: bytes = b"PK\x05\x06" + b"\0" * 18) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def stored_files(storage_root: Path) -> set[Path]:
    return set(storage_root.rglob("*"))


@pytest.mark.parametrize(("form", "field", "says"), [
    ({}, "file", "No file was submitted."),
    ({"file": "x", "config": "{temperature: 1}"}, "config", "config is not valid JSON"),
    ({"file": "x", "config": '{"sampling": {"top_p": 0}}'}, "config", "config sampling/top_p: 0 is less than"),
    ({"file": "x", "parent": "first"}, "parent", "A valid integer is required."),
])
def test_an_upload_with_bad_fields_is_refused_before_anything_is_stored(tiny, maintainer_api, storage_root, form,
                                                                        field, says):
    if "file" in form:
        form["file"] = upload()
    before = stored_files(storage_root)
    error = error_of(maintainer_api.post("/api/models/tiny/versions/", form, format="multipart"), 400)
    assert error["field"] == field and says in error["message"], error
    assert not ModelVersion.objects.exists() and not Job.objects.exists()
    assert stored_files(storage_root) == before


def test_an_upload_naming_a_parent_that_does_not_exist_is_a_404_and_nothing_is_stored(tiny, maintainer_api,
                                                                                     storage_root):
    before = stored_files(storage_root)
    form = {"file": upload(), "parent": "7"}
    error = error_of(maintainer_api.post("/api/models/tiny/versions/", form, format="multipart"), 404)
    assert error["field"] == "parent" and "Model 'tiny' has no version 7" in error["message"], error
    assert not ModelVersion.objects.exists() and not Job.objects.exists()
    assert stored_files(storage_root) == before


def test_an_import_refusal_becomes_the_error_body_with_its_status_code_and_field(tiny, maintainer_api, storage_root):
    before = stored_files(storage_root)
    form = {"file": upload("model.pkl", b"\x80\x04pickle"), "parent": "", "config": ""}  # blank form fields: absent
    response = maintainer_api.post("/api/models/tiny/versions/", form, format="multipart")
    error = error_of(response, 400)
    assert (error["code"], error["field"]) == ("pickle_refused", "file") and "pickle" in error["message"]
    assert not ModelVersion.objects.exists() and stored_files(storage_root) == before


def test_a_hub_import_needs_a_hub_id(tiny, maintainer_api):
    error = error_of(maintainer_api.post("/api/models/tiny/versions/", {"revision": "main"}, format="json"), 400)
    assert error == {"code": "required", "field": "hub_id", "message": "This field is required."}


def test_a_hub_import_refusal_becomes_the_error_body(tiny, maintainer_api):
    response = maintainer_api.post("/api/models/tiny/versions/", {"hub_id": "not a hub id"}, format="json")
    error = error_of(response, 400)
    assert (error["code"], error["field"]) == ("invalid_hub_id", "hub_id") and "owner/name" in error["message"]
    assert not ModelVersion.objects.exists()


def test_a_form_encoded_body_is_refused_as_unsupported(tiny, maintainer_api):
    response = maintainer_api.post("/api/models/tiny/versions/", "hub_id=x",
                                   content_type="application/x-www-form-urlencoded")
    assert error_of(response, 415)["code"] == "unsupported_media_type"


def test_a_version_cannot_be_added_to_an_unknown_model(maintainer_api):
    response = maintainer_api.post("/api/models/nope/versions/", {"file": upload()}, format="multipart")
    assert error_of(response, 404)["message"] == "No model named 'nope'."


@pytest.mark.django_db(transaction=True)
def test_an_uploaded_model_is_imported_by_a_worker_and_a_child_names_its_parent(celery_worker, bob, maintainer_api,
                                                                                 tmp_path):
    make_model("tiny", owner=bob)
    folder = tiny_llama_dir(tmp_path / "tiny")
    archive = zip_dir(folder, tmp_path / "tiny.zip")

    def post(**fields: str) -> dict:
        with archive.open("rb") as fh:
            response = maintainer_api.post("/api/models/tiny/versions/", {"file": fh, **fields}, format="multipart")
        assert response.status_code == 202, response.content
        return response.json()

    def when_done(number: int) -> dict:
        def done() -> dict | None:  # the job ends just after it marks the version: wait for both
            body = maintainer_api.get(f"/api/models/tiny/versions/{number}/").json()
            ended = body["import_job"]["status"] not in ("queued", "running")
            return body if body["status"] != "importing" and ended else None
        return wait_for(done, 120, what=f"version {number} import")

    first = post()
    assert (first["number"], first["status"], first["source"], first["created_by"]) == (1, "importing", "upload", "bob")
    assert first["import_job"]["id"] and first["import_job"]["status"] in ("queued", "running", "succeeded")
    v1 = when_done(1)
    assert v1["status"] == "ready", v1["status_reason"] + celery_worker.log()[-3000:]
    assert (v1["format"], v1["architecture"], v1["has_tokenizer"]) == ("safetensors", "LlamaForCausalLM", True)
    assert v1["parameter_count"] > 0 and v1["chat_template"] and v1["import_job"]["status"] == "succeeded"
    stored = {f["path"]: f for f in v1["files"]}
    weights = (folder / "model.safetensors").read_bytes()
    assert stored["model.safetensors"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert v1["total_size"] == sum(f["size"] for f in v1["files"])

    config = {"sampling": {"temperature": 0.3}}
    second = post(parent="1", config=json.dumps(config))
    assert (second["number"], second["parent"], second["config"]) == (2, 1, config)
    assert when_done(2)["status"] == "ready"
    jobs = maintainer_api.get("/api/jobs/?kind=import&status=succeeded").json()
    assert jobs["count"] == 2
