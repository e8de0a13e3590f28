"""Batches' fair share of a deployment's seats (workers/feeding.Share, on the real Redis): each owner feeding the
deployment gets an equal part, split among that owner's own batches; a batch that ends (or whose job died and
stopped renewing) gives its part back. And a real batch job keeps to its share while another user's feeds the
same deployment."""

from __future__ import annotations

import threading
import time

import pytest
from django.test import override_settings

from console.batches.models import Batch, BatchFile
from console.deployments import live
from tests.serving_rows import deploy
from tests.test_batches_serving import chat_line, jsonl
from workers import feeding
from workers.feeding import Share


def test_seats_are_shared_equally_among_owners_then_among_an_owners_batches(monkeypatch) -> None:
    live.client().delete(live.feeders_key("shared"))
    alice_1 = Share("shared", 1, "batch-a1", seats=8)
    assert alice_1.refresh() == 8  # alone on the deployment: every seat
    alice_2 = Share("shared", 1, "batch-a2", seats=8)
    assert alice_2.refresh() == 4 and alice_1.refresh() == 4  # one owner's two batches split the owner's part
    bob = Share("shared", 2, "batch-b1", seats=8)
    assert bob.refresh() == 4  # another owner gets half, however many batches alice runs
    assert alice_1.refresh() == alice_2.refresh() == 2
    assert Share("elsewhere", 2, "batch-b2", seats=8).refresh() == 8  # other deployments are apart
    bob.leave()
    assert alice_1.refresh() == 4
    monkeypatch.setattr(feeding, "SHARE_TTL_S", 0.2)
    alice_2.refresh()  # renews with the short expiry, then its job "dies": it renews no more
    time.sleep(0.3)
    assert alice_1.refresh() == 8
    assert Share("shared", 3, "batch-c1", seats=1).refresh() == 1  # never below one seat


@pytest.mark.django_db(transaction=True)
def test_a_batch_keeps_to_half_the_seats_while_another_users_batch_feeds_the_deployment(serving, web_server,
                                                                                       slow_llama_dir, charlie, bob):
    from workers.batch import run

    deployment = deploy("slow", slow_llama_dir, owner=bob)
    seats = int(deployment.config["engine"]["max_num_seqs"])
    rows = [chat_line(f"line-{i}", f"Story {i}", model="slow", max_tokens=24) for i in range(2 * seats)]
    source = BatchFile.upload(charlie, "f.jsonl", "batch", [jsonl(rows)], len(jsonl(rows)))
    with override_settings(TAUON_BATCH_QUEUE="nobody-listens"):  # the test plays the worker
        batch = Batch.start(charlie, source.id, "/v1/chat/completions", "24h")
    other = Share("slow", bob.pk, "batch-of-bob", seats=seats)  # bob's batch, feeding the same deployment
    stop, peak = threading.Event(), [0]

    def watch() -> None:
        while not stop.is_set():
            other.refresh()
            peak[0] = max(peak[0], live.inflight("slow"))  # charlie's lines in flight (bob's sends none here)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run(batch.job)
    finally:
        stop.set()
        watcher.join()
        other.leave()
    assert result["status"] == "completed" and result["completed"] == 2 * seats
    assert seats // 4 <= peak[0] <= seats // 2  # its half, used, and never more
