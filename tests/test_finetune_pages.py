"""A version page's "Fine-tune" and "Compress" forms: maintainers only, ready versions only, CSRF-protected;
a refusal of the kind's own validation (the one POST /api/jobs/ uses) is shown next to its field with
nothing created; a valid form starts the job, audited, and lands on its page, which charts its series."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from console.audit.models import AuditEvent
from console.evaluation.models import DatasetVersion
from console.jobs.models import Job
from engine import compress_methods
from tests.api_rows import make_model, make_version
from tests.serving_rows import stored_version
from tests.test_finetune_jobs import QA, SENTIMENT, dataset

pytestmark = pytest.mark.django_db


def login(user: Any, **kwargs: Any) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


@pytest.fixture
def tiny(bob, llama_dir):  # type: ignore[no-untyped-def]
    version = stored_version(make_model("tiny", owner=bob), llama_dir)
    dataset("sums", "qa", QA, bob)
    dataset("sentiment", "classification", SENTIMENT, bob)
    DatasetVersion.add("prose", "text", "prose.txt", ("Some plain prose.\n\n" * 20).encode(), bob)
    return version


def page(client: Client, url: str = "/models/tiny/versions/1/") -> str:
    response = client.get(url)
    assert response.status_code == 200
    return response.content.decode()


def test_maintainers_see_both_forms_on_ready_versions_only_and_users_neither(tiny, alice, bob, charlie) -> None:
    make_version(tiny.model, status="importing")
    for user in (alice, bob):
        html = page(login(user))
        assert 'id="finetune-form"' in html and 'id="compress-form"' in html
        assert 'name="csrfmiddlewaretoken"' in html
        assert 'id="finetune-form"' not in page(login(user), "/models/tiny/versions/2/")  # importing
    html = page(login(charlie))
    assert 'id="finetune-form"' not in html and 'id="compress-form"' not in html


def test_the_forms_offer_fitting_datasets_and_every_engine_compression_method(tiny, bob) -> None:
    html = page(login(bob))
    finetune = html[html.index('id="finetune-form"'):html.index('id="compress-form"')]
    assert '<option value="sums"' in finetune and '<optgroup label="Question answering' in finetune
    assert finetune.index("sums") < finetune.index("sentiment")  # the model's kind (qa) first
    assert '<option value="prose"' not in finetune  # text datasets do not fine-tune
    assert 'value="tiny"' in finetune  # target model: this one by default
    assert 'placeholder="0.0001"' in finetune  # the engine's default learning rate shown
    compress_form = html[html.index('id="compress-form"'):]
    for method in compress_methods.METHODS:
        assert f'<option value="{method}"' in compress_form
    assert '<option value="prose"' in compress_form and '<option value="2:4"' in compress_form


def test_a_user_may_not_start_either_job(tiny, charlie) -> None:
    client = login(charlie)
    for what in ("finetune", "compress"):
        response = client.post(f"/models/tiny/versions/1/{what}/", {f"{what}-dataset": "sums", f"{what}-method": "lora"})
        assert response.status_code == 403 and b"maintainer" in response.content
    assert not Job.objects.exists()


def test_the_forms_need_a_csrf_token(tiny, bob) -> None:
    client = login(bob, enforce_csrf_checks=True)
    response = client.post("/models/tiny/versions/1/finetune/", {"finetune-dataset": "sums", "finetune-method": "lora",
                                                                 "finetune-task": "text-generation"})
    assert response.status_code == 403 and not Job.objects.exists()


def test_a_refused_fine_tuning_shows_the_validators_message_by_its_field_and_creates_nothing(tiny, bob) -> None:
    client = login(bob)
    base = {"finetune-method": "lora", "finetune-task": "text-generation", "finetune-target_model": "tiny"}
    wrong_kind = client.post("/models/tiny/versions/1/finetune/", {**base, "finetune-dataset": "sentiment"})
    assert wrong_kind.status_code == 400
    form = wrong_kind.context["finetune_form"]
    assert "classification dataset" in " ".join(form.errors["dataset"])  # the API's own message
    html = wrong_kind.content.decode()
    dataset_field = html[html.index('name="finetune-dataset"'):html.index('name="finetune-method"')]
    assert "trains on a qa dataset" in dataset_field
    too_long = client.post("/models/tiny/versions/1/finetune/", {**base, "finetune-dataset": "sums",
                                                                 "finetune-max_length": "100000"})
    assert too_long.status_code == 400 and "context of 256 tokens" in " ".join(
        too_long.context["finetune_form"].errors["max_length"])
    not_a_number = client.post("/models/tiny/versions/1/finetune/", {**base, "finetune-dataset": "sums",
                                                                     "finetune-epochs": "two"})
    assert not_a_number.status_code == 400 and "epochs" in not_a_number.context["finetune_form"].errors
    assert not Job.objects.exists() and not AuditEvent.objects.filter(action="job.create").exists()


def test_a_version_that_is_not_ready_is_refused_with_the_validators_reason(tiny, bob) -> None:
    make_version(tiny.model, status="importing")
    response = login(bob).post("/models/tiny/versions/2/finetune/", {
        "finetune-dataset": "sums", "finetune-method": "lora", "finetune-task": "text-generation"})
    assert response.status_code == 400
    assert "only ready versions can be fine-tuned" in response.content.decode() and not Job.objects.exists()


def test_without_datasets_the_fine_tune_form_says_where_to_add_one(bob, llama_dir) -> None:
    stored_version(make_model("tiny", owner=bob), llama_dir)
    assert "No dataset to train on yet" in page(login(bob))


def test_a_rerun_whose_params_no_longer_validate_says_why_on_the_job_page(tiny, bob) -> None:
    from console.evaluation.models import Dataset

    client = login(bob)
    client.post("/models/tiny/versions/1/finetune/", {"finetune-dataset": "sums", "finetune-method": "lora",
                                                      "finetune-task": "text-generation"})
    job = Job.objects.get(kind="finetune")
    Job.objects.filter(pk=job.pk).update(status="failed")
    Dataset.objects.filter(name="sums").delete()
    response = client.post(f"/jobs/{job.pk}/rerun/", follow=True)
    assert response.status_code == 200 and "Cannot re-run it: dataset: No dataset named &#x27;sums&#x27;" in \
        response.content.decode()
    assert Job.objects.count() == 1


def test_a_refused_compression_shows_the_validators_message(tiny, bob) -> None:
    client = login(bob)
    cast = client.post("/models/tiny/versions/1/compress/", {"compress-method": "fp16", "compress-sparsity": "0.5"})
    assert cast.status_code == 400
    assert "fp16 takes no sparsity or structure" in " ".join(cast.context["compress_form"].errors["sparsity"])
    assert "fp16 takes no sparsity or structure" in cast.content.decode()
    calibrated = client.post("/models/tiny/versions/1/compress/", {"compress-method": "magnitude",
                                                                   "compress-calibration_dataset": "prose"})
    assert calibrated.status_code == 400 and "only wanda and w8a8 do" in calibrated.content.decode()
    assert not Job.objects.exists()


def test_a_valid_fine_tuning_form_starts_the_validated_job_and_shows_its_page(tiny, bob) -> None:
    client = login(bob)
    response = client.post("/models/tiny/versions/1/finetune/", {
        "finetune-dataset": "sums", "finetune-method": "full", "finetune-task": "text-generation",
        "finetune-target_model": "tiny-sums", "finetune-max_steps": "3", "finetune-learning_rate": "0.001",
        "finetune-batch_size": "4", "finetune-lora_r": "", "finetune-seed": "7"})
    job = Job.objects.get(kind="finetune")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    # the validator's cleaned params: the given fields, the defaults for the blank ones
    assert job.params["model"] == "tiny" and job.params["version"] == 1 and job.params["dataset_version"] == 1
    assert (job.params["method"], job.params["target_model"], job.params["max_steps"]) == ("full", "tiny-sums", 3)
    assert (job.params["learning_rate"], job.params["seed"], job.params["lora_r"]) == (0.001, 7, 8)
    assert job.created_by == bob
    assert AuditEvent.objects.filter(action="job.create", actor=bob).count() == 1
    html = page(client, f"/jobs/{job.pk}/")
    assert 'id="job-chart"' in html and "Loss per optimizer step" in html and 'id="job-series-data"' in html


def test_a_valid_compression_form_starts_the_job(tiny, bob) -> None:
    response = login(bob).post("/models/tiny/versions/1/compress/", {
        "compress-method": "wanda", "compress-sparsity": "0.25", "compress-structure": "unstructured",
        "compress-calibration_dataset": "prose", "compress-dataset": ""})
    job = Job.objects.get(kind="compress")
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.pk}/"
    assert job.params == {"model": "tiny", "version": 1, "method": "wanda", "sparsity": 0.25,
                          "structure": "unstructured", "calibration_dataset": "prose",
                          "calibration_dataset_version": 1}  # pinned at submission


def test_the_job_page_draws_the_series_it_has(bob) -> None:
    job = Job.objects.create(kind="finetune", params={}, status="succeeded", created_by=bob,
                             series={"train_loss": [[1, 2.5], [2, 2.0]], "eval_loss": [[0, 3.0], [2, 2.2]]})
    html = page(login(bob), f"/jobs/{job.pk}/")
    blob = html[html.index('id="job-series-data"'):]
    data = json.loads(blob[blob.index(">") + 1:blob.index("</script>")])
    assert data == {"series": job.series, "x": "optimizer step", "y": "loss"}
    assert "plotly" in html and "console/jobs.js" in html
    imported = Job.objects.create(kind="import", params={}, created_by=bob)
    assert 'id="job-chart"' not in page(login(bob), f"/jobs/{imported.pk}/")  # no series, not a charting kind
