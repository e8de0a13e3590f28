"""Autotune benchmark: the default engine settings against the ones a `tune` job recommends, on the
bundled chat model with bench.serving's workload, in one run; then adaptive admission under 4× overload.

    python -m bench.tune [--quick] [--trials N] [--target-ms MS]     # starts its own stack, stops it after
    python -m bench.tune --base-url URL --api-key KEY                  # drives a running stack

1. `bench-smollm2` is (re)set to the defaults (EngineConfig's: max_num_seqs 32, max_batch_tokens 256,
   512 MiB KV cache, no quantization) and measured end to end with bench.serving's e2e workload.
2. A `tune` job (POST /api/jobs/) on it: objective throughput, `ttft_p99_ms` ≤ the target, and as its
   workload the very chats of that e2e workload (`workload.chats`, a traffic sample) at concurrency 4 and
   the workload's size; timed. Each of
   its trials is measured through the stack too (a transient deployment of its own, driven through the
   gateway), so the best trial's own figure and its reproduction in step 3 measure the same path.
3. Its recommendation applied (POST /api/deployments/bench-smollm2/apply-tune), the new replica awaited,
   the same e2e workload measured again: the ratio of throughputs and both p99 TTFTs against the target,
   and the best trial's own figure (at the e2e workload's concurrency) beside this reproduction, with the
   ratio.
4. `ttft_target_ms` = the target on the tuned deployment, then 4 × its capacity of requests at once: p99
   TTFT of the admitted requests against the target, and the count of 5xx.
Human-readable lines, then one JSON object as the last line."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.engine import make_workload, model_folder, progress
from bench.serving import (
    DEPLOYMENT,
    FULL,
    QUICK,
    Api,
    Mode,
    e2e,
    ensure_deployment,
    pct,
    stack_or_url,
    warm_up_e2e,
)

DEFAULTS = {"max_num_seqs": 32, "max_queue": 256, "max_batch_tokens": 256, "kv_cache_bytes": 512 << 20,
            "quantization": "none", "runtime": "torch"}


def measure(base_url: str, key: str, work: Any) -> dict[str, Any]:
    results, wall = e2e(base_url, key, work.chats, work.max_new)
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
    return {"ok": len(ok), "n": len(results), "tokens_per_s": round(sum(r.tokens for r in ok) / wall, 1),
            "ttft_p99_ms": round(pct(ttfts, 0.99)), "ttft_p50_ms": round(pct(ttfts, 0.5)), "wall_s": round(wall, 1)}


def wait_serving(api: Api, engine: dict[str, Any], timeout: float = 900) -> None:
    """Until a ready replica serves a deployment whose config is `engine` (after a hot swap)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        d = api.must("GET", f"/api/deployments/{DEPLOYMENT}/")
        # every ready replica serves the new engine (its stats say which config it serves): the hot swap is over
        ready = [r for r in d["replica_set"] if r["state"] == "ready"]
        if (ready and d["status"] == "ready" and all(
                all((r["stats"].get("engine") or {}).get(k) == v for k, v in engine.items()) for r in ready)):
            time.sleep(3)  # the old engine drains
            return
        time.sleep(1)
    raise RuntimeError(f"{DEPLOYMENT} did not serve {engine} within {timeout:.0f} s")


