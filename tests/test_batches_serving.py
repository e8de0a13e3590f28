"""Batches end to end: the official `openai` client → uvicorn → the batch job on a Celery worker → the
deployment's serving worker → output and error files; cancel mid-run; a job killed with SIGKILL and run
again answers every line exactly once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import openai
import pytest
from django.test import override_settings

from console.batches.choices import BatchStatus, LineStatus
from console.batches.models import Batch, BatchFile
from tests.conftest import ROOT, WorkerProcess, wait_for
from tests.serving_rows import deploy
from tests.test_serving import client_for

pytestmark = pytest.mark.django_db(transaction=True)


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def chat_line(custom_id: str, content: str, model: str = "chat", max_tokens: int = 6) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens,
                     "temperature": 0, "ignore_eos": True}}


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def wait_batch(client: openai.OpenAI, batch_id: str, statuses: tuple[str, ...], timeout: float = 120) -> Any:
    return wait_for(lambda: (b := client.batches.retrieve(batch_id)).status in statuses and b,
                    timeout=timeout, what=f"batch {batch_id} to be {'/'.join(statuses)}")


def test_a_batch_runs_end_to_end_through_the_openai_client(serving, celery_worker, web_server, llama_dir,
                                                           charlie, bob):
    deploy("chat", llama_dir, owner=bob)
    client = client_for(charlie, web_server)
    prompts = {"one": "Hello there", "two": "What is the capital of France?", "three": "Count to five"}
    rows = [chat_line(cid, text) for cid, text in prompts.items()]
    rows.append({**chat_line("bad", "x"), "url": "/v1/nowhere"})
    uploaded = client.files.create(file=("requests.jsonl", jsonl(rows)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(jsonl(rows))
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"team": "news"})
    assert batch.status == "validating" and batch.metadata == {"team": "news"}
    done = wait_batch(client, batch.id, ("completed", "failed"))
    assert done.status == "completed", done
    assert done.request_counts.total == 4 and done.request_counts.completed == 3 and done.request_counts.failed == 1
    out = lines_of(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in out) == ["one", "three", "two"]
    for line in out:
        body = line["response"]["body"]
        assert line["response"]["status_code"] == 200 and line["error"] is None and body["object"] == "chat.completion"
        assert body["usage"]["completion_tokens"] == 6
        # the same request sent interactively gets the same greedy answer
        alone = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": prompts[line["custom_id"]]}],
                                               max_tokens=6, temperature=0, extra_body={"ignore_eos": True})
        assert body["choices"][0]["message"]["content"] == alone.choices[0].message.content
    errors = lines_of(client, done.error_file_id)
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("bad", "invalid_url")]
    assert [b.id for b in client.batches.list()] == [batch.id]
    assert {f.id for f in client.files.list()} == {uploaded.id, done.output_file_id, done.error_file_id}


def test_a_cancel_stops_a_running_batch_within_seconds_and_keeps_its_answered_lines(
        serving, celery_worker, web_server, slow_llama_dir, charlie, bob):
    deploy("slow", slow_llama_dir, owner=bob)
    client = client_for(charlie, web_server)
    rows = [chat_line(f"line-{i}", f"Tell me a story number {i}", model="slow", max_tokens=200) for i in range(60)]
    batch = client.batches.create(input_file_id=client.files.create(file=("s.jsonl", jsonl(rows)), purpose="batch").id,
                                  endpoint="/v1/chat/completions", completion_window="24h")
    wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 1, timeout=120,
             what="a first answered line")
    asked = time.monotonic()
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = wait_batch(client, batch.id, ("cancelled",), timeout=30)
    assert time.monotonic() - asked < 15
    answered = lines_of(client, done.output_file_id)
    assert 1 <= len(answered) == done.request_counts.completed < 60
    assert len({a["custom_id"] for a in answered}) == len(answered)
    assert Batch.objects.get().job.status == "succeeded"


def test_a_job_killed_mid_batch_and_run_again_answers_every_line_exactly_once(serving, web_server, slow_llama_dir,
                                                                            charlie, bob):
    deploy("slow", slow_llama_dir, owner=bob)
    rows = [chat_line(f"line-{i}", f"Story {i}", model="slow", max_tokens=48) for i in range(24)]
    source = BatchFile.upload(charlie, "k.jsonl", "batch", [jsonl(rows)], len(jsonl(rows)))
    with override_settings(TAUON_BATCH_QUEUE="nobody-listens"):  # the test plays the worker
        batch = Batch.start(charlie, source.id, "/v1/chat/completions", "24h")
    env = WorkerProcess("batch-body").env()
    code = ("import django; django.setup(); from console.jobs.models import Job; from workers.batch import run; "
            f"run(Job.objects.get(pk={batch.job.pk}))")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True)
    try:
        wait_for(lambda: batch.lines.filter(status=LineStatus.SUCCEEDED).count() >= 3, timeout=120,
                 what="three answered lines before the kill")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    answered_before = set(batch.lines.filter(status=LineStatus.SUCCEEDED).values_list("custom_id", "request_id"))
    assert 3 <= len(answered_before) < 24
    batch.refresh_from_db()
    assert batch.status == BatchStatus.IN_PROGRESS
    from workers.batch import run

    result = run(batch.job)  # what a redelivery does: the body again
    assert result["status"] == "completed" and result["completed"] == 24 and result["failed"] == 0
    batch.refresh_from_db()
    out = [json.loads(line) for line in BatchFile.objects.get(pk=batch.output_file_id).path.read_text().splitlines()]
    assert sorted(o["custom_id"] for o in out) == sorted(r["custom_id"] for r in rows)  # none lost, none twice
    kept = {(o["custom_id"], o["response"]["request_id"]) for o in out}
    assert answered_before <= kept  # the lines answered before the kill were not answered again


def test_a_serving_worker_killed_mid_batch_and_back_leaves_every_line_answered_exactly_once(
        celery_worker, web_server, slow_llama_dir, charlie, bob):
    from tests.conftest import serving_worker

    worker = serving_worker("batch-kill", "batch-kill", concurrency=8).start()
    try:
        deploy("batch-kill", slow_llama_dir, owner=bob)
        client = client_for(charlie, web_server)
        rows = [chat_line(f"line-{i}", f"Story {i}", model="batch-kill", max_tokens=48) for i in range(24)]
        batch = client.batches.create(
            input_file_id=client.files.create(file=("k.jsonl", jsonl(rows)), purpose="batch").id,
            endpoint="/v1/chat/completions", completion_window="24h")
        wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 3, timeout=120,
                 what="three answered lines before the kill")
        worker.kill(signal.SIGKILL)
        before = client.batches.retrieve(batch.id).request_counts.completed
        worker = serving_worker("batch-kill", "batch-kill", concurrency=8).start()  # the worker comes back
        done = wait_batch(client, batch.id, ("completed", "failed"), timeout=240)
    finally:
        worker.stop()
    assert done.status == "completed" and before < 24
    assert done.request_counts.completed == 24 and done.request_counts.failed == 0
    out = lines_of(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in out) == sorted(r["custom_id"] for r in rows)


def test_an_embeddings_batch_runs_at_background_priority_and_equals_the_engine(serving, celery_worker, web_server,
                                                                               charlie, bob):
    import torch

    from console.registry.bundled import by_name
    from engine import EmbeddingEngine

    folder = by_name("all-minilm-l6-v2").path()
    deploy("embed", folder, task="embeddings", owner=bob)
    client = client_for(charlie, web_server)
    texts = {"cat": "A cat sits on the mat.", "stocks": "Stocks fell sharply today.", "ok": "ok"}
    rows = [{"custom_id": cid, "method": "POST", "url": "/v1/embeddings",
             "body": {"model": "embed", "input": text, "encoding_format": "float"}} for cid, text in texts.items()]
    batch = client.batches.create(input_file_id=client.files.create(file=("e.jsonl", jsonl(rows)), purpose="batch").id,
                                  endpoint="/v1/embeddings", completion_window="24h")
    done = wait_batch(client, batch.id, ("completed", "failed"))
    assert done.status == "completed" and done.request_counts.completed == 3, done
    assert {line.request["work"]["priority"] for line in Batch.objects.get(pk=batch.id).lines.all()} == {1}
    out = {o["custom_id"]: o["response"]["body"]["data"][0]["embedding"] for o in lines_of(client, done.output_file_id)}
    direct = EmbeddingEngine(folder).embed(list(texts.values())).vectors
    got = torch.tensor([out[cid] for cid in texts])
    assert torch.nn.functional.cosine_similarity(got, direct).min() > 1 - 1e-5
