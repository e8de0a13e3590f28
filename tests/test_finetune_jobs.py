"""Fine-tuning jobs through POST /api/jobs/: bad input refused with a 400 before any job exists, and on a
real worker a LoRA SFT of a tiny Llama and a full fine-tuning of a tiny BERT classifier into a new model,
each leaving a ready child version with its lineage and the losses in the job."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from console.evaluation.models import DatasetVersion
from console.jobs.models import Job
from console.registry.models import ModelVersion
from engine.finetune import split
from tests.api_rows import make_model
from tests.conftest import WorkerProcess, wait_for
from tests.modelfactory import tiny_bert_dir
from tests.serving_rows import stored_version

QA = [{"prompt": f"What is {a} plus {b}?", "answer": f"{a + b}"} for a in range(4) for b in range(4)]
SENTIMENT_FILE = Path(__file__).resolve().parent.parent / "bench" / "data" / "sentiment.jsonl"
SENTIMENT = ([{"text": f"great lovely wonderful film {i}", "label": "pos"} for i in range(10)]
             + [{"text": f"awful boring terrible film {i}", "label": "neg"} for i in range(10)])


def dataset(name: str, kind: str, rows: list[dict[str, Any]], actor: Any) -> DatasetVersion:
    raw = "\n".join(json.dumps(r) for r in rows).encode()
    return DatasetVersion.add(name, kind, f"{name}.jsonl", raw, actor)


def post(api: Any, **params: Any) -> Any:
    return api.post("/api/jobs/", {"kind": "finetune", "params": params}, format="json")


@pytest.mark.django_db
def test_it_refuses_bad_input_with_a_400_before_any_job(bob, maintainer_api, llama_dir, tmp_path: Path) -> None:
    stored_version(make_model("tiny", owner=bob), llama_dir)
    stored_version(make_model("enc", task="text-classification", owner=bob), tiny_bert_dir(tmp_path / "bert"))
    dataset("sums", "qa", QA, bob)
    dataset("sentiment", "classification", SENTIMENT, bob)
    lopsided = SENTIMENT + [{"text": "a film", "label": "meh"}]  # one "meh" row: some seeds hold it out
    dataset("lopsided", "classification", lopsided, bob)
    seed = next(s for s in range(100) if any(r["label"] == "meh" for r in split(lopsided, 0.1, s)[1]))

    wrong_kind = post(maintainer_api, model="tiny", version=1, dataset="sentiment")
    assert wrong_kind.status_code == 400 and wrong_kind.json()["error"]["field"] == "params.dataset"
    assert "classification dataset" in wrong_kind.json()["error"]["message"]
    too_long = post(maintainer_api, model="tiny", version=1, dataset="sums", max_length=100_000)
    assert too_long.status_code == 400 and too_long.json()["error"]["field"] == "params.max_length"
    assert "context of 256 tokens" in too_long.json()["error"]["message"]
    unseen = post(maintainer_api, model="enc", version=1, dataset="lopsided", eval_fraction=0.1, seed=seed)
    assert unseen.status_code == 400, unseen.content
    assert "labels training never shows: meh" in unseen.json()["error"]["message"]
    bad_method = post(maintainer_api, model="tiny", version=1, dataset="sums", method="qlora")
    assert bad_method.status_code == 400 and bad_method.json()["error"]["field"] == "params.method"
    ner_on_llm = post(maintainer_api, model="tiny", version=1, dataset="sums", task="token-classification")
    assert ner_on_llm.status_code == 400 and "trains on a ner dataset" in ner_on_llm.json()["error"]["message"]
    other_task = post(maintainer_api, model="tiny", version=1, dataset="sums", target_model="enc")
    assert other_task.status_code == 400 and other_task.json()["error"]["field"] == "params.target_model"
    from engine.compress import compress_folder

    compress_folder(llama_dir, tmp_path / "int8", "int8")
    stored_version(make_model("tiny-int8", owner=bob), tmp_path / "int8")
    int8_parent = post(maintainer_api, model="tiny-int8", version=1, dataset="sums")
    assert int8_parent.status_code == 400 and int8_parent.json()["error"]["field"] == "params.version"
    assert "stored as int8" in int8_parent.json()["error"]["message"]
    no_model = post(maintainer_api, model="nope", version=1, dataset="sums")
    assert no_model.status_code == 400 and no_model.json()["error"]["field"] == "params.model"
    assert "No model named 'nope'" in no_model.json()["error"]["message"]
    no_version = post(maintainer_api, model="tiny", version="1", dataset="sums")
    assert no_version.status_code == 400 and "Give the version number" in no_version.json()["error"]["message"]
    no_data = post(maintainer_api, model="tiny", version=1, dataset="sums", dataset_version=9)
    assert no_data.status_code == 400 and no_data.json()["error"]["field"] == "params.dataset_version"
    assert "Dataset 'sums' has no version 9" in no_data.json()["error"]["message"]
    assert not Job.objects.filter(kind="finetune").exists()

    tags = [{"tokens": ["Alice", "met", "Bob"], "tags": ["B-PER", "O", "B-PER"]}] * 8
    dataset("people", "ner", tags, bob)
    accepted = post(maintainer_api, model="enc", version=1, dataset="people", task="token-classification",
                    target_model="enc-ner")
    assert accepted.status_code == 202, accepted.content
    assert accepted.json()["params"]["task"] == "token-classification"


def ended(job_id: int, timeout: float = 180) -> Job:
    return wait_for(lambda: Job.objects.filter(pk=job_id, status__in=["succeeded", "failed", "cancelled"]).first(),
                    timeout, what=f"job #{job_id} to end")


def finetuned(api: Any, worker: Any, **params: Any) -> Job:
    """POST a finetune job, wait for it to end, and return it, having checked that it succeeded."""
    response = post(api, **params)
    assert response.status_code == 202, response.content
    done = ended(response.json()["id"])
    assert done.status == "succeeded", done.error + worker.log()[-3000:]
    return done


@pytest.mark.django_db(transaction=True)
def test_a_lora_sft_job_leaves_a_ready_child_version_with_its_lineage_and_losses(
        celery_worker, bob, maintainer_api, llama_dir) -> None:
    parent = stored_version(make_model("tiny", owner=bob), llama_dir)
    data = dataset("sums", "qa", QA, bob)
    done = finetuned(maintainer_api, celery_worker, model="tiny", version=1, dataset="sums", method="lora", epochs=2, batch_size=4,
                     learning_rate=1e-2, target_modules="all-linear", eval_fraction=0.25)
    result = done.result
    assert (result["model"], result["version"], result["steps"]) == ("tiny", 2, 6)
    assert len(result["losses"]) == 6 and result["eval_loss"] > 0 and result["merge_max_abs_diff"] < 1e-4
    assert result["dataset_version"] == data.number and result["hyperparameters"]["learning_rate"] == 1e-2
    assert any("loss" in line for line in done.log)
    child = ModelVersion.objects.get(model__name="tiny", number=2)
    assert child.status == "ready" and child.parent == parent and child.produced_by == done
    assert child.source == "job"


@pytest.mark.django_db(transaction=True)
def test_a_classifier_fine_tuned_into_a_new_model_reports_its_accuracy_and_predicts_when_deployed(
        celery_worker, serving, web_server, bob, maintainer_api, user_api, tmp_path: Path) -> None:
    from console.deployments.models import Deployment
    from console.registry.models import Alias
    from tests.serving_rows import wait_ready

    parent = stored_version(make_model("enc", task="text-classification", owner=bob), tiny_bert_dir(tmp_path / "b"))
    dataset("sentiment", "classification", SENTIMENT, bob)
    done = finetuned(maintainer_api, celery_worker, model="enc", version=1, dataset="sentiment", method="full", epochs=6,
                     batch_size=6, learning_rate=1e-2, eval_fraction=0.2, target_model="sentiment-clf")
    assert done.result["labels"] == ["neg", "pos"] and done.result["eval_accuracy"] == 1.0
    child = ModelVersion.objects.get(model__name="sentiment-clf", number=1)
    assert child.model.task == "text-classification" and child.model.owner == bob
    assert child.status == "ready" and child.parent == parent and child.produced_by == done

    Alias.move(child.model, "production", child, actor=bob)
    wait_ready(Deployment.create(bob, name="classify", model=child.model, alias="production", config={}, replicas=1))
    texts = ["great lovely wonderful film", "awful boring terrible film"]
    response = user_api.post("/api/deployments/classify/predict", {"input": texts}, format="json")
    assert response.status_code == 200, response.content
    assert [answer[0]["label"] for answer in response.json()["results"]] == ["pos", "neg"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_minilm_sentiment_classifier_fine_tuned_by_a_job_deploys_and_predicts_the_labels_of_the_data(
        celery_worker, serving, web_server, bob, maintainer_api, user_api) -> None:
    from console.deployments.models import Deployment
    from console.registry.models import Alias
    from tests.engine.conftest import MINILM_DIR
    from tests.serving_rows import wait_ready

    stored_version(make_model("all-minilm-l6-v2", task="embeddings", owner=bob), MINILM_DIR)
    DatasetVersion.add("tickets", "classification", "sentiment.jsonl", SENTIMENT_FILE.read_bytes(), bob)
    done = finetuned(maintainer_api, celery_worker, model="all-minilm-l6-v2", version=1, dataset="tickets", method="full",
                     epochs=2, batch_size=16, learning_rate=3e-4, eval_fraction=0.25, target_model="ticket-sentiment")
    assert done.params["task"] == "text-classification"  # from the dataset: the parent embeds
    assert done.result["labels"] == ["negative", "positive"] and done.result["steps"] == 8
    assert done.result["eval_accuracy"] == 1.0 and done.result["eval_loss"] < done.result["eval_loss_before"]
    child = ModelVersion.objects.get(model__name="ticket-sentiment", number=1)
    assert child.model.task == "text-classification" and child.status == "ready"

    Alias.move(child.model, "production", child, actor=bob)
    wait_ready(Deployment.create(bob, name="classify", model=child.model, alias="production", config={}, replicas=1))
    texts = ["Brilliant support, they fixed everything in minutes, thank you!",
             "Terrible experience, the app crashed again and nobody answered."]
    response = user_api.post("/api/deployments/classify/predict", {"input": texts}, format="json")
    assert response.status_code == 200, response.content
    answers = response.json()["results"]
    assert {label["label"] for label in answers[0]} == {"negative", "positive"}
    assert [answer[0]["label"] for answer in answers] == ["positive", "negative"]


NER = [{"tokens": ["Alice", "visited", city, "yesterday"], "tags": ["B-PER", "O", "B-LOC", "O"]}
       for city in ("Paris", "Berlin", "Tokyo", "Lisbon", "Nairobi", "Quito", "Oslo", "Hanoi")] * 2


@pytest.mark.django_db(transaction=True)
def test_a_token_classification_job_leaves_a_child_tagging_with_the_tags_of_the_data(
        celery_worker, bob, maintainer_api, tmp_path: Path) -> None:
    from transformers import AutoConfig

    parent = stored_version(make_model("enc", task="text-classification", owner=bob), tiny_bert_dir(tmp_path / "b"))
    dataset("places", "ner", NER, bob)
    done = finetuned(maintainer_api, celery_worker, model="enc", version=1, dataset="places", task="token-classification",
                     method="full", epochs=6, batch_size=4, learning_rate=1e-2, eval_fraction=0.25,
                     target_model="enc-ner")
    assert done.result["labels"] == ["B-LOC", "B-PER", "O"] and done.result["task"] == "token-classification"
    assert done.result["eval_loss"] < done.result["eval_loss_before"] and done.result["eval_accuracy"] > 0.9
    baseline = done.result["baseline"]  # always answering the commonest tag, over the held-out words
    assert baseline["label"] == "O" and done.result["eval_accuracy"] > baseline["accuracy"]
    child = ModelVersion.objects.get(model__name="enc-ner", number=1)
    assert child.model.task == "token-classification" and child.model.owner == bob
    assert child.status == "ready" and child.parent == parent and child.produced_by == done
    assert child.architecture == "BertForTokenClassification"
    config = AutoConfig.from_pretrained(str(child.path))
    assert config.id2label == {0: "B-LOC", 1: "B-PER", 2: "O"} and config.label2id["B-PER"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_sigkilled_pool_process_mid_training_resumes_from_its_last_checkpoint(
        celery_worker, bob, maintainer_api, llama_dir, settings) -> None:
    settings.TAUON_EVALUATION_QUEUE = "ftkill-pool"
    worker = WorkerProcess("ftkill-pool", queues="ftkill-pool", extra=("--pool", "prefork")).start()
    try:
        stored_version(make_model("tiny", owner=bob), llama_dir)
        dataset("sums", "qa", QA, bob)
        response = post(maintainer_api, model="tiny", version=1, dataset="sums", max_steps=400, batch_size=4,
                        learning_rate=1e-3, checkpoint_every=5)
        assert response.status_code == 202, response.content
        job_id = response.json()["id"]
        wait_for(lambda: Job.objects.filter(pk=job_id, status="running", progress__gt=0.2).exists(), 120,
                 what="the training to be under way")
        children = psutil.Process(worker.proc.pid).children()  # type: ignore[union-attr]
        assert len(children) == 1
        os.kill(children[0].pid, signal.SIGKILL)
        done = ended(job_id)
        assert done.status == "succeeded", done.error + worker.log()[-3000:]
        assert done.deliveries == 2 and done.result["steps"] == 400
        assert [s for s, _ in done.result["losses"]] == list(range(1, 401))  # the steps before the kill too
        assert done.result["resumed_from"] >= 80 and done.result["resumed_from"] % 5 == 0
        assert any("resumed from the checkpoint of step" in line for line in done.log)
        assert ModelVersion.objects.filter(model__name="tiny").count() == 2
    finally:
        worker.stop()


@pytest.mark.django_db(transaction=True)
def test_a_redelivery_after_the_child_was_stored_finishes_that_child_instead_of_adding_a_second(
        celery_worker, bob, maintainer_api, llama_dir) -> None:
    from console.jobs import kinds
    from workers.tasks import run_job

    stored_version(make_model("tiny", owner=bob), llama_dir)
    dataset("sums", "qa", QA, bob)
    first = finetuned(maintainer_api, celery_worker, model="tiny", version=1, dataset="sums", max_steps=4, batch_size=4)
    child = ModelVersion.objects.get(produced_by=first)

    # What a worker killed mid-import leaves (the child's row and files stored, its import running), then
    # what one killed after the import leaves (the child ready): each time the job is still running.
    for redelivery, (child_status, import_status) in enumerate((("importing", "running"), ("ready", "succeeded")), 1):
        Job.objects.filter(pk=first.pk).update(status="running", result=None, finished_at=None, deliveries=1,
                                               worker="killed@host")
        ModelVersion.objects.filter(pk=child.pk).update(status=child_status)
        Job.objects.filter(pk=child.import_job_id).update(status=import_status)
        run_job.apply_async(args=[first.pk], queue=kinds.queue_for("finetune", first.params))
        done = wait_for(lambda: Job.objects.filter(pk=first.pk, status__in=["succeeded", "failed"]).first(), 60,
                        what="the redelivered job to end")
        assert done.status == "succeeded", done.error + celery_worker.log()[-3000:]
        assert done.deliveries == 2 and ModelVersion.objects.filter(model__name="tiny").count() == 2
        assert {k: done.result[k] for k in ("model", "version", "steps", "losses", "eval_loss")} == \
            {k: first.result[k] for k in ("model", "version", "steps", "losses", "eval_loss")}
        assert sum("Fine-tuning" in line for line in done.log) == 1  # no training again
        assert sum("stored by an earlier delivery" in line for line in done.log) == redelivery
        child.refresh_from_db()
        assert child.status == "ready" and child.import_job.status == "succeeded" and child.files

    # Killed mid-import once too often: the job fails and the child it never imported goes with it.
    Job.objects.filter(pk=first.pk).update(status="running", result=None, finished_at=None, deliveries=3)
    ModelVersion.objects.filter(pk=child.pk).update(status="importing")
    Job.objects.filter(pk=child.import_job_id).update(status="running")
    run_job.apply_async(args=[first.pk], queue=kinds.queue_for("finetune", first.params))
    failed = wait_for(lambda: Job.objects.filter(pk=first.pk, status="failed").first(), 60, what="the job to fail")
    assert "gave up after 3 deliveries" in failed.error
    child.refresh_from_db()
    assert child.status == "failed" and "before importing it" in child.status_reason and not child.path.exists()


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_fine_tuning_stops_within_seconds_and_keeps_no_checkpoint(
        celery_worker, bob, maintainer_api, llama_dir) -> None:
    from console.registry.importing import storage_dir

    stored_version(make_model("tiny", owner=bob), llama_dir)
    dataset("sums", "qa", QA, bob)
    response = post(maintainer_api, model="tiny", version=1, dataset="sums", max_steps=5000, batch_size=4,
                    checkpoint_every=5)
    job_id = response.json()["id"]
    wait_for(lambda: (storage_dir("finetune") / f"job-{job_id}").is_dir(), 120, what="a first checkpoint")
    assert maintainer_api.post(f"/api/jobs/{job_id}/cancel").status_code in (200, 202)
    done = ended(job_id, timeout=30)
    assert done.status == "cancelled" and done.result is None
    # the kind's on_failed hook removes them right after the job is marked cancelled
    wait_for(lambda: not (storage_dir("finetune") / f"job-{job_id}").exists(), 10, what="the checkpoints to go")
    assert ModelVersion.objects.filter(model__name="tiny").count() == 1
