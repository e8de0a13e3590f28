"""Batches' fair share of a deployment's seats (workers/feeding.Share, on the real Redis): each owner feeding the
deployment gets an equal part, split among that owner's own batches; a batch that ends (or whose job died and
stopped renewing) gives its part back."""

from __future__ import annotations

import time

from console.deployments import live
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
