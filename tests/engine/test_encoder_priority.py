"""The encoders run one forward pass at a time in priority order (engine/encoders.PriorityLock): a background
request (a `predict` job's chunk, a batch's embeddings line; priority 1) yields to interactive ones (0) between
its batches, and equals go in arrival order."""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path

from engine.encoders import ClassificationEngine, PriorityLock
from tests.conftest import wait_for
from tests.modelfactory import tiny_bert_dir


def queued(lock: PriorityLock, n: int) -> bool:
    return len(lock._waiting) == n


def test_the_waiter_with_the_lowest_priority_goes_next_and_equals_in_arrival_order() -> None:
    lock = PriorityLock()
    order: list[str] = []

    def wait_then_run(name: str, priority: int) -> None:
        with lock.hold(priority):
            order.append(name)

    threads = []
    with lock.hold(1):  # a background batch is running
        for name, priority in (("batch-a", 1), ("user-1", 0), ("batch-b", 1), ("user-2", 0)):
            thread = threading.Thread(target=wait_then_run, args=(name, priority))
            thread.start()
            threads.append(thread)
            wait_for(partial(queued, lock, len(threads)), timeout=5, what=f"{name} to queue")
    for thread in threads:
        thread.join(5)
    assert order == ["user-1", "user-2", "batch-a", "batch-b"]


def test_an_interactive_classify_overtakes_a_long_background_one_between_its_batches(tmp_path: Path) -> None:
    engine = ClassificationEngine(tiny_bert_dir(tmp_path / "clf", num_labels=2), batch_size=1)
    texts = [f"background text number {i}" for i in range(400)]
    background = threading.Thread(target=engine.classify, args=(texts,), kwargs={"priority": 1})
    background.start()
    time.sleep(0.05)  # it is running its batches, one text each
    assert background.is_alive()
    labels = engine.classify(["an interactive request"], priority=0)
    still_running = background.is_alive()
    background.join(120)
    assert labels[0] and still_running  # it was answered while the 400 background batches were not done