def run_tune(api: Api, mode: Mode, work: Any, trials: int, target_ms: int,
             timeout: float) -> tuple[dict[str, Any], float]:
    # the trials serve the very chats the e2e side sends (a traffic sample), so their figures compare
    chats = [{"messages": chat, "max_tokens": n} for chat, n in zip(work.chats, work.max_new, strict=True)]
    params = {"deployment": DEPLOYMENT, "objective": "throughput", "max_trials": trials,
              "workload": {"chats": chats, "concurrency": sorted({4, mode.requests}), "requests": mode.requests},
              "constraints": {"ttft_p99_ms": target_ms, "max_perplexity_ratio": 1.5},
              "space": {"quantization": ["none", "int8", "w8a8"], "max_num_seqs": [8, 16, 32],
                        "max_batch_tokens": [128, 256, 512], "kv_cache_bytes": [256 << 20, 512 << 20]}}
    started = time.perf_counter()
    job = api.must("POST", "/api/jobs/", {"kind": "tune", "params": params})
    last = ""
    while True:
        job = api.must("GET", f"/api/jobs/{job['id']}/")
        if job["progress_message"] != last:
            last = job["progress_message"]
            progress(f"tune #{job['id']}: {job['progress'] * 100:.0f} % {last} (eta {job['eta_s'] or 0:.0f} s)")
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        if time.perf_counter() - started > timeout:
            api.call("POST", f"/api/jobs/{job['id']}/cancel")
            raise RuntimeError(f"the tune took over {timeout:.0f} s; cancelled")
        time.sleep(2)
    if job["status"] != "succeeded":
        raise RuntimeError(f"the tune {job['status']}: {job['error']}")
    return job, time.perf_counter() - started


def overload(base_url: str, key: str, api: Api, target_ms: int, max_new: int) -> dict[str, Any]:
    d = api.must("GET", f"/api/deployments/{DEPLOYMENT}/")
    api.must("PATCH", f"/api/deployments/{DEPLOYMENT}/", {"config": {"ttft_target_ms": target_ms}})
    engine = d["config"]["engine"]
    n = 4 * engine["max_num_seqs"]  # 4× what the replica runs at once
    from bench.serving import SHORT_CHAT

    waves = []
    for _ in range(3):  # the governor learns from the first wave's TTFTs
        results, wall = e2e(base_url, key, [SHORT_CHAT] * n, [max_new] * n)
        ok = [r for r in results if r.ok]
        ttfts = [r.ttft_s * 1000 for r in ok if r.ttft_s is not None]
        waves.append({"n": n, "ok": len(ok), "429": sum(r.status == 429 for r in results),
                      "5xx": sum(1 for r in results if r.status >= 500 or r.code.startswith("midstream:")),
                      "ttft_p99_ms": round(pct(ttfts, 0.99)), "retry_after_all": all(
                          r.retry_after for r in results if r.status == 429), "wall_s": round(wall, 1)})
        progress(f"overload wave: {waves[-1]}")
    api.must("PATCH", f"/api/deployments/{DEPLOYMENT}/", {"config": {"ttft_target_ms": 0}})
    return {"target_ms": target_ms, "waves": waves,
            "last_ratio": round(waves[-1]["ttft_p99_ms"] / target_ms, 2) if waves[-1]["ok"] else None,
            "5xx": sum(w["5xx"] for w in waves)}


def run(base_url: str, key: str, mode: Mode, trials: int, target_ms: int, tune_timeout: float) -> dict[str, Any]:
    from transformers import AutoTokenizer

    api = Api(base_url, key)
    folder = model_folder(None)
    work = make_workload(AutoTokenizer.from_pretrained(folder), mode.requests, mode.prompt_range, mode.new_range)
    ensure_deployment(api, Mode(mode.requests, mode.prompt_range, mode.new_range, mode.overload_new,
                                engine=dict(DEFAULTS)))
    progress("defaults: warm-up and measure")
    warm_up_e2e(base_url, key)
    default = measure(base_url, key, work)
    progress(f"defaults: {default}")
    job, tune_s = run_tune(api, mode, work, trials, target_ms, tune_timeout)
    result = job["result"]
    best = next((t for t in result["trials"] if t["number"] == result["recommended"]), None)
    progress(f"tune: {tune_s:.0f} s, recommended {best and best['settings']}: {result['why']}")
    tuned = None
    if best is not None:
        api.must("POST", f"/api/deployments/{DEPLOYMENT}/apply-tune", {"job": job["id"]})
        wait_serving(api, best["settings"])
        warm_up_e2e(base_url, key)
        tuned = measure(base_url, key, work)
        progress(f"tuned: {tuned}")
    over = overload(base_url, key, api, target_ms, max(8, mode.overload_new))
    own = best_trial_figures(best, mode.requests) if best else None
    return {"target_ms": target_ms, "default": default, "tuned": tuned,
            "ratio_tokens_per_s": round(tuned["tokens_per_s"] / default["tokens_per_s"], 2) if tuned else None,
            "default_meets_target": default["ttft_p99_ms"] <= target_ms,
            "tuned_meets_target": bool(tuned and tuned["ttft_p99_ms"] <= target_ms),
            "tune": {"job": job["id"], "wall_s": round(tune_s), "trials": len(result["trials"]),
                     "recommended": best and best["settings"], "why": result["why"],
                     "best_trial": own,
                     "reproduced_ratio": round(tuned["tokens_per_s"] / own["tokens_per_s"], 2)
                     if tuned and own and own["tokens_per_s"] else None,
                     "failed": [t["reason"] for t in result["trials"] if t["status"] == "failed"],
                     "all": [{"number": t["number"], "status": t["status"], "settings": t["settings"],
                              "levels": [{k: round(lv[k], 1) for k in ("concurrency", "tokens_per_s", "ttft_p99_ms")}
                                         for lv in t["levels"]]} for t in result["trials"]]},
            "overload": over}


