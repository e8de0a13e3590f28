"""Serving bookkeeping that needs no worker: telling a wedged engine from a busy one."""

from __future__ import annotations

from workers.serving import ProgressWatch


def test_an_engine_with_work_and_no_new_steps_for_the_limit_counts_as_stalled():
    watch = ProgressWatch(limit_s=10)
    assert not watch.stalled(tokens=5, has_work=True, now=100.0)
    assert not watch.stalled(tokens=5, has_work=True, now=109.0)
    assert watch.stalled(tokens=5, has_work=True, now=110.5)


def test_an_idle_engine_or_one_that_steps_is_never_stalled():
    watch = ProgressWatch(limit_s=10)
    assert not watch.stalled(tokens=5, has_work=False, now=100.0)
    assert not watch.stalled(tokens=5, has_work=False, now=200.0)  # idle for long: fine
    assert not watch.stalled(tokens=5, has_work=True, now=205.0)
    assert not watch.stalled(tokens=6, has_work=True, now=214.0)  # progress resets the clock
    assert not watch.stalled(tokens=6, has_work=True, now=223.0)
    assert watch.stalled(tokens=6, has_work=True, now=224.5)
