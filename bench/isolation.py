"""Isolation benchmark: what one heavy request does to everyone else's tokens, against a baseline
engine measured in the same run.

    python -m bench.isolation [--quick] [--baseline REF] [--model FOLDER] [--only decode,gaps,ttft]

(a) decode: one decode step of 32 sequences with 1,000-token contexts, attention reading the paged
    cache in place (this checkout) against the copy-based attention it replaced (each step gathered
    every sequence's blocks into a padded buffer, per layer; re-implemented below over the same
    cache and weights). Also with deliberately interleaved blocks (the in-place path's worst case).
(b) gaps: 4 chat streams run; an 8,000-token prompt (max_tokens 1) arrives. The worst gap between
    two tokens of a stream against the streams' median gap, whether every stream and the long
    request complete, and the long request's time to first token.
(c) ttft: bench.serving's workload (32 concurrent chats, prompts 20-300 tokens, answers 16-128) on
    the engine alone, as bench.serving's direct side runs it: TTFT p50/p99 and tokens/s.

(b) and (c) run twice: with this checkout's engine, and with the engine of `--baseline` (default: the
commit before chunked prefill), exported with `git archive` and run in a child process, each with
its own default scheduling settings and the same KV cache. Human-readable table, then one JSON
object as the last line."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from statistics import median
from typing import Any

import torch
import torch.nn.functional as F

from bench.engine import make_workload, model_folder, progress
from bench.texts import EVAL_TEXT

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "15b9971"  # main before chunked prefill, in-place attention and KV limits
STREAM_CHAT = [{"role": "user", "content": "Tell me a long story about a river town and its people."}]


# -- (a) decode step time ------------------------------------------------------------------------------------------

def copy_decode(runner: Any, seqs: list[Any]) -> torch.Tensor:
    """The replaced decode: gather each layer's blocks of the whole batch into one padded buffer."""
    stack, dev, bs = runner.stack, runner.device, runner.block_size
    B = len(seqs)
    ids_t = torch.tensor([s.token_ids[-1] for s in seqs], device=dev)
    pos = [len(s) - 1 for s in seqs]
    pos_t = torch.tensor(pos, device=dev)
    slots_t = torch.tensor([s.block_table[p // bs] * bs + p % bs for s, p in zip(seqs, pos, strict=True)], device=dev)
    nb = max(len(s.block_table) for s in seqs)
    table = torch.tensor([s.block_table + [0] * (nb - len(s.block_table)) for s in seqs], device=dev)
    L = nb * bs
    mask = (torch.arange(L, device=dev)[None, :] <= pos_t[:, None]).view(B, 1, 1, L)
    Hkv, D, G = stack.num_kv_heads, stack.head_dim, runner.groups
    x, rope = stack.with_positions(stack.token_embeddings(ids_t), pos_t)
    buf = runner.kv.new_empty((2, Hkv, B * nb, bs, D))
    for i in range(runner.num_layers):
        q, k, v = stack.qkv(i, x, rope)
        runner._write(i, k, v, slots_t)
        kv = torch.index_select(runner.kv[i], 2, table.view(-1), out=buf).view(2, Hkv, B, L, D).transpose(1, 2)
        o = F.scaled_dot_product_attention(q.view(B, Hkv, G, D), kv[0], kv[1], attn_mask=mask,
                                           scale=stack.layer_scale(i))
        x = stack.post(i, x, o.reshape(B, -1))
    return stack.logits(x).float()


def decode(folder: Path, batch: int, ctx: int, rounds: int) -> dict[str, float]:
    from engine import EngineConfig, LLMEngine, SamplingParams
    from engine.sequence import Sequence

    steps = rounds * 3
    per_token = 30 * 2 * 3 * 64 * 4
    kv = batch * (ctx + steps + 32) * per_token
    engine = LLMEngine.from_pretrained(folder, EngineConfig(kv_cache_bytes=kv, max_num_seqs=batch))
    runner, bm = engine.runner, engine.scheduler.block_manager
    rng = torch.Generator().manual_seed(0)

    def batch_of(interleaved: bool) -> list[Any]:
        seqs = [Sequence(torch.randint(100, 40000, (ctx,), generator=rng).tolist(),
                         SamplingParams(max_new_tokens=steps + 8)) for _ in range(batch)]
        need = bm.blocks_needed(ctx + steps + 1)
        for j, s in enumerate(seqs):
            if interleaved:  # block j, j+B, j+2B…: every block its own run
                s.block_table = [j + batch * k for k in range(need)]
            else:
                assert bm.hold(s, ctx + steps + 1)
            s.num_computed = ctx - 1  # the cache holds their keys (values do not change the timing)
        return seqs

    def step(seqs: list[Any], fn: Any) -> float:
        t = time.perf_counter()
        logits = fn(seqs)
        dt = time.perf_counter() - t
        for s, tok in zip(seqs, logits.argmax(-1).tolist(), strict=True):
            s.num_computed += 1
            s.token_ids.append(tok)
        return dt

    in_place = lambda seqs: runner.forward(seqs, [1] * len(seqs))  # noqa: E731
    contiguous = batch_of(False)
    times: dict[str, list[float]] = {"in_place": [], "copy": []}
    with torch.inference_mode():
        step(contiguous, in_place)  # warm up both paths
        step(contiguous, lambda s: copy_decode(runner, s))
        for _ in range(rounds):  # alternate, so that drift in the machine hits both
            times["in_place"].append(step(contiguous, in_place))
            times["copy"].append(step(contiguous, lambda s: copy_decode(runner, s)))
        for s in contiguous:
            bm.free(s)
        scattered = batch_of(True)
        step(scattered, in_place)
        times["scattered"] = [step(scattered, in_place) for _ in range(rounds)]
    engine.close()
    out = {k: median(v) * 1000 for k, v in times.items()}
    return {"decode_step_ms": out["in_place"], "decode_step_copy_ms": out["copy"],
            "decode_step_scattered_ms": out["scattered"], "decode_ratio": out["in_place"] / out["copy"]}


# -- (b) gaps while a long prompt is prefilled ------------------------------------------------------------------------

def gaps(folder: Path, long_tokens: int) -> dict[str, Any]:
    from engine import EngineConfig, LLMEngine, SamplingParams

    engine = LLMEngine.from_pretrained(folder, EngineConfig())
    engine.generate("warm up", SamplingParams(max_new_tokens=2)).result()
    text_ids = engine.tokenizer(EVAL_TEXT, add_special_tokens=False)["input_ids"]
    long_prompt = (text_ids * (long_tokens // len(text_ids) + 1))[:long_tokens]
    stamps: list[list[float]] = [[] for _ in range(4)]
    handles = [engine.generate(STREAM_CHAT, SamplingParams(max_new_tokens=4000, ignore_eos=True)) for _ in range(4)]
    done = threading.Event()

    def read(i: int) -> None:
        for delta in handles[i]:
            stamps[i].extend([time.perf_counter()] * len(delta.token_ids))
            if done.is_set() and len(stamps[i]) >= after[i] + 20:
                handles[i].cancel()

    after = [10**9] * 4
    readers = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for th in readers:
        th.start()
    while min(len(s) for s in stamps) < 20:
        time.sleep(0.01)
    t = time.perf_counter()
    long = engine.generate(long_prompt, SamplingParams(max_new_tokens=1)).result(timeout=900)
    long_s = time.perf_counter() - t
    after = [len(s) for s in stamps]
    done.set()
    for th in readers:
        th.join(timeout=300)
    finished = [h.result(timeout=60).finish_reason for h in handles]
    engine.close()
    all_gaps = [b - a for s in stamps for a, b in zip(s, s[1:], strict=False) if b > a]
    return {"gap_worst_ms": max(all_gaps) * 1000, "gap_median_ms": median(all_gaps) * 1000,
            "gap_ratio": max(all_gaps) / median(all_gaps), "long_ttft_s": long_s,
            "long_completed": long.usage.completion_tokens == 1, "long_prompt_tokens": len(long_prompt),
            "streams_completed": all(r in ("cancelled", "length") for r in finished),
            "stream_tokens": [len(s) for s in stamps]}


# -- (c) TTFT of 32 concurrent chats ----------------------------------------------------------------------------------

def ttft(folder: Path, requests: int) -> dict[str, Any]:
    from bench.serving import FULL, SHORT_CHAT, _run_direct, pct
    from engine import EngineConfig, LLMEngine

    engine = LLMEngine.from_pretrained(folder, EngineConfig(**FULL.engine))
    try:
        _run_direct(engine, [(SHORT_CHAT, 4)] * 4)  # warm up as bench.serving does
        work = make_workload(engine.tokenizer, requests, FULL.prompt_range, FULL.new_range)
        results, wall = _run_direct(engine, list(zip(work.chats, work.max_new, strict=True)))
    finally:
        engine.close()
    ttfts = [r.ttft_s * 1000 for r in results if r.ttft_s is not None]
    return {"ttft_p50_ms": pct(ttfts, 0.5), "ttft_p99_ms": pct(ttfts, 0.99),
            "tok_s": sum(r.tokens for r in results) / wall, "all_ok": all(r.ok for r in results)}


# -- the baseline in a child process -------------------------------------------------------------------------------

def baseline(ref: str, phase: str, folder: Path, arg: int) -> dict[str, Any]:
    """Run `phase` with the engine of commit `ref` (its engine/ exported beside this checkout's bench/)."""
    with tempfile.TemporaryDirectory(prefix="tauon-baseline-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "engine"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        env = {**os.environ, "PYTHONPATH": f"{tmp}{os.pathsep}{ROOT}"}
        out = subprocess.run([sys.executable, "-m", "bench.isolation", "--phase", phase, "--model", str(folder),
                              "--arg", str(arg)], env=env, cwd=tmp, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"baseline {phase} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller contexts and workloads (a few minutes)")
    parser.add_argument("--baseline", default=BASELINE, help=f"git ref of the engine to compare with ({BASELINE})")
    parser.add_argument("--model", help="model folder (default: the bundled SmolLM2, converted)")
    parser.add_argument("--only", default="decode,gaps,ttft", help="comma-separated phases")
    parser.add_argument("--phase", help=argparse.SUPPRESS)  # a child's one phase
    parser.add_argument("--arg", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = model_folder(args.model)
    if args.phase:  # in the baseline's child: one phase, one JSON line
        print(json.dumps(gaps(folder, args.arg) if args.phase == "gaps" else ttft(folder, args.arg)))
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    phases = args.only.split(",")
    long_tokens, requests = (2000, 16) if args.quick else (8000, 32)
    out: dict[str, Any] = {"baseline": args.baseline, "quick": args.quick, "threads": torch.get_num_threads()}
    rows: list[tuple[str, Any, Any, str]] = []
    if "decode" in phases:
        progress("decode: 32 sequences × 1,000-token contexts")
        d = decode(folder, 32, 500 if args.quick else 1000, 3 if args.quick else 5)
        out.update(d)
        rows += [("decode step, ms (in place vs copy)", d["decode_step_ms"], d["decode_step_copy_ms"], "≤ 0.6×"),
                 ("decode step with scattered blocks, ms", d["decode_step_scattered_ms"], d["decode_step_copy_ms"], "")]
    if "gaps" in phases:
        progress(f"gaps: a {long_tokens}-token prompt among 4 streams (this checkout)")
        now = gaps(folder, long_tokens)
        progress("gaps: the baseline")
        base = baseline(args.baseline, "gaps", folder, long_tokens)
        out.update({f"{k}": v for k, v in now.items()}, **{f"baseline_{k}": v for k, v in base.items()})
        rows += [("worst gap ÷ median gap", now["gap_ratio"], base["gap_ratio"], "≤ 3"),
                 ("worst gap between tokens, ms", now["gap_worst_ms"], base["gap_worst_ms"], ""),
                 ("median gap, ms", now["gap_median_ms"], base["gap_median_ms"], ""),
                 ("long prompt: time to its token, s", now["long_ttft_s"], base["long_ttft_s"], ""),
                 ("streams and long request completed", now["streams_completed"] and now["long_completed"],
                  base["streams_completed"] and base["long_completed"], "")]
    if "ttft" in phases:
        progress(f"ttft: {requests} concurrent chats (this checkout)")
        now = ttft(folder, requests)
        progress("ttft: the baseline")
        base = baseline(args.baseline, "ttft", folder, requests)
        out.update(ttft_p50_ms=now["ttft_p50_ms"], ttft_p99_ms=now["ttft_p99_ms"], tok_s=now["tok_s"],
                   baseline_ttft_p50_ms=base["ttft_p50_ms"], baseline_ttft_p99_ms=base["ttft_p99_ms"],
                   baseline_tok_s=base["tok_s"], ttft_ratio=now["ttft_p50_ms"] / base["ttft_p50_ms"])
        rows += [("TTFT p50, ms", now["ttft_p50_ms"], base["ttft_p50_ms"], "≤ 0.5×"),
                 ("TTFT p99, ms", now["ttft_p99_ms"], base["ttft_p99_ms"], ""),
                 ("tokens/s", now["tok_s"], base["tok_s"], "")]
    print(f"\n{'':42} {'this':>12} {'baseline':>12} {'ratio':>8}  goal")
    for name, a, b, goal in rows:
        if isinstance(a, bool):
            print(f"{name:42} {a!s:>12} {b!s:>12} {'':>8}  {goal}")
        else:
            print(f"{name:42} {a:12.1f} {b:12.1f} {a / b:8.2f}  {goal}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
