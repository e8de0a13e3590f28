"""Compression jobs through POST /api/jobs/: a Wanda-pruned child version of the tiny Llama with its
lineage and recipe, evaluated against its parent on a real worker; bad input refused with a 400 and
no job created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from console.evaluation.models import Dataset, DatasetVersion, EvaluationResult
from console.jobs.models import Job
from engine.compress import folder_stats
from tests.api_rows import make_model
from tests.conftest import wait_for
from tests.serving_rows import stored_version
from tests.test_evaluation_jobs import FAST, ended

pytestmark = pytest.mark.django_db(transaction=True)


def as_imported(folder: Path) -> dict[str, int]:
    stats = folder_stats(folder)
    return {"parameter_count": stats["parameters"], "total_size": stats["size_bytes"]}


def post(api: Any, params: dict[str, Any]) -> Any:
    return api.post("/api/jobs/", {"kind": "compress", "params": params}, format="json")


def test_a_wanda_compression_creates_a_child_version_with_lineage_and_compares_it_with_its_parent(
        celery_worker, bob, maintainer_api, llama_dir):
    call_command("import_datasets")
    model = make_model("tiny", owner=bob)
    stored_version(model, llama_dir, architecture="LlamaForCausalLM", **as_imported(llama_dir))
    response = post(maintainer_api, {"model": "tiny", "version": 1, "method": "wanda", "sparsity": 0.5,
                                     "calibration_dataset": "plain-english", "dataset": "plain-english",
                                     "config": FAST})
    assert response.status_code == 202, response.content
    done = ended(Job.objects.get(pk=response.json()["id"]))
    assert done.status == "succeeded", done.error + celery_worker.log()[-3000:]
    result = done.result
    assert result["child"] == 2 and result["sparsity"] == pytest.approx(0.5, abs=0.01)
    child = model.versions.get(number=2)
    assert child.status == "ready" and child.parent.number == 1 and child.produced_by_id == done.pk
    assert child.source == "job"
    assert child.config["compression"]["method"] == "wanda"
    assert child.config["compression"]["recipe"]["sparsity"] == 0.5
    assert child.config["compression"]["calibration_dataset"] == "plain-english"
    assert all(s == pytest.approx(0.5, abs=0.01) for s in child.config["compression"]["layer_sparsity"].values())
    comparison = result["comparison"]
    assert comparison["parameter_count"]["ratio"] == 1.0  # zeros are stored: the same parameters
    assert comparison["perplexity"]["child"] != comparison["perplexity"]["parent"]
    assert comparison["tokens_per_s"]["ratio"] > 0 and "peak_memory_bytes" in comparison
    assert comparison["size_bytes"]["ratio"] == pytest.approx(1.0, abs=0.05)  # and the same size on disk
    rows = EvaluationResult.objects.filter(job=done).order_by("version__number")
    assert [r.version.number for r in rows] == [1, 2]
    browser = Client()
    browser.force_login(bob)
    page = browser.get(f"/models/{model.name}/")
    assert page.status_code == 200
    assert f"compress job #{done.pk}" in page.content.decode()  # the lineage tree names the producing job


def test_an_int8_compression_stores_a_quarter_size_child_that_the_engine_serves_close_to_its_parent(
        celery_worker, bob, maintainer_api, llama_dir):
    call_command("import_datasets")
    model = make_model("tiny", owner=bob)
    stored_version(model, llama_dir, architecture="LlamaForCausalLM", **as_imported(llama_dir))
    response = post(maintainer_api, {"model": "tiny", "version": 1, "method": "int8", "dataset": "plain-english",
                                     "config": FAST})
    assert response.status_code == 202, response.content
    done = ended(Job.objects.get(pk=response.json()["id"]))
    assert done.status == "succeeded", done.error + celery_worker.log()[-3000:]
    child = model.versions.get(number=done.result["child"])
    assert child.status == "ready" and child.parent.number == 1
    assert child.config["compression"]["recipe"]["format"] == "tauon-int8/1"
    comparison = done.result["comparison"]
    weights = lambda folder: (Path(folder) / "model.safetensors").stat().st_size  # noqa: E731
    assert weights(child.path) < 0.3 * weights(llama_dir)  # int8 rows and embeddings, float scales and norms
    assert comparison["size_bytes"]["ratio"] < 0.5  # the tokenizer files (same in both) weigh on a tiny model
    # evaluated through the engine's own load of the stored int8 layers (the serving path)
    assert comparison["perplexity"]["ratio"] == pytest.approx(1.0, abs=0.02)


@pytest.mark.slow
def test_a_gguf_q4_0_compression_stores_a_gguf_child_with_lineage_that_llamacpp_serves(
        celery_worker, bob, maintainer_api, smollm2_dir):
    from engine import Engine, EngineConfig
    from engine.inspect import GGUF_NAME

    model = make_model("small", owner=bob)
    stored_version(model, smollm2_dir, architecture="LlamaForCausalLM", **as_imported(smollm2_dir))
    response = post(maintainer_api, {"model": "small", "version": 1, "method": "gguf-q4_0"})
    assert response.status_code == 202, response.content
    done = ended(Job.objects.get(pk=response.json()["id"]))
    assert done.status == "succeeded", done.error + celery_worker.log()[-3000:]
    child = model.versions.get(number=done.result["child"])
    assert (child.status, child.format, child.parent.number, child.produced_by_id) == ("ready", "gguf", 1, done.pk)
    assert child.config["compression"]["recipe"]["type"] == "Q4_0"
    assert {f["path"] for f in child.files} >= {GGUF_NAME, "model.safetensors", "tokenizer.json"}
    assert done.result["comparison"]["served_bytes"]["ratio"] <= 0.2  # the GGUF against the fp32 weights
    engine = Engine.from_pretrained(child.path, EngineConfig(threads=1, max_num_seqs=2, kv_cache_bytes=32 << 20))
    try:
        assert engine.runtime == "llamacpp"
    finally:
        engine.close()


def test_a_compression_cancelled_while_it_compares_leaves_no_child_and_no_staging_files(
        celery_worker, bob, maintainer_api, llama_dir):
    from console.registry.importing import storage_dir

    call_command("import_datasets")
    model = make_model("tiny", owner=bob)
    stored_version(model, llama_dir, architecture="LlamaForCausalLM", **as_imported(llama_dir))
    staged_before = set(storage_dir("tmp").iterdir()) if storage_dir("tmp").is_dir() else set()
    slow = {**FAST, "stride": 1}  # a perplexity window per token: long enough to cancel half way
    response = post(maintainer_api, {"model": "tiny", "version": 1, "method": "fp16", "dataset": "plain-english",
                                     "config": slow})
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    wait_for(lambda: Job.objects.filter(pk=job.pk, status="running", progress_message__startswith="evaluating")
             .exists(), 120, what="the comparison to be under way")
    assert maintainer_api.post(f"/api/jobs/{job.pk}/cancel").status_code == 202
    done = ended(job, timeout=30)
    assert done.status == "cancelled", (done.status, done.error)
    assert list(model.versions.values_list("number", flat=True)) == [1]  # no child, not even a failed one
    assert not EvaluationResult.objects.filter(job=done).exists()
    staged_after = set(storage_dir("tmp").iterdir()) if storage_dir("tmp").is_dir() else set()
    assert staged_after <= staged_before  # the staged child folder is gone


def test_bad_compression_params_are_refused_with_a_400_and_no_job(bob, maintainer_api, llama_dir, tmp_path):
    from engine.compress import compress_folder
    from tests.engine.conftest import build_tiny_gpt2

    call_command("import_datasets")
    stored_version(make_model("tiny", owner=bob), llama_dir, architecture="LlamaForCausalLM")
    stored_version(make_model("gpt", owner=bob), build_tiny_gpt2(tmp_path / "gpt2"), architecture="GPT2LMHeadModel")
    compress_folder(llama_dir, tmp_path / "int8", "int8")
    stored_version(make_model("tiny-int8", owner=bob), tmp_path / "int8", architecture="LlamaForCausalLM")
    cases = [
        ({"model": "tiny", "version": 1, "method": "magnitude", "sparsity": 0}, "sparsity"),
        ({"model": "tiny", "version": 1, "method": "magnitude", "sparsity": 1.0}, "sparsity"),
        ({"model": "tiny", "version": 1, "method": "magnitude", "sparsity": -0.3}, "sparsity"),
        ({"model": "tiny", "version": 1, "method": "sparsegpt"}, "method"),
        ({"model": "tiny", "version": 1, "method": "magnitude", "structure": "4:8"}, "structure"),
        ({"model": "gpt", "version": 1, "method": "wanda", "sparsity": 0.5}, "method"),
        ({"model": "tiny", "version": 1, "method": "wanda", "calibration_dataset": "simple-qa"},
         "calibration_dataset"),
        ({"model": "tiny", "version": 9, "method": "fp16"}, "version"),
        ({"model": "tiny", "version": 1, "method": "fp16", "sparsity": 0.5}, "sparsity"),
        ({"model": "gpt", "version": 1, "method": "int8"}, "Llama-family"),
        ({"model": "tiny-int8", "version": 1, "method": "wanda", "sparsity": 0.5}, "already stored as int8"),
        ({"model": "tiny", "version": 1, "method": "w8a8", "calibration_dataset": "simple-qa"},
         "calibration_dataset"),
        ({"model": "tiny", "version": 1, "method": "int8", "calibration_dataset": "plain-english"},
         "calibration_dataset"),
        ({"model": "tiny", "version": 1, "method": "w8a8", "calibration_dataset": "no-such-text"},
         "calibration_dataset"),
        ({"model": "tiny", "version": 1, "method": "w8a8", "calibration_dataset": "plain-english",
          "calibration_dataset_version": 9}, "calibration_dataset_version"),
        ({"model": "tiny", "version": 1, "method": "w8a8", "calibration_dataset_version": 1},
         "calibration_dataset_version"),
        ({"model": "tiny", "version": 1, "method": "fp16", "dataset": "plain-english", "dataset_version": "1"},
         "dataset_version"),
        ({"model": "tiny", "version": 1, "method": "fp16", "dataset_version": 1}, "dataset_version"),
    ]
    for params, field in cases:
        response = post(maintainer_api, params)
        assert response.status_code == 400, (params, response.content)
        assert field in response.content.decode(), (params, response.content)
    assert Job.objects.filter(kind="compress").count() == 0


@pytest.mark.django_db  # not transactional: the job is never sent; its body runs here, after the upload
def test_a_compression_reads_the_dataset_versions_pinned_at_submission_not_one_added_later(bob, llama_dir):
    from workers.compression import compress

    call_command("import_datasets")
    model = make_model("tiny", owner=bob)
    stored_version(model, llama_dir, architecture="LlamaForCausalLM", **as_imported(llama_dir))
    submitted = Dataset.objects.get(name="plain-english").latest
    job = Job.start("compress", {"model": "tiny", "version": 1, "method": "wanda", "sparsity": 0.5,
                                 "calibration_dataset": "plain-english", "dataset": "plain-english",
                                 "config": FAST}, bob)
    assert job.params["calibration_dataset_version"] == job.params["dataset_version"] == submitted.number
    newer = DatasetVersion.add("plain-english", "text", "newer.txt", b"Added while the job waited in the queue. " * 40,
                               bob)
    assert newer.number == submitted.number + 1 and Dataset.objects.get(name="plain-english").latest == newer
    assert job.claim("test-process")
    result = compress(job)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert result["dataset_version"] == submitted.number
    child = model.versions.get(number=result["child"])
    assert child.config["compression"]["calibration_dataset_version"] == submitted.number
    rows = EvaluationResult.objects.filter(job=job)
    assert rows.count() == 2 and {r.dataset_version_id for r in rows} == {submitted.pk}
    assert f"'calibration_dataset_version': {submitted.number}" in "\n".join(job.log)
    # and a re-run reads the same versions, not the newer one
    again = job.rerun(bob)
    assert (again.params["calibration_dataset_version"], again.params["dataset_version"]) == (submitted.number,) * 2


def test_a_compression_whose_worker_died_fails_the_child_it_stored_but_never_imported(celery_worker, bob, llama_dir):
    from console.jobs import kinds
    from console.registry.importing import add_version_from_path
    from tests.conftest import wait_for
    from workers.tasks import run_job

    model = make_model("tiny", owner=bob)
    parent = stored_version(model, llama_dir)
    params = {"model": "tiny", "version": 1, "method": "fp16"}
    # What a worker killed between storing the child and importing it leaves: the job running, the child importing.
    job = Job.objects.create(kind="compress", params=params, created_by=bob, status="running", deliveries=1,
                             worker="killed@host")
    child = add_version_from_path(model, llama_dir, bob, source="job", parent=parent, produced_by=job, enqueue=False)
    run_job.apply_async(args=[job.pk], queue=kinds.queue_for("compress", params))  # the redelivery
    failed = wait_for(lambda: Job.objects.filter(pk=job.pk, status="failed").first(), 60, what="the job to fail")
    assert "worker running this job died" in failed.error
    child.refresh_from_db()
    assert child.status == "failed" and "before importing it" in child.status_reason and not child.path.exists()
    assert model.versions.count() == 2
