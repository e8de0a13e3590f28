"""Autotune: find the engine settings that serve a workload best under latency, memory and quality
constraints, by measuring real engines.

Plain bookkeeping (candidates, the successive-halving schedule, the Pareto front, the recommendation)
imports nothing heavy, so the console can validate params with it; `quality()` loads an engine (torch)
when called. Speed is measured through the serving stack by the job (workers/tune_trials.py). The search is successive halving (Jamieson & Talwalkar): every candidate is
measured on a small share of the workload, the better 1/eta go on to a share eta times larger, and so on;
candidates that fail (out of memory, a runtime that cannot load the model) or break a hard constraint stop
there with their reason."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.config import QUANTIZATIONS, RUNTIMES, EngineConfig

SPACE_FIELDS = ("runtime", "quantization", "max_num_seqs", "max_batch_tokens", "kv_cache_bytes", "threads")
DEFAULT_SPACE: dict[str, list[Any]] = {
    "runtime": ["torch"],
    "quantization": ["none", "int8", "w8a8"],
    "max_num_seqs": [4, 8, 16, 32],
    "max_batch_tokens": [128, 256, 512],
    "kv_cache_bytes": [128 << 20, 256 << 20, 512 << 20],
    "threads": [0],
}
CONSTRAINTS = ("ttft_p99_ms", "itl_p99_ms", "max_perplexity_ratio", "max_memory_bytes")
OBJECTIVES = ("throughput", "latency")
# The fastest a forward pass of a model can be, for refusing impossible TTFT targets: 2 FLOPs per
# parameter per prompt token at a peak no CPU or single GPU we serve on exceeds.
PEAK_FLOPS = 2e15
BYTES_PER_PARAM = {"none": 4.0, "int8": 1.0, "w8a8": 1.0, "int4": 0.5}


def forward_floor_ms(parameter_count: int, prompt_tokens: int) -> float:
    """A lower bound on one prefill forward pass: no TTFT target below it can be met."""
    return 2.0 * parameter_count * max(1, prompt_tokens) / PEAK_FLOPS * 1000.0


def memory_estimate(parameter_count: int, settings: dict[str, Any]) -> int:
    """Weights at the candidate's precision plus its preallocated KV cache (bytes)."""
    return int(parameter_count * BYTES_PER_PARAM.get(settings["quantization"], 4.0) + settings["kv_cache_bytes"])


@dataclass(slots=True)
class Workload:
    """What every trial serves: prompts (token ids or chat messages), each answered with `output_tokens`
    (ignoring EOS so every configuration does the same work), at each concurrency level in turn."""

    prompts: list[Any]
    output_tokens: list[int]
    concurrency: list[int]

    def share(self, requests: int) -> Workload:
        """The first `requests` prompts (cycled when there are fewer)."""
        n = max(1, requests)
        return Workload([self.prompts[i % len(self.prompts)] for i in range(n)],
                        [self.output_tokens[i % len(self.output_tokens)] for i in range(n)], self.concurrency)


def synthetic(prompt_tokens: tuple[int, int], output_tokens: tuple[int, int], concurrency: list[int],
              requests: int, vocab: int = 1000, seed: int = 0) -> Workload:
    """Random token prompts with lengths drawn uniformly from the ranges (ids from a small common range,
    so any tokenizer takes them)."""
    rng = random.Random(seed)
    prompts = [[rng.randrange(10, vocab) for _ in range(rng.randint(*prompt_tokens))] for _ in range(requests)]
    return Workload(prompts, [rng.randint(*output_tokens) for _ in range(requests)], concurrency)