def best_trial_figures(best: dict[str, Any], burst: int) -> dict[str, Any]:
    """The best trial's own figures (measured through the stack by the tune) at the concurrency level that
    matches the e2e workload (all `burst` requests at once), else at the level it was judged by."""
    level = next((lv for lv in best["levels"] if lv["concurrency"] == burst), best["figures"])
    return {"number": best["number"], "concurrency": level["concurrency"],
            "tokens_per_s": round(level["tokens_per_s"], 1), "ttft_p99_ms": round(level["ttft_p99_ms"]),
            "judged": {"concurrency": best["figures"]["concurrency"],
                       "tokens_per_s": round(best["figures"]["tokens_per_s"], 1)}}


def report(out: dict[str, Any]) -> str:
    tune, tuned = out["tune"], out["tuned"]
    lines = [f"defaults: {out['default']}", f"tuned:    {tuned}", f"ratio:    {out['ratio_tokens_per_s']} "
             f"(tuned ÷ defaults, both end to end; target p99 TTFT ≤ {out['target_ms']} ms: defaults "
             f"{'met' if out['default_meets_target'] else 'missed'}, tuned {'met' if out['tuned_meets_target'] else 'missed'})"]
    own = tune["best_trial"]
    if own and tuned:
        lines.append(f"best trial #{own['number']} (its own figure, through the stack, concurrency {own['concurrency']}): "
                     f"{own['tokens_per_s']} tok/s, p99 TTFT {own['ttft_p99_ms']} ms")
        lines.append(f"bench.serving's reproduction of it: {tuned['tokens_per_s']} tok/s, p99 TTFT "
                     f"{tuned['ttft_p99_ms']} ms; ratio {tune['reproduced_ratio']} (goal within 10 %: "
                     f"{'met' if tune['reproduced_ratio'] and abs(tune['reproduced_ratio'] - 1) <= 0.1 else 'not met'})")
    lines.append(f"tune: {tune['wall_s']} s, {tune['trials']} trials, recommended {tune['recommended']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="bench.serving's quick workload, 3 trials")
    parser.add_argument("--trials", type=int, help="max_trials of the tune (default 6, --quick 3)")
    parser.add_argument("--target-ms", type=int, default=3000, help="the p99 TTFT target (default 3000)")
    parser.add_argument("--tune-timeout", type=float, default=1800, help="give up on the tune after this (s)")
    parser.add_argument("--base-url")
    parser.add_argument("--api-key")
    args = parser.parse_args()
    mode = QUICK if args.quick else FULL
    trials = args.trials or (3 if args.quick else 6)
    started = time.perf_counter()
    with stack_or_url(args.base_url, args.api_key) as (base_url, key):
        out = run(base_url, key, mode, trials, args.target_ms, args.tune_timeout)
    out.update(quick=args.quick, wall_s=round(time.perf_counter() - started, 1))
    print(report(out))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
