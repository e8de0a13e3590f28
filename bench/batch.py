"""Batch benchmark: N short chat requests as one batch (/v1/files + /v1/batches) against the same
requests sent interactively at full concurrency, and an interactive request's TTFT while the batch runs
against its TTFT on the idle stack.

    python -m bench.batch [--lines N] [--max-tokens M]          # starts its own stack, stops it after
    python -m bench.batch --base-url URL --api-key KEY          # drives a running stack

Both sides run the same N chats (greedy, `ignore_eos`, `max_tokens` M) on the deployment `bench-smollm2`
(SmolLM2-135M, bench.serving's deployment, engine `max_num_seqs` 32): interactively, `max_num_seqs`
requests in flight at a time (the engine's seats: more only wait in its queue); as a batch, the job feeds
its lines (at most the deployment's seats in flight, at background priority). Reported: each side's
wall time and lines/s, their ratio, lost and duplicated answers (every custom_id once in the output
file), and the TTFT p50 of single streamed requests sent one after another while the batch runs,
against the same requests on the idle stack. Human-readable table, then one JSON object as the last line."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from dataclasses import replace
from statistics import median
from typing import Any

from bench.engine import progress
from bench.serving import (
    DEPLOYMENT,
    SHORT_CHAT,
    Api,
    Mode,
    _client,
    ensure_deployment,
    load_avg,
    stack_or_url,
)

MODE = Mode(requests=0, prompt_range=(0, 0), new_range=(0, 0), overload_new=0,
            engine={"max_num_seqs": 32, "max_queue": 64, "kv_cache_bytes": 600 << 20})
TOPICS = ["rivers", "mountains", "colours", "fruits", "planets", "birds", "metals", "trees", "oceans", "poets"]


def chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Name {2 + i % 5} {TOPICS[i % len(TOPICS)]} (request {i})."}]
            for i in range(n)]


async def _interactive(base_url: str, key: str, work: list[list[dict[str, str]]], max_tokens: int,
                       concurrency: int) -> tuple[float, int, int]:
    """(wall s, answered, failed) for every chat sent with `concurrency` in flight."""
    client = _client(base_url, key)
    gate = asyncio.Semaphore(concurrency)
    ok = failed = 0

    async def one(chat: list[dict[str, str]]) -> None:
        nonlocal ok, failed
        async with gate:
            try:
                r = await client.chat.completions.create(model=DEPLOYMENT, messages=chat, max_tokens=max_tokens,
                                                         temperature=0, extra_body={"ignore_eos": True})
                ok += r.usage.completion_tokens == max_tokens
                failed += r.usage.completion_tokens != max_tokens
            except Exception:  # noqa: BLE001 - counted
                failed += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(one(c) for c in work))
    finally:
        await client.close()
    return time.perf_counter() - started, ok, failed


async def _ttft(base_url: str, key: str) -> float:
    client = _client(base_url, key)
    try:
        t = time.perf_counter()
        stream = await client.chat.completions.create(model=DEPLOYMENT, messages=SHORT_CHAT, max_tokens=2,
                                                      temperature=0, stream=True, extra_body={"ignore_eos": True})
        first = None
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - t
        return first if first is not None else float("nan")
    finally:
        await client.close()


def ttfts(base_url: str, key: str, n: int, gap_s: float, until: Any = None) -> list[float]:
    out = []
    for _ in range(n):
        if until is not None and until():
            break
        out.append(asyncio.run(_ttft(base_url, key)))
        time.sleep(gap_s)
    return out


def run_batch(base_url: str, key: str, work: list[list[dict[str, str]]], max_tokens: int,
              probes: int) -> dict[str, Any]:
    import openai

    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=2, timeout=600)
    rows = [{"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": DEPLOYMENT, "messages": chat, "max_tokens": max_tokens, "temperature": 0,
                      "ignore_eos": True}} for i, chat in enumerate(work)]
    content = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    uploaded = client.files.create(file=("bench.jsonl", content), purpose="batch")
    started = time.perf_counter()
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    state: dict[str, Any] = {"batch": batch}

    def finished() -> bool:
        state["batch"] = client.batches.retrieve(batch.id)
        return state["batch"].status in ("completed", "failed", "cancelled", "expired")

    while client.batches.retrieve(batch.id).request_counts.completed < 32 and not finished():
        time.sleep(0.2)  # probe while the batch is in full flow, past its validation
    busy = ttfts(base_url, key, probes, 0.5, until=finished)
    while not finished():
        time.sleep(0.2)
    wall = time.perf_counter() - started
    done = state["batch"]
    out = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()] \
        if done.output_file_id else []
    seen = Counter(o["custom_id"] for o in out)
    good = sum(1 for o in out if o["response"]["status_code"] == 200
               and o["response"]["body"]["usage"]["completion_tokens"] == max_tokens)
    return {"status": done.status, "wall_s": wall, "answered": good,
            "lost": sum(1 for r in rows if r["custom_id"] not in seen),
            "duplicated": sum(c - 1 for c in seen.values() if c > 1),
            "failed": done.request_counts.failed, "busy_ttfts": busy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--probes", type=int, default=9, help="TTFT probes, idle and while the batch runs")
    parser.add_argument("--base-url")
    parser.add_argument("--api-key", help="with --base-url: a maintainer's or admin's key")
    parser.add_argument("--runtime", choices=("auto", "torch", "llamacpp"), default="auto",
                        help="the deployment's engine.runtime (default auto: llama.cpp for the bundled GGUF)")
    parser.add_argument("--keep-var", action="store_true")
    args = parser.parse_args()
    if bool(args.base_url) != bool(args.api_key):
        parser.error("--base-url and --api-key go together")
    started, load_start = time.perf_counter(), load_avg()
    with stack_or_url(args.base_url, args.api_key, args.keep_var) as (base_url, key):
        mode = replace(MODE, engine={**MODE.engine, "runtime": args.runtime})
        ensure_deployment(Api(base_url, key), mode)
        work = chats(args.lines)
        seats = MODE.engine["max_num_seqs"]
        progress("warming up")
        asyncio.run(_interactive(base_url, key, work[:seats], args.max_tokens, seats))
        progress(f"idle TTFT: {args.probes} single streamed requests")
        idle = ttfts(base_url, key, args.probes, 0.2)
        progress(f"interactive: {args.lines} chats, {seats} in flight")
        i_wall, i_ok, i_failed = asyncio.run(_interactive(base_url, key, work, args.max_tokens, seats))
        progress(f"batch: the same {args.lines} chats as one batch, TTFT probes while it runs")
        b = run_batch(base_url, key, work, args.max_tokens, args.probes)
    idle_p50, busy_p50 = median(idle), median(b["busy_ttfts"]) if b["busy_ttfts"] else float("nan")
    out = {"runtime": args.runtime, "lines": args.lines, "max_tokens": args.max_tokens, "seats": seats,
           "interactive_wall_s": round(i_wall, 2), "interactive_lines_per_s": round(args.lines / i_wall, 2),
           "interactive_failed": i_failed + (args.lines - i_ok - i_failed),
           "batch_status": b["status"], "batch_wall_s": round(b["wall_s"], 2),
           "batch_lines_per_s": round(args.lines / b["wall_s"], 2),
           "batch_over_interactive_throughput": round(i_wall / b["wall_s"], 3),
           "batch_answered": b["answered"], "batch_lost": b["lost"], "batch_duplicated": b["duplicated"],
           "batch_failed": b["failed"],
           "ttft_idle_p50_ms": round(idle_p50 * 1000, 1), "ttft_during_batch_p50_ms": round(busy_p50 * 1000, 1),
           "ttft_ratio": round(busy_p50 / idle_p50, 3), "ttft_probes_during_batch": len(b["busy_ttfts"]),
           "load_avg_start": load_start, "load_avg_end": load_avg(), "wall_s": round(time.perf_counter() - started, 1)}
    print(f"{'':34}{'interactive':>14}{'batch':>14}")
    print(f"{'wall s':34}{out['interactive_wall_s']:>14}{out['batch_wall_s']:>14}")
    print(f"{'lines/s':34}{out['interactive_lines_per_s']:>14}{out['batch_lines_per_s']:>14}")
    print(f"batch ÷ interactive throughput: {out['batch_over_interactive_throughput']}  "
          f"(lost {b['lost']}, duplicated {b['duplicated']}, failed {b['failed']})")
    print(f"TTFT p50 idle {out['ttft_idle_p50_ms']} ms · during the batch {out['ttft_during_batch_p50_ms']} ms "
          f"({len(b['busy_ttfts'])} probes) · ratio {out['ttft_ratio']}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