# -- candidates ---------------------------------------------------------------------------------------
def candidates(space: dict[str, list[Any]], baseline: dict[str, Any], count: int, seed: int = 0) -> list[dict[str, Any]]:
    """`count` distinct settings from the grid of `space`: the baseline first (the settings served today),
    then a seeded random sample of the rest that tries each runtime × quantization as early as it can."""
    keys = list(SPACE_FIELDS)
    base = {k: baseline[k] for k in keys}
    grid = [effective(dict(zip(keys, values, strict=True)), base)
            for values in itertools.product(*(space[k] for k in keys))]
    rest = [g for i, g in enumerate(grid) if g != base and g not in grid[:i]]
    random.Random(seed).shuffle(rest)
    out = [base]
    while rest and len(out) < count:  # every runtime × quantization early (they matter most), then the sample
        covered = {(c["runtime"], c["quantization"]) for c in out}
        pick = next((g for g in rest if (g["runtime"], g["quantization"]) not in covered), rest[0])
        rest.remove(pick)
        out.append(pick)
    return out


def effective(settings: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """The settings with those their runtime ignores pinned (torch: threads, as the baseline's; llama.cpp:
    quantization, the GGUF's own), so no two candidates differ only where it makes no difference."""
    if settings["runtime"] == "llamacpp":
        return {**settings, "quantization": "none"}
    return {**settings, "threads": base["threads"]}


def threads_candidates(cpus: int) -> list[int]:
    """llama.cpp thread counts worth trying on a machine with `cpus` cores (0: the runtime's own choice)."""
    return [0] + [n for n in (1, 2, 4, 8, 16) if n <= cpus]


def check_space(space: dict[str, Any]) -> dict[str, list[Any]]:
    """The search space complete with defaults; raises ValueError naming `space.<field>`."""
    unknown = sorted(set(space) - set(SPACE_FIELDS))
    if unknown:
        raise ValueError(f"space.{unknown[0]}: unknown setting; tunable: {', '.join(SPACE_FIELDS)}")
    out = {**DEFAULT_SPACE, **space}
    for name in SPACE_FIELDS:
        values = out[name]
        if not isinstance(values, list) or not values:
            raise ValueError(f"space.{name}: give a non-empty list of values")
        for value in values:
            try:
                EngineConfig(**{name: value})
            except (TypeError, ValueError) as exc:
                raise ValueError(f"space.{name}: {exc}") from exc
        out[name] = sorted(set(values), key=values.index)
    if "auto" in out["runtime"]:
        raise ValueError(f"space.runtime: name the runtimes to try ({', '.join(r for r in RUNTIMES if r != 'auto')})")
    if any(q not in QUANTIZATIONS for q in out["quantization"]):
        raise ValueError(f"space.quantization: one of {', '.join(QUANTIZATIONS)}")
    return out


def schedule(count: int, requests: int, eta: int = 3) -> list[tuple[int, int]]:
    """Successive halving rungs as (candidates kept, requests each): the last rung measures the survivors
    on the whole workload, each earlier one on 1/eta as much."""
    rungs = max(1, math.ceil(math.log(max(count, 1), eta)) + (1 if count > 1 else 0))
    rungs = min(rungs, 3)
    out, kept = [], count
    for r in range(rungs):
        share = max(2, requests // eta ** (rungs - 1 - r))
        out.append((kept, share))
        kept = max(1, math.ceil(kept / eta))
    return out


# -- trials -------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Trial:
    number: int
    settings: dict[str, Any]
    status: str = "pending"  # pending | measured | failed | rejected
    reason: str = ""
    rung: int = -1
    requests: int = 0
    figures: dict[str, Any] = field(default_factory=dict)  # of its last rung (the best concurrency level)
    levels: list[dict[str, Any]] = field(default_factory=list)
    perplexity_ratio: float | None = None
    load_s: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def violations(figures: dict[str, Any], constraints: dict[str, Any], ratio: float | None = None) -> list[str]:
    """The constraints these figures break, e.g. ["ttft_p99_ms"]."""
    out = []
    if "ttft_p99_ms" in constraints and figures.get("ttft_p99_ms", math.inf) > constraints["ttft_p99_ms"]:
        out.append("ttft_p99_ms")
    if "itl_p99_ms" in constraints and figures.get("itl_p99_ms", math.inf) > constraints["itl_p99_ms"]:
        out.append("itl_p99_ms")
    if "max_memory_bytes" in constraints and figures.get("memory_bytes", 0) > constraints["max_memory_bytes"]:
        out.append("max_memory_bytes")
    if "max_perplexity_ratio" in constraints and ratio is not None and ratio > constraints["max_perplexity_ratio"]:
        out.append("max_perplexity_ratio")
    return out


def score(figures: dict[str, Any], objective: str) -> float:
    """Higher is better."""
    if objective == "latency":
        return -figures.get("ttft_p99_ms", math.inf)
    return figures.get("tokens_per_s", 0.0)


def best_level(levels: list[dict[str, Any]], constraints: dict[str, Any], objective: str) -> dict[str, Any]:
    """The concurrency level a trial is judged by: the best-scoring one within the latency constraints, else
    the one that breaks them least (the lowest concurrency)."""
    ok = [lv for lv in levels if not violations(lv, constraints)]
    if ok:
        return max(ok, key=lambda lv: score(lv, objective))
    return min(levels, key=lambda lv: lv["concurrency"])


def pareto(trials: Sequence[Trial]) -> list[int]:
    """Numbers of the measured trials no other one beats on both throughput (higher) and p99 TTFT (lower)."""
    pts = [(t.number, t.figures["tokens_per_s"], t.figures["ttft_p99_ms"]) for t in trials
           if t.status in ("measured", "rejected") and t.figures]
    front = [n for n, tps, ttft in pts
             if not any(o_tps >= tps and o_ttft <= ttft and (o_tps, o_ttft) != (tps, ttft) for _, o_tps, o_ttft in pts)]
    return sorted(front)


def recommend(trials: Sequence[Trial], objective: str, constraints: dict[str, Any]) -> tuple[Trial | None, str]:
    """The best feasible trial (measured furthest, then by the objective) and why it, in words: which
    constraint held back the trials that would have scored better."""
    measured = [t for t in trials if t.status in ("measured", "rejected") and t.figures]
    feasible = [t for t in measured if t.status == "measured" and not violations(t.figures, constraints,
                                                                                 t.perplexity_ratio)]
    if not feasible:
        if not measured:
            return None, "No trial could be measured; see the failed trials' reasons."
        broken = sorted({v for t in measured for v in violations(t.figures, constraints, t.perplexity_ratio)})
        return None, ("No trial met the constraints (" + ", ".join(broken) + "); loosen them or widen the space.")
    best = max(feasible, key=lambda t: (t.rung, score(t.figures, objective)))
    # compare like with like: trials measured on as much of the workload as the best one
    better = [t for t in measured if t.rung == best.rung and t is not best
              and score(t.figures, objective) > score(best.figures, objective)]
    early = any(t.rung < best.rung and score(t.figures, objective) > score(best.figures, objective) for t in measured)
    bound = sorted({v for t in better for v in violations(t.figures, constraints, t.perplexity_ratio)})
    what = "throughput" if objective == "throughput" else "p99 TTFT"
    if bound:
        why = (f"Best {what} among trials within the constraints; {len(better)} trial(s) scored better but broke "
               + ", ".join(f"{b} ≤ {constraints[b]:g}" for b in bound) + ", the binding constraint.")
    elif early:
        why = f"Best {what} of the trials measured on the whole workload (better early scores did not hold up)."
    else:
        why = f"Best {what} of all trials; no constraint was binding."
    return best, why


# -- measuring ----------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    k = (len(ordered) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def engine_config(settings: dict[str, Any], base: dict[str, Any]) -> EngineConfig:
    return EngineConfig(**{**base, **settings})


def quality(folder: str | Path, config: EngineConfig, text: str, context: int = 256) -> float:
    """The perplexity of `text` under the engine loaded with `config` (its quantization), in this process:
    quality does not depend on the serving stack, speed does (workers/tune_trials.py measures that)."""
    from engine.api import Engine
    from engine.evaluate import perplexity
    from engine.loader import release_memory
    from engine.runner import full_forward

    try:
        engine = Engine.from_pretrained(folder, config, task="text-generation")
        try:
            ids = engine.encode(text)[: 4 * context]
            ctx = min(context, engine.model_len, len(ids))
            return perplexity(lambda chunk: full_forward(engine.stack, chunk), ids, ctx, ctx).perplexity
        finally:
            engine.close()
    finally:
        release_memory()


Measure = Callable[[int, dict[str, Any], int, bool], dict[str, Any]]  # (trial, settings, requests, with_quality)


def _rank(trial: Trial, objective: str, constraints: dict[str, Any]) -> tuple[bool, float]:
    """Survivors of a rung: those within the constraints first, then by the objective."""
    if not trial.figures:
        return (False, -math.inf) if trial.rung >= 0 else (True, math.inf)  # unmeasured (the first rung): keep
    return not violations(trial.figures, constraints, trial.perplexity_ratio), score(trial.figures, objective)


def search(settings: list[dict[str, Any]], requests: int, measure_fn: Measure, objective: str,
           constraints: dict[str, Any], parameter_count: int, on_trial: Callable[[Trial, int, int], None],
           eta: int = 3) -> list[Trial]:
    """Successive halving over `settings`. `measure_fn(number, settings, requests, with_quality)` returns
    measure()'s dict or raises (the trial is recorded failed with the reason). Quality is scored once per
    quantization, on the first trial loaded with it; `on_trial(trial, done, total)` after each measurement
    (a cancel raised there stops the search)."""
    trials = [Trial(i + 1, s) for i, s in enumerate(settings)]
    rungs = schedule(len(trials), requests, eta)
    total = sum(k for k, _ in rungs)
    done = 0
    ppl: dict[str, float] = {}
    alive = list(trials)
    for r, (keep, share) in enumerate(rungs):
        alive = sorted(alive, key=lambda t: _rank(t, objective, constraints), reverse=True)[:keep]
        for trial in alive:
            s = trial.settings
            limit = constraints.get("max_memory_bytes")
            if limit and memory_estimate(parameter_count, s) > limit:
                trial.status, trial.reason = "rejected", (
                    f"needs about {memory_estimate(parameter_count, s)} bytes (weights + KV cache), over "
                    f"max_memory_bytes {limit}")
                done += 1
                on_trial(trial, done, total)
                continue
            quality = s["runtime"] != "llamacpp" and s["quantization"] not in ppl
            try:
                got = measure_fn(trial.number, s, share, quality)
            except Exception as exc:  # noqa: BLE001 - a failed trial is a finding, the search goes on
                if exc.__class__.__name__ in ("JobCancelled", "JobTimedOut"):
                    raise
                trial.status, trial.reason = "failed", f"{exc.__class__.__name__}: {exc}"[:500]
                done += 1
                on_trial(trial, done, total)
                continue
            if "perplexity" in got:
                ppl[s["quantization"]] = got["perplexity"]
            trial.rung, trial.load_s = r, got.get("load_s")
            trial.requests = max((lv.get("requests", share) for lv in got["levels"]), default=share)
            trial.levels = got["levels"]
            trial.figures = best_level(got["levels"], constraints, objective)
            trial.status, trial.reason = "measured", ""
            done += 1
            on_trial(trial, done, total)
        if "none" in ppl:
            for t in trials:
                q = t.settings["quantization"]
                if q in ppl and t.settings["runtime"] != "llamacpp":
                    t.perplexity_ratio = ppl[q] / ppl["none"]
        for t in alive:
            if t.status == "measured":
                broken = [v for v in violations(t.figures, constraints, t.perplexity_ratio)
                          if v in ("max_perplexity_ratio", "max_memory_bytes")]
                if broken:
                    t.status, t.reason = "rejected", "breaks " + ", ".join(
                        f"{b} ≤ {constraints[b]:g}" for b in broken)
        alive = [t for t in alive if t.status == "measured"]
        if not alive:
            break
    return trials
