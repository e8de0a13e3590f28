"""Predict on a dataset: POST /api/deployments/{name}/predict-dataset (and the deployment page's form) starts a
`predict` job that runs a registered dataset through a classification deployment; its page shows the label
distribution, the accuracy and downloads of the predictions. Bad input is refused naming the field, with no job."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from console.batches import predict
from console.deployments.models import Deployment
from console.evaluation.models import DatasetVersion
from console.jobs.models import Job
from tests.api_rows import make_model, make_version
from tests.conftest import wait_for

TEXTS = ["great product", "awful service, never again", "the parcel came on time", "it broke after a day",
         "I would buy it again", "meh", "absolutely wonderful staff", "refund please", "works as described",
         "the worst purchase of my life", "five stars", "never arriving"]


def classification_dataset(name: str, actor: Any, labels: list[str]) -> DatasetVersion:
    raw = "".join(json.dumps({"text": t, "label": label}) + "\n" for t, label in zip(TEXTS, labels, strict=True))
    return DatasetVersion.add(name, "classification", f"{name}.jsonl", raw.encode(), actor)


def served(owner: Any, name: str, task: str) -> Deployment:
    from console.registry.models import Alias

    model = make_model(name=f"{name}-model", task=task, owner=owner)
    Alias.move(model, "production", make_version(model), actor=owner)
    return Deployment.create(owner, name=name, model=model, alias="production")


@pytest.mark.django_db
def test_bad_input_is_refused_naming_the_field_and_starts_no_job(user_api, bob):
    served(bob, "sorter", "text-classification")
    served(bob, "writer", "text-generation")
    served(bob, "resting", "text-classification")
    Deployment.objects.filter(name="resting").update(stopped=True)
    classification_dataset("reviews", bob, ["pos", "neg"] * 6)
    DatasetVersion.add("questions", "qa", "q.jsonl", b'{"prompt": "2+2?", "answer": "4"}\n', bob)
    url = "/api/deployments/{}/predict-dataset"
    cases = [
        ("nobody", {"dataset": "reviews"}, 404, "name"),
        ("writer", {"dataset": "reviews"}, 400, "name"),
        ("resting", {"dataset": "reviews"}, 409, "name"),
        ("sorter", {}, 400, "dataset"),
        ("sorter", {"dataset": ["reviews"]}, 400, "dataset"),
        ("sorter", {"dataset": "no-such"}, 404, "dataset"),
        ("sorter", {"dataset": "questions"}, 400, "dataset"),
        ("sorter", {"dataset": "reviews", "version": 7}, 404, "version"),
        ("sorter", {"dataset": "reviews", "version": "first"}, 400, "version"),
    ]
    for deployment, body, status, field in cases:
        response = user_api.post(url.format(deployment), body, format="json")
        assert response.status_code == status, (deployment, body, response.content)
        error = response.json()["error"]
        assert error["field"] == field and error["message"], (deployment, body, error)
    assert not Job.objects.exists()
    ok = user_api.post(url.format("sorter"), {"dataset": "reviews"}, format="json")  # the latest version
    assert ok.status_code == 202, ok.content
    job = Job.objects.get(pk=ok.json()["id"])
    assert job.kind == "predict" and job.params == {"deployment": "sorter", "dataset": "reviews", "version": 1}
    assert Client().post(url.format("sorter"), {"dataset": "reviews"}).status_code in (401, 403)


@pytest.mark.django_db
def test_a_user_runs_at_most_the_batch_cap_of_predict_jobs_at_once(user_api, charlie, bob, settings):
    settings.TAUON_BATCH_MAX_ACTIVE_PER_USER = 1
    served(bob, "sorter", "text-classification")
    classification_dataset("reviews", bob, ["pos", "neg"] * 6)
    url = "/api/deployments/sorter/predict-dataset"
    assert user_api.post(url, {"dataset": "reviews"}, format="json").status_code == 202
    refused = user_api.post(url, {"dataset": "reviews"}, format="json")
    assert refused.status_code == 429 and refused["Retry-After"] == "60"
    assert refused.json()["error"]["code"] == "too_many_jobs" and "(1)" in refused.json()["error"]["message"]
    client = Client()
    client.force_login(charlie)
    page = client.post(reverse("batches:predict-dataset", args=["sorter"]), {"dataset_version": "reviews|1"},
                       follow=True)
    assert "the most one user may have at once" in page.content.decode()
    assert Job.objects.filter(kind="predict").count() == 1
    Job.objects.update(status="succeeded")  # once it ends, the user may start another
    assert user_api.post(url, {"dataset": "reviews"}, format="json").status_code == 202


@pytest.mark.django_db
def test_the_deployment_page_offers_fitting_datasets_only_and_its_form_starts_the_job(charlie, bob):
    served(bob, "sorter", "text-classification")
    served(bob, "writer", "text-generation")
    classification_dataset("reviews", bob, ["pos", "neg"] * 6)
    DatasetVersion.add("questions", "qa", "q.jsonl", b'{"prompt": "2+2?", "answer": "4"}\n', bob)
    client = Client()
    client.force_login(charlie)
    html = client.get(reverse("deployments:detail", args=["sorter"])).content.decode()
    assert 'id="predict-dataset-form"' in html and 'value="reviews|1"' in html and "questions|" not in html
    assert 'id="predict-dataset"' not in client.get(reverse("deployments:detail", args=["writer"])).content.decode()
    refused = client.post(reverse("batches:predict-dataset", args=["sorter"]), {"dataset_version": "questions|1"})
    assert refused.status_code == 302 and not Job.objects.exists()
    started = client.post(reverse("batches:predict-dataset", args=["sorter"]), {"dataset_version": "reviews|1"})
    job = Job.objects.get()
    assert started.status_code == 302 and started["Location"] == reverse("jobs:job-detail", args=[job.pk])
    # the user who started it may cancel it (the Batches' rule: one's own work); it was queued: cancelled at once
    assert 'id="cancel-form"' in client.get(started["Location"]).content.decode()
    client.post(reverse("jobs:job-cancel", args=[job.pk]))
    job.refresh_from_db()
    assert job.status == "cancelled"


def _result_page(client: Client, job: Job) -> str:
    response = client.get(reverse("jobs:job-detail", args=[job.pk]))
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_dataset_runs_through_a_classification_deployment_end_to_end(serving, celery_worker, tmp_path, bob,
                                                                       charlie, user_api):
    from engine import ClassificationEngine
    from tests.modelfactory import tiny_bert_dir
    from tests.serving_rows import deploy

    folder = tiny_bert_dir(tmp_path / "clf", num_labels=3)
    deploy("classify", folder, task="text-classification", owner=bob)
    gold = [f"LABEL_{i % 3}" for i in range(len(TEXTS))]
    classification_dataset("reviews", bob, gold)
    response = user_api.post("/api/deployments/classify/predict-dataset", {"dataset": "reviews", "version": 1},
                             format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    wait_for(lambda: Job.objects.get(pk=job.pk).is_terminal, timeout=120, what="the predict job to end")
    job.refresh_from_db()
    assert job.status == "succeeded", (job.error, job.log)

    direct = [row[0].label for row in ClassificationEngine(folder).classify(TEXTS, top_k=1)]
    result = job.result
    assert result["predictions"] == len(TEXTS)
    assert result["distribution"] == dict(sorted(Counter(direct).items()))
    assert result["accuracy"] == pytest.approx(sum(d == g for d, g in zip(direct, gold, strict=True)) / len(TEXTS))

    client = Client()
    client.force_login(charlie)
    rows = [json.loads(line) for line in
            b"".join(client.get(reverse("batches:predictions", args=[job.pk, "jsonl"])).streaming_content)
            .decode().splitlines()]
    assert [r["label"] for r in rows] == direct and [r["expected"] for r in rows] == gold
    table = list(csv.DictReader(io.StringIO(client.get(reverse("batches:predictions", args=[job.pk, "csv"]))
                                            .content.decode())))
    assert [r["prediction"] for r in table] == direct and [r["text"] for r in table] == TEXTS

    html = _result_page(client, job)
    assert 'id="predict-chart"' in html and 'id="predict-accuracy"' in html and "Download CSV" in html
    chart = json.loads(re.search(r'id="predict-chart-data"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert dict(zip(chart["labels"], chart["counts"], strict=True)) == result["distribution"]
    charlie.language = "zh-hans"
    charlie.save(update_fields=["language"])
    zh = _result_page(client, job)
    assert "准确率" in zh and "下载 CSV" in zh and "预测的标签" in zh


@pytest.mark.django_db
def test_the_result_page_renders_in_both_languages_and_predictions_stay_private(charlie, bob):
    rows = [{"index": 0, "text": "good", "label": "pos", "score": 0.9, "expected": "pos"},
            {"index": 1, "text": "bad", "label": "pos", "score": 0.6, "expected": "neg"}]
    job = Job.objects.create(kind="predict", status="succeeded", created_by=charlie,
                             params={"deployment": "sorter", "dataset": "reviews", "version": 1},
                             result={"deployment": "sorter", "task": "text-classification", "dataset": "reviews",
                                     "version": 1, **predict.summarize(rows)})
    predict.write(job.pk, rows)
    assert job.result["accuracy"] == 0.5 and job.result["distribution"] == {"pos": 2}
    client = Client()
    client.force_login(charlie)
    en = _result_page(client, job)
    assert "Predicted labels" in en and ">0.500<" in en
    charlie.language = "zh-hans"
    charlie.save(update_fields=["language"])
    zh = _result_page(client, job)
    assert "预测的标签" in zh and "准确率" in zh
    from tests.conftest import make_user

    other = make_user("dora", "user")
    stranger = Client()
    stranger.force_login(other)
    assert stranger.get(reverse("batches:predictions", args=[job.pk, "csv"])).status_code == 404
    assert stranger.get(reverse("jobs:job-detail", args=[job.pk])).status_code == 404
    maintainer = Client()
    maintainer.force_login(bob)
    assert maintainer.get(reverse("batches:predictions", args=[job.pk, "csv"])).status_code == 200


@pytest.mark.django_db(transaction=True)
def test_a_cancel_stops_a_running_prediction_and_leaves_no_file(serving, celery_worker, tmp_path, bob, charlie,
                                                                 user_api):
    from tests.modelfactory import tiny_bert_dir
    from tests.serving_rows import deploy

    # one text per request: thousands of round trips, so the job is still running when the cancel comes
    deploy("classify", tiny_bert_dir(tmp_path / "clf", num_labels=2), task="text-classification", owner=bob,
           config={"max_input_items": 1})
    raw = "".join(json.dumps({"text": f"review number {i}", "label": "LABEL_0"}) + "\n" for i in range(3000))
    DatasetVersion.add("many", "classification", "many.jsonl", raw.encode(), bob)
    job = Job.objects.get(pk=user_api.post("/api/deployments/classify/predict-dataset", {"dataset": "many"},
                                           format="json").json()["id"])
    wait_for(lambda: Job.objects.get(pk=job.pk).progress > 0, timeout=120, what="a first chunk predicted")
    client = Client()
    client.force_login(charlie)  # its creator, a plain user, may cancel it
    assert client.post(reverse("jobs:job-cancel", args=[job.pk])).status_code == 302
    wait_for(lambda: Job.objects.get(pk=job.pk).is_terminal, timeout=30, what="the cancelled job to stop")
    job.refresh_from_db()
    assert job.status == "cancelled" and 0 < job.progress < 1
    assert not predict.path_of(job.pk).exists() and job.result is None


@pytest.mark.django_db
def test_a_predict_job_queued_again_then_cancelled_leaves_no_kept_chunks(charlie):
    job = Job.objects.create(kind="predict", status="queued", deliveries=1, created_by=charlie,
                             params={"deployment": "sorter", "dataset": "reviews", "version": 1})
    predict.keep(job.pk, 0, [[{"label": "pos", "score": 0.9}]])  # what its dead run had answered
    assert predict.kept(job.pk) == [(0, [[{"label": "pos", "score": 0.9}]])]
    assert job.request_cancel(charlie)
    assert Job.objects.get(pk=job.pk).status == "cancelled" and not predict.chunks_path(job.pk).exists()
