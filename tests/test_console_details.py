"""Status that does not mislead, numbers people read, and forms that say what is wrong: the deployment page's idle
replicas and worker hint, the gate message's plain numbers, an evaluation result replaced by another job's
measurement kept visible, the evaluation config's errors and context bound, the deployment's replicas bound."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from console.deployments import live
from console.deployments.models import Deployment, Replica
from console.evaluation.choices import plain
from console.evaluation.config import key_of, normalize
from console.evaluation.models import DatasetVersion, EvaluationResult, PromotionGate
from console.jobs.models import Job
from console.registry.models import Alias, Model, ModelVersion, PromotionRefused
from workers.evaluation import save

pytestmark = pytest.mark.django_db


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make_version(model: Model, number: int, **fields: Any) -> ModelVersion:
    return ModelVersion.objects.create(model=model, number=number, status="ready", source="upload",
                                       storage_key=uuid.uuid4().hex, **fields)


@pytest.fixture
def chatbot(bob: Any) -> Model:
    model = Model.objects.create(name="chatbot", task="text-generation", owner=bob)
    Alias.move(model, "production", make_version(model, 1), actor=bob)
    make_version(model, 2)
    return model


@pytest.fixture
def prose(bob: Any) -> DatasetVersion:
    return DatasetVersion.add("prose", "text", "prose.txt", b"Some plain words.\n\nAnd more of them.", bob)


def test_plain_numbers_never_use_scientific_notation() -> None:
    assert plain(49540.62) == "49,540.6" and plain(12.3456) == "12.35" and plain(2.0) == "2"
    assert plain(0.00421) == "0.00421" and plain(0.0000123) == "0.0000123" and plain(0) == "0"
    assert plain(1e9) == "1,000,000,000" and "e" not in plain(3.2e-7)


def test_the_gate_message_reads_in_plain_numbers(chatbot: Any, prose: DatasetVersion, alice: Any) -> None:
    config = normalize({})
    PromotionGate.put(chatbot, alias="production", dataset=prose.dataset, metric="perplexity",
                      max_regression_pct=2.0, config=config, actor=alice)
    for number, value in ((1, 12.5), (2, 49540.62)):
        EvaluationResult.objects.create(version=chatbot.versions.get(number=number), dataset_version=prose,
                                        config=config, config_key=key_of(config), metrics={"perplexity": value})
    with pytest.raises(PromotionRefused) as refused:
        Alias.move(chatbot, "production", chatbot.versions.get(number=2), actor=alice)
    message = str(refused.value)
    assert "49,540.6" in message and "(12.5)" in message and "e+" not in message
    assert "at most 2 % worse" in message


def test_a_compress_jobs_measurement_does_not_silently_replace_an_evaluation(chatbot: Any, prose: DatasetVersion,
                                                                              bob: Any) -> None:
    config = normalize({})
    version = chatbot.versions.get(number=1)
    evaluate = Job.objects.create(kind="evaluate", params={}, created_by=bob)
    compress = Job.objects.create(kind="compress", params={}, created_by=bob)
    save([version], prose, config, {"1": {"perplexity": 10.5}}, evaluate)
    save([version], prose, config, {"1": {"perplexity": 11.25}}, compress)
    result = EvaluationResult.objects.get(version=version)
    assert result.metrics["perplexity"] == 11.25 and result.job == compress
    assert result.metrics["replaced"]["job"] == evaluate.pk and result.metrics["replaced"]["kind"] == "evaluate"
    assert result.metrics["replaced"]["metrics"] == {"perplexity": 10.5}
    html = login(bob).get(reverse("evaluation:model", args=["chatbot"])).content.decode()
    assert f"compress #{compress.pk}" in html
    assert f"replaced the result of evaluate #{evaluate.pk}" in html and "10.5" in html
    save([version], prose, config, {"1": {"perplexity": 11.0}}, compress)  # the same job again: nothing to keep
    assert EvaluationResult.objects.get(version=version).metrics["replaced"]["job"] == evaluate.pk


def test_the_evaluation_config_error_names_the_unknown_key(chatbot: Any, prose: DatasetVersion, bob: Any,
                                                          maintainer_api: Any) -> None:
    response = maintainer_api.post("/api/jobs/", {"kind": "evaluate", "params": {
        "model": "chatbot", "versions": [1], "dataset": "prose", "config": {"contxt_length": 512}}}, format="json")
    error = response.json()["error"]
    assert response.status_code == 400 and error["field"] == "params.config.contxt_length"
    assert "'contxt_length'" in error["message"] and "context_length" in error["message"]


def test_a_context_longer_than_the_models_is_refused(chatbot: Any, prose: DatasetVersion, maintainer_api: Any) -> None:
    version = chatbot.versions.get(number=1)
    version.path.mkdir(parents=True, exist_ok=True)
    (version.path / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    response = maintainer_api.post("/api/jobs/", {"kind": "evaluate", "params": {
        "model": "chatbot", "versions": [1], "dataset": "prose", "config": {"context_length": 99999999}}},
        format="json")
    error = response.json()["error"]
    assert response.status_code == 400 and error["field"] == "params.config.context_length"
    assert "2048" in error["message"] and not Job.objects.filter(kind="evaluate").exists()
    ok = maintainer_api.post("/api/jobs/", {"kind": "evaluate", "params": {
        "model": "chatbot", "versions": [1], "dataset": "prose", "config": {"context_length": 512}}}, format="json")
    assert ok.status_code == 202, ok.content


def test_a_deployment_needs_at_least_one_replica(chatbot: Any, maintainer_api: Any) -> None:
    response = maintainer_api.post("/api/deployments/", {"name": "zero", "model": "chatbot", "replicas": 0},
                                   format="json")
    assert response.status_code == 400 and response.json()["error"]["field"] == "replicas"
    assert not Deployment.objects.exists()


def test_an_idle_replica_shows_idle_not_its_last_rate(chatbot: Any, bob: Any) -> None:
    deployment = Deployment.create(bob, name="assistant", model=chatbot, alias="production", replicas=2)
    for slot, stats in ((0, {"running": 0, "waiting": 0, "tokens_per_s": 41.5}),
                        (1, {"running": 2, "waiting": 0, "tokens_per_s": 17.25})):
        Replica.objects.create(deployment=deployment, key=uuid.uuid4().hex, worker=f"w{slot}", pid=1, slot=slot,
                               version=deployment.target_version(), status="ready", stats=stats,
                               heartbeat_at=timezone.now() - timedelta(seconds=1))
    html = login(bob).get(reverse("deployments:detail", args=["assistant"])).content.decode()
    assert "41.5" not in html and ">idle</td>" in html and "17.25" in html


def test_a_pending_deployment_names_the_running_workers_instead_of_asking_for_one(chatbot: Any, bob: Any) -> None:
    name = f"pending-{uuid.uuid4().hex[:8]}"
    deployment = Deployment.create(bob, name=name, model=chatbot, alias="production", replicas=1)
    assert "none is running; start one with `celery" in deployment.status_and_reason()[1]
    host = live.host_key(f"test-{uuid.uuid4().hex[:8]}")
    live.client().set(host, json.dumps({"scope": [name]}), ex=30)
    try:
        reason = deployment.status_and_reason()[1]
        assert "1 running worker will pick it up" in reason and "celery" not in reason
    finally:
        live.client().delete(host)


def test_fine_tune_form_errors_use_the_forms_labels_not_the_apis_names(chatbot: Any) -> None:
    from console.jobs.forms import in_form_words
    from console.registry.job_forms import FinetuneForm

    form = FinetuneForm(chatbot.versions.get(number=1))
    message = in_form_words(form, "learning_rate must be a positive number, got -1; eval_fraction too")
    assert message == "Learning rate must be a positive number, got -1; Eval fraction too"
    assert in_form_words(form, "Dataset 'prose' is a text dataset") == "Dataset 'prose' is a text dataset"
