"""A fine-tuning's final evaluation: the child, and its parent when it does the same task, measured on the
rows training held out and stored as EvaluationResult rows under a held-out config, which the child
model's evaluation page compares (the parent of another model labelled with its name). The held-out
config itself: normalized, keyed apart from a whole-dataset evaluation, summarized as a held-out split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client
from rest_framework.exceptions import ValidationError

from console.evaluation.config import held_out, key_of, normalize, rows_of, summary
from console.evaluation.models import EvaluationResult
from console.jobs.models import Job
from console.registry.models import ModelVersion
from engine.finetune import split
from tests.api_rows import make_model
from tests.conftest import wait_for
from tests.modelfactory import tiny_bert_dir
from tests.serving_rows import stored_version
from tests.test_finetune_jobs import QA, SENTIMENT, dataset, ended, finetuned, post


def test_a_held_out_config_is_keyed_apart_from_the_whole_dataset_and_says_so() -> None:
    config = held_out(3, 0.25)
    assert config == normalize({"split": {"seed": 3, "eval_fraction": 0.25}})
    assert config["split"] == {"name": "held-out", "seed": 3, "eval_fraction": 0.25}
    assert "split" not in normalize({})  # a whole-dataset config keeps the key it always had
    assert key_of(config) != key_of(normalize({})) and key_of(config) != key_of(held_out(4, 0.25))
    assert summary(config) == "held-out split (seed 3, eval_fraction 0.25)"
    assert rows_of(config, QA) == split(QA, 0.25, 3)[1] and rows_of(normalize({}), QA) == QA
    for bad, field in (({"seed": 1}, "config.split.eval_fraction"), ({"eval_fraction": 1.5}, "config.split.eval_fraction"),
                       ({"name": "train", "eval_fraction": 0.1}, "config.split.name"),
                       ({"seed": -1, "eval_fraction": 0.1}, "config.split.seed"),
                       ({"eval_fraction": 0.1, "rows": 3}, "config.split.rows"), ("held-out", "config.split")):
        with pytest.raises(ValidationError) as refused:
            normalize({"split": bad})
        assert field in refused.value.detail, (bad, refused.value.detail)


@pytest.mark.django_db
def test_an_evaluation_refuses_a_split_of_plain_text_and_a_compression_any_split(bob, maintainer_api, llama_dir) -> None:
    stored_version(make_model("tiny", owner=bob), llama_dir)
    dataset("sums", "qa", QA, bob)
    from console.evaluation.models import DatasetVersion

    DatasetVersion.add("prose", "text", "prose.txt", b"Some plain words.\n\nAnd more of them.", bob)
    split_ = {"split": {"seed": 0, "eval_fraction": 0.25}}
    text = maintainer_api.post("/api/jobs/", {"kind": "evaluate", "params": {
        "model": "tiny", "versions": [1], "dataset": "prose", "config": split_}}, format="json")
    assert text.status_code == 400 and text.json()["error"]["field"] == "params.config.split", text.content
    compress = maintainer_api.post("/api/jobs/", {"kind": "compress", "params": {
        "model": "tiny", "version": 1, "method": "magnitude", "dataset": "sums", "config": split_}}, format="json")
    assert compress.status_code == 400 and compress.json()["error"]["field"] == "params.config.split", compress.content
    qa = maintainer_api.post("/api/jobs/", {"kind": "evaluate", "params": {
        "model": "tiny", "versions": [1], "dataset": "sums", "config": split_}}, format="json")
    assert qa.status_code == 202 and qa.json()["params"]["config"]["split"]["name"] == "held-out"


@pytest.mark.django_db(transaction=True)
def test_a_lora_sft_into_a_new_model_is_compared_with_its_parent_on_the_held_out_rows(
        celery_worker, bob, charlie, maintainer_api, llama_dir, django_assert_num_queries) -> None:
    parent = stored_version(make_model("tiny", owner=bob), llama_dir)
    data = dataset("sums", "qa", QA, bob)
    done = finetuned(maintainer_api, celery_worker, model="tiny", version=1, dataset="sums", max_steps=4, batch_size=4,
                     learning_rate=1e-2, eval_fraction=0.25, seed=7, target_model="tiny-sums")
    child = ModelVersion.objects.get(model__name="tiny-sums", number=1)
    assert child.status == "ready" and child.parent == parent

    config = held_out(7, 0.25)
    rows = {r.version_id: r for r in EvaluationResult.objects.filter(config_key=key_of(config))}
    assert set(rows) == {parent.pk, child.pk}
    held = split(QA, 0.25, 7)[1]
    for row in rows.values():
        assert row.dataset_version == data and row.job_id == done.pk and row.config == config
        assert row.metrics["examples"] == len(held) == 4 and "exact_match" in row.metrics
    evaluation = done.result["evaluation"]
    assert evaluation["rows"] == 4 and evaluation["config_key"] == key_of(config) and not evaluation["errors"]
    assert evaluation["child"] == rows[child.pk].metrics and evaluation["parent"] == rows[parent.pk].metrics
    assert any("4 held-out rows" in line for line in done.log)

    client = Client()
    client.force_login(charlie)
    page = client.get("/models/tiny-sums/evaluation/").content.decode()
    assert 'data-compare-model="tiny"' in page and ">tiny v1<" in page and ">v1<" in page
    assert "held-out split (seed 7, eval_fraction 0.25)" in page
    from console.evaluation.comparison import _rows

    target = child.model
    with django_assert_num_queries(1):  # the page's table and chart rows (JSON as they are): one query
        chart = _rows(target, data, key_of(config))
    assert [(r["label"], r["parent_label"], r["model"]) for r in json.loads(json.dumps(chart))] == [
        ("v1", "tiny v1", "tiny-sums"), ("tiny v1", None, "tiny")]
    own = client.get("/models/tiny/evaluation/").content.decode()  # the parent's page: its own versions only
    assert 'data-compare-version="1"' in own and "tiny-sums" not in own

    # A redelivery after a killed worker (the child ready, the job still running) evaluates again and
    # replaces the rows instead of adding any.
    from console.jobs import kinds
    from workers.tasks import run_job

    EvaluationResult.objects.filter(version=parent).delete()
    Job.objects.filter(pk=done.pk).update(status="running", result=None, finished_at=None, deliveries=1,
                                          worker="killed@host")
    run_job.apply_async(args=[done.pk], queue=kinds.queue_for("finetune", done.params))
    again = wait_for(lambda: Job.objects.filter(pk=done.pk, status__in=["succeeded", "failed"]).first(), 60,
                     what="the redelivered job to end")
    assert again.status == "succeeded", again.error + celery_worker.log()[-3000:]
    assert again.result["evaluation"]["parent"] is not None and again.result["version"] == 1
    assert sorted(EvaluationResult.objects.values_list("version_id", flat=True)) == sorted([parent.pk, child.pk])
    assert ModelVersion.objects.filter(model__name="tiny-sums").count() == 1

    # An evaluate job with the same split measures the same rows and replaces the parent's row.
    split_ = {"split": {"seed": 7, "eval_fraction": 0.25}}
    evaluate = maintainer_api.post("/api/jobs/", {"kind": "evaluate", "params": {
        "model": "tiny", "versions": [1], "dataset": "sums", "config": split_}}, format="json")
    assert evaluate.status_code == 202, evaluate.content
    measured = ended(evaluate.json()["id"])
    assert measured.status == "succeeded", measured.error + celery_worker.log()[-3000:]
    replaced = EvaluationResult.objects.get(version=parent)
    assert replaced.job_id == measured.pk and replaced.config_key == key_of(config)
    assert replaced.metrics["examples"] == 4 and replaced.metrics["exact_match"] == evaluation["parent"]["exact_match"]


@pytest.mark.django_db(transaction=True)
def test_a_cancel_during_the_final_evaluation_is_too_late_the_job_completes_with_its_child(
        celery_worker, bob, maintainer_api, llama_dir) -> None:
    stored_version(make_model("tiny", owner=bob), llama_dir)
    many = [{"prompt": f"What is {a} times {b}?", "answer": f"{a * b}"} for a in range(8) for b in range(8)]
    dataset("products", "qa", many, bob)  # 32 held-out rows: an evaluation that lasts a moment
    response = post(maintainer_api, model="tiny", version=1, dataset="products", max_steps=2, batch_size=4,
                    eval_fraction=0.5, target_model="tiny-products")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    wait_for(lambda: ModelVersion.objects.filter(model__name="tiny-products", status="ready").exists(), 120,
             what="the child to be ready", interval=0.02)
    assert job.request_cancel(), "the job ended before the cancel: nothing was tested"
    done = ended(job.pk)
    assert done.status == "succeeded", done.error + celery_worker.log()[-3000:]
    assert done.result["evaluation"]["child"]["examples"] == 32
    child = ModelVersion.objects.get(model__name="tiny-products")
    assert child.status == "ready" and EvaluationResult.objects.filter(version=child).exists()


@pytest.mark.django_db(transaction=True)
def test_a_classifier_from_an_embeddings_parent_stores_only_the_childs_held_out_row(
        celery_worker, bob, maintainer_api, tmp_path: Path) -> None:
    parent = stored_version(make_model("embed", task="embeddings", owner=bob), tiny_bert_dir(tmp_path / "b"))
    dataset("sentiment", "classification", SENTIMENT, bob)
    done = finetuned(maintainer_api, celery_worker, model="embed", version=1, dataset="sentiment", method="full", epochs=2,
                     batch_size=8, learning_rate=1e-2, eval_fraction=0.2, target_model="sentiment-clf")
    child = ModelVersion.objects.get(model__name="sentiment-clf", number=1)
    results = list(EvaluationResult.objects.all())
    assert [r.version_id for r in results] == [child.pk] and parent.pk != child.pk
    assert results[0].config_key == key_of(held_out(0, 0.2)) and results[0].metrics["examples"] == 4
    assert "accuracy" in results[0].metrics
    assert done.result["evaluation"]["parent"] is None and not done.result["evaluation"]["errors"]
    assert any("embed is embeddings, not text-classification: not evaluated" in line for line in done.log)
