"""Autotune bookkeeping (the successive-halving schedule, Pareto front, recommendation, constraints) and
the adaptive-admission control law, without Django; quality (perplexity) scored on a tiny random Llama."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from engine.latency_governor import LatencyGovernor
from engine.tuning import (
    Trial,
    candidates,
    check_space,
    engine_config,
    forward_floor_ms,
    pareto,
    quality,
    recommend,
    schedule,
    search,
)

BASE = {"runtime": "torch", "quantization": "none", "max_num_seqs": 32, "max_batch_tokens": 256,
        "kv_cache_bytes": 512 << 20, "threads": 0}


def trial(n: int, tps: float, ttft: float, status: str = "measured", **extra: Any) -> Trial:
    return Trial(n, {**BASE, "max_num_seqs": n}, status=status, rung=0,
                 figures={"tokens_per_s": tps, "ttft_p99_ms": ttft, "concurrency": 8, **extra})


def test_the_baseline_is_always_the_first_candidate_and_the_rest_are_distinct() -> None:
    got = candidates(check_space({}), BASE, 6, seed=1)
    assert got[0] == BASE and len(got) == 6
    assert len({tuple(sorted(c.items())) for c in got}) == 6
    assert {c["quantization"] for c in got[:3]} == {"none", "int8", "w8a8"}  # each quantization early


def test_unknown_or_empty_space_settings_are_refused_naming_the_field() -> None:
    with pytest.raises(ValueError, match=r"space\.max_seqs"):
        check_space({"max_seqs": [1]})
    with pytest.raises(ValueError, match=r"space\.max_num_seqs"):
        check_space({"max_num_seqs": []})
    with pytest.raises(ValueError, match=r"space\.quantization"):
        check_space({"quantization": ["int3"]})


def test_successive_halving_measures_fewer_candidates_on_more_requests_each_rung() -> None:
    rungs = schedule(9, 27)
    kept = [k for k, _ in rungs]
    shares = [s for _, s in rungs]
    assert kept == sorted(kept, reverse=True) and kept[0] == 9 and kept[-1] < 9
    assert shares == sorted(shares) and shares[-1] == 27
    assert schedule(1, 10) == [(1, 10)]


def test_the_pareto_front_keeps_the_trials_nothing_beats_on_both_axes() -> None:
    trials = [trial(1, 100, 500), trial(2, 200, 900), trial(3, 150, 1000), trial(4, 50, 200)]
    assert pareto(trials) == [1, 2, 4]


def test_the_recommendation_says_which_constraint_bound() -> None:
    trials = [trial(1, 100, 500), trial(2, 200, 4000), trial(3, 150, 2000)]
    best, why = recommend(trials, "throughput", {"ttft_p99_ms": 3000})
    assert best is not None and best.number == 3
    assert "ttft_p99_ms ≤ 3000" in why and "binding" in why
    best, why = recommend(trials, "latency", {})
    assert best is not None and best.number == 1 and "no constraint" in why


def test_no_recommendation_when_every_trial_breaks_the_constraints() -> None:
    best, why = recommend([trial(1, 100, 5000)], "throughput", {"ttft_p99_ms": 1000})
    assert best is None and "ttft_p99_ms" in why


def test_a_ttft_target_below_one_forward_pass_is_recognisably_impossible() -> None:
    assert forward_floor_ms(135_000_000, 128) > 0.01
    assert forward_floor_ms(70_000_000_000, 4096) > 100


def test_a_failed_trial_is_recorded_with_its_reason_and_the_search_goes_on() -> None:
    seen: list[tuple[int, str]] = []

    def fake(number: int, settings: dict[str, Any], requests: int, quality: bool) -> dict[str, Any]:
        if settings["max_num_seqs"] == 8:
            raise MemoryError("out of memory allocating the KV cache")
        level = {"concurrency": 4, "tokens_per_s": float(settings["max_num_seqs"]),
                 "ttft_p99_ms": 10.0 * settings["max_num_seqs"], "itl_p99_ms": 1.0, "memory_bytes": 1}
        return {"levels": [level], "perplexity": 10.0 if settings["quantization"] == "none" else 30.0}

    settings = [{**BASE, "max_num_seqs": n} for n in (4, 8, 16)] + [{**BASE, "quantization": "int8"}]
    trials = search(settings, 6, fake, "throughput", {"max_perplexity_ratio": 1.5}, 1000,
                    lambda t, d, n: seen.append((t.number, t.status)))
    by = {t.number: t for t in trials}
    assert by[2].status == "failed" and "out of memory" in by[2].reason
    assert by[4].status == "rejected" and by[4].perplexity_ratio == pytest.approx(3.0)
    assert any(t.status == "measured" for t in trials) and seen


def test_quality_scores_the_perplexity_of_a_tiny_model_per_quantization(tiny_llama: Path) -> None:
    text = "The cat sat on the mat. " * 40
    plain = quality(tiny_llama, engine_config({**BASE, "kv_cache_bytes": 4 << 20}, {}), text, context=64)
    int8 = quality(tiny_llama, engine_config({**BASE, "kv_cache_bytes": 4 << 20, "quantization": "int8"}, {}),
                   text, context=64)
    assert math.isfinite(plain) and plain > 1 and math.isfinite(int8) and int8 > 1
    assert 0.5 < int8 / plain < 2  # the same random model, rounded: close, not equal by construction


# -- the adaptive-admission control law -------------------------------------------------------------------
def test_the_governor_narrows_when_p99_ttft_passes_the_target_and_widens_back_when_well_under() -> None:
    g = LatencyGovernor(target_ms=1000, ceiling=16, floor=2, interval_s=1.0, min_samples=4)
    t = 0.0
    for _ in range(8):
        g.observe(2.0, now=t)
    d = g.update(now=t)
    assert d.action == "narrow" and d.limit == 11
    limits = [d.limit]
    for _step in range(1, 12):
        t += 1.0
        for _ in range(4):
            g.observe(2.0, now=t)
        limits.append(g.update(now=t).limit)
    assert limits[-1] == 2 and limits == sorted(limits, reverse=True)  # down to the floor, never below
    for _step in range(40):
        t += 1.0
        for _ in range(4):
            g.observe(0.1, now=t)
        g.update(now=t)
    assert g.limit == 16  # back to the tuned maximum, never above


def test_the_governor_holds_between_the_bands_and_waits_for_enough_fresh_samples() -> None:
    g = LatencyGovernor(target_ms=1000, ceiling=8, min_samples=4)
    g.observe(0.8, now=0.0)
    assert g.update(now=0.0).action == "wait"
    for _ in range(4):
        g.observe(0.8, now=0.5)
    d = g.update(now=0.5)
    assert d.action == "hold" and d.limit == 8 and d.p99_ms == pytest.approx(800)
    assert g.retry_after_s() == 1


def test_old_samples_leave_the_window() -> None:
    g = LatencyGovernor(target_ms=100, ceiling=4, window_s=5.0)
    g.observe(1.0, now=0.0)
    assert g.p99_ms(now=1.0) == pytest.approx(1000)
    assert g.p99_ms(now=10.0) is None
    assert math.isfinite(g.target_ms)


def test_impossible_governor_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        LatencyGovernor(target_ms=0, ceiling=4)
    with pytest.raises(ValueError):
        LatencyGovernor(target_ms=10, ceiling=2, floor=3)
