"""The `predict` job on a real serving worker: a NER dataset through a token-classification deployment (the
entity-type distribution on its page), and a job killed with SIGKILL mid-run that, run again, predicts only the
texts not answered yet and ends with the same predictions as an uninterrupted run."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections import Counter

import pytest
from django.test import Client, override_settings
from django.urls import reverse

from console.batches import predict
from console.deployments.models import Deployment
from console.evaluation.models import DatasetVersion
from console.jobs.models import Job
from tests.conftest import ROOT, WorkerProcess, wait_for
from tests.modelfactory import tiny_bert_dir
from tests.serving_rows import deploy

pytestmark = pytest.mark.django_db(transaction=True)

NER_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
SENTENCES = [["Alice", "lives", "in", "Paris"], ["Bob", "met", "Carol", "in", "Berlin", "yesterday"],
             ["The", "river", "Thames", "runs", "through", "London"], ["Dora", "Smith", "flew", "to", "Tokyo"],
             ["nothing", "to", "see", "here"], ["Erik", "and", "Frida", "walked", "around", "Oslo", "harbour"]]


def test_a_ner_dataset_runs_through_a_token_classification_deployment(serving, celery_worker, tmp_path, bob,
                                                                      charlie, user_api):
    from engine import TokenClassificationEngine

    folder = tiny_bert_dir(tmp_path / "ner", labels=NER_LABELS, tokens=True, seed=3)
    deploy("tagger", folder, task="token-classification", owner=bob)
    raw = "".join(json.dumps({"tokens": tokens, "tags": ["O"] * len(tokens)}) + "\n" for tokens in SENTENCES)
    DatasetVersion.add("people", "ner", "people.jsonl", raw.encode(), bob)
    response = user_api.post("/api/deployments/tagger/predict-dataset", {"dataset": "people"}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    wait_for(lambda: Job.objects.get(pk=job.pk).is_terminal, timeout=120, what="the predict job to end")
    job.refresh_from_db()
    assert job.status == "succeeded", (job.error, job.log)

    texts = [" ".join(tokens) for tokens in SENTENCES]
    direct = TokenClassificationEngine(folder).entities(texts)
    expected = dict(sorted(Counter(e.entity_group for row in direct for e in row).items()))
    assert expected  # the tiny random tagger finds some entities: the chart has bars
    result = job.result
    assert (result["task"], result["dataset_kind"], result["predictions"]) == ("token-classification", "ner", 6)
    assert result["distribution"] == expected and result["accuracy"] is None  # a NER dataset has no text labels

    client = Client()
    client.force_login(charlie)
    rows = [json.loads(line) for line in
            b"".join(client.get(reverse("batches:predictions", args=[job.pk, "jsonl"])).streaming_content)
            .decode().splitlines()]
    assert [r["text"] for r in rows] == texts
    assert [[(e["entity_group"], e["word"], e["start"], e["end"]) for e in r["entities"]] for r in rows] == \
        [[(e.entity_group, e.word, e.start, e.end) for e in row] for row in direct]
    html = client.get(reverse("jobs:job-detail", args=[job.pk])).content.decode()
    assert "Entities found per type" in html and 'id="predict-accuracy"' not in html
    chart = json.loads(re.search(r'id="predict-chart-data"[^>]*>(.*?)</script>', html, re.S).group(1))
    assert dict(zip(chart["labels"], chart["counts"], strict=True)) == expected


def test_a_predict_job_killed_mid_run_resumes_from_the_chunks_it_had_answered(serving, tmp_path, bob, charlie):
    from engine import ClassificationEngine
    from workers.predict import _Feeder, run

    folder = tiny_bert_dir(tmp_path / "clf", num_labels=3)
    deploy("classify", folder, task="text-classification", owner=bob, config={"max_input_items": 2})
    texts = [f"review number {i}: {'fine' if i % 3 else 'awful'} {'x' * (i % 7)}" for i in range(1200)]
    raw = "".join(json.dumps({"text": t, "label": "LABEL_0"}) + "\n" for t in texts)
    DatasetVersion.add("many", "classification", "many.jsonl", raw.encode(), bob)
    with override_settings(TAUON_BATCH_QUEUE="nobody-listens"):  # the test plays the worker
        job = Job.start("predict", {"deployment": "classify", "dataset": "many"}, charlie)
    assert job.claim("test-worker")
    code = ("import django; django.setup(); from console.jobs.models import Job; from workers.predict import run; "
            f"run(Job.objects.get(pk={job.pk}))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=WorkerProcess("predict-body").env(),
                            start_new_session=True)
    try:
        wait_for(lambda: len(predict.kept(job.pk)) >= 10, timeout=120, what="ten chunks answered before the kill")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    kept = predict.kept(job.pk)
    before = {start + i: result for start, results in kept for i, result in enumerate(results)}
    assert sum(len(results) for _, results in kept) == len(before)  # no text answered twice
    assert 20 <= len(before) < len(texts) and not predict.path_of(job.pk).exists()

    job = Job.objects.get(pk=job.pk)
    plan = _Feeder(job, Deployment.objects.get(name="classify"), texts)  # what the run below sends
    sent = [start + i for start, chunk in plan.chunks for i in range(len(chunk))]
    assert plan.resumed == len(before) and sorted(sent + list(before)) == list(range(len(texts)))
    assert all(len(chunk) <= 2 for _, chunk in plan.chunks)

    result = run(job)  # what a redelivery does once the dead run's lease expired: the body again
    assert any(f"Resuming: {len(before)} of {len(texts)} texts" in line for line in Job.objects.get(pk=job.pk).log)
    rows = predict.read(job.pk)
    assert [r["index"] for r in rows] == list(range(len(texts))) and not predict.chunks_path(job.pk).exists()
    for index, answer in before.items():  # the texts answered before the kill kept those answers
        assert (rows[index]["label"], rows[index]["score"]) == (answer[0]["label"], answer[0]["score"])
    direct = [row[0] for row in ClassificationEngine(folder).classify(texts, top_k=1)]  # an uninterrupted run
    assert [r["label"] for r in rows] == [d.label for d in direct]
    assert [r["score"] for r in rows] == pytest.approx([d.score for d in direct], abs=1e-5)
    assert result["distribution"] == dict(sorted(Counter(d.label for d in direct).items()))
    assert result["predictions"] == len(texts)
