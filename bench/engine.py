"""Engine benchmark: the same chat workload through Hugging Face and through our engine.

    python -m bench.engine [--quick] [--model FOLDER]

(a) HF `generate` one request at a time (first 8 requests), (b) HF `generate` in padded static
batches of 16, (c) transformers' continuous batching (`paged|sdpa`), (d) our engine fp32,
(e) `int8`, (f) `w8a8`; all greedy with a fixed number of new tokens per request (end-of-sequence
ignored, so every system does the same work). Plus a single-stream decode test, perplexity
ratios, and the machine's memory bandwidth and fp32 FLOP/s measured in the same run, against
which each figure is compared. Human-readable table, then one JSON object as the last line."""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench.models import smollm2
from bench.peers import measure_peers
from bench.texts import EVAL_TEXT


@dataclass(slots=True)
class Workload:
    prompts: list[list[int]]
    max_new: list[int]
    chats: list[list[dict[str, str]]] = field(default_factory=list)  # the messages each prompt was templated from

    @property
    def tokens(self) -> int:
        return sum(self.max_new)


def model_folder(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    return smollm2()


def make_workload(tokenizer: Any, n: int, prompt_range: tuple[int, int], new_range: tuple[int, int],
                  seed: int = 0) -> Workload:
    """n chat requests whose templated prompts have prompt_range tokens (fixed seed)."""
    rng = random.Random(seed)
    text_ids = tokenizer(EVAL_TEXT * 2, add_special_tokens=False)["input_ids"]
    overhead = len(tokenizer.apply_chat_template([{"role": "user", "content": ""}], tokenize=False,
                                                 add_generation_prompt=True))
    overhead_ids = len(tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                                               add_generation_prompt=True),
                                 add_special_tokens=False)["input_ids"])
    del overhead
    prompts, max_new, chats = [], [], []
    for _ in range(n):
        target = rng.randint(*prompt_range)
        start = rng.randrange(0, len(text_ids) // 2)
        content = tokenizer.decode(text_ids[start:start + max(1, target - overhead_ids)])
        chat = [{"role": "user", "content": "Continue this text: " + content}]
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][: prompt_range[1]]
        prompts.append(ids)
        max_new.append(rng.randint(*new_range))
        chats.append(chat)
    return Workload(prompts, max_new, chats)


class RssSampler:
    """Peak resident memory (VmRSS) while a phase runs, sampled every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss_mb())
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss_mb())


# -- the machine --

def measure_machine(quick: bool) -> dict[str, float]:
    """Streaming read bandwidth, out-of-cache fp32 matrix-vector bandwidth, fp32 matmul FLOP/s."""
    big = torch.ones(64 * 1024 * 1024 if quick else 128 * 1024 * 1024)  # 256 / 512 MB
    big.sum()
    t = time.perf_counter()
    reps = 3
    for _ in range(reps):
        big.sum()
    read_gbs = reps * big.numel() * 4 / (time.perf_counter() - t) / 1e9
    del big
    mats = [torch.randn(1536, 576) for _ in range(48 if quick else 96)]  # 170 / 340 MB, beyond any cache
    x = torch.randn(1, 576)
    for m in mats:
        F.linear(x, m)
    t = time.perf_counter()
    for m in mats:
        F.linear(x, m)
    matvec_gbs = sum(m.numel() * 4 for m in mats) / (time.perf_counter() - t) / 1e9
    del mats
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    t = time.perf_counter()
    for _ in range(3):
        a @ b
    gflops = 3 * 2 * 2048 ** 3 / (time.perf_counter() - t) / 1e9
    return {"read_gbs": read_gbs, "matvec_gbs": matvec_gbs, "gflops": gflops}


# -- our engine --

def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_engine(folder: Path, quantization: str, work: Workload, single_new: int, kv_bytes: int,
               ppl_ids: list[int]) -> dict[str, Any]:
    progress(f"engine {quantization}")
    from engine import EngineConfig, LLMEngine, SamplingParams
    from engine.runner import perplexity

    before = RssSampler.rss_mb()
    with RssSampler() as rss:
        t0 = time.perf_counter()
        engine = LLMEngine.from_pretrained(folder, EngineConfig(quantization=quantization, kv_cache_bytes=kv_bytes,
                                                                max_num_seqs=64, max_queue=1024))
        load_s = time.perf_counter() - t0
        weight_bytes = sum(p.numel() * p.element_size() for p in engine.stack.parameters())
        if quantization != "none":
            weight_bytes = _quantized_bytes(engine.stack)
        engine.generate("warm up", SamplingParams(max_new_tokens=2)).result()
        # single stream: decode rate after the first token
        h = engine.generate([{"role": "user", "content": "Tell me a long story about a river town."}],
                            SamplingParams(max_new_tokens=single_new, ignore_eos=True))
        r = h.result()
        single = (single_new - 1) / (r.total_s - (r.ttft_s or 0.0))
        # the workload, all submitted at once
        t = time.perf_counter()
        handles = [engine.generate(p, SamplingParams(max_new_tokens=m, ignore_eos=True))
                   for p, m in zip(work.prompts, work.max_new, strict=True)]
        results = [x.result() for x in handles]
        wall = time.perf_counter() - t
        stats = engine.stats()
        engine.close()
    ppl = perplexity(engine.stack, ppl_ids)  # outside the RSS window: 1,024 × vocab logits are not serving memory
    del engine
    _trim()
    generated = sum(x.usage.completion_tokens for x in results)
    ttfts = sorted(x.ttft_s or 0.0 for x in results)
    return {"tok_s": generated / wall, "wall_s": wall, "generated": generated, "single_tok_s": single,
            "ppl": ppl, "outputs": [x.token_ids for x in results], "peak_batch": stats.peak_batch_size,
            "ttft_p50_s": ttfts[len(ttfts) // 2], "rss_peak_mb": rss.peak, "rss_before_mb": before,
            "weight_mb": weight_bytes / 2**20, "load_s": load_s}


def _trim() -> None:
    """Give freed memory back to the OS so the next phase's RSS starts clean."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def _quantized_bytes(stack: torch.nn.Module) -> int:
    from engine.quantize import Int8Linear

    total = 0
    seen: set[int] = set()
    for mod in stack.modules():
        if isinstance(mod, Int8Linear):
            total += mod.in_features * mod.out_features + mod.out_features * 4
        elif not list(mod.children()):
            for p in mod.parameters(recurse=False):
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel() * p.element_size()
    return total


# -- Hugging Face --

def _kv_bytes_per_token(config: Any) -> int:
    """K and V of every layer for one token, fp32: what one token of cache costs any of the systems."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * 4


def run_hf(folder: Path, work: Workload, single_new: int, n_seq: int, static_bs: int,
           kv_bytes: int, batch_tokens: int) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: dict[str, Any] = {}

    def gen(ids: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
        with torch.inference_mode():
            return model.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, eos_token_id=None,
                                  pad_token_id=pad)

    # single stream
    chat = tok.apply_chat_template([{"role": "user", "content": "Tell me a long story about a river town."}],
                                   tokenize=False, add_generation_prompt=True)
    ids = tok(chat, return_tensors="pt", add_special_tokens=False)["input_ids"]
    gen(ids, torch.ones_like(ids), 2)
    t = time.perf_counter()
    gen(ids, torch.ones_like(ids), 1)
    t1 = time.perf_counter() - t
    t = time.perf_counter()
    gen(ids, torch.ones_like(ids), single_new)
    out["single_tok_s"] = (single_new - 1) / (time.perf_counter() - t - t1)
    progress("HF one at a time")
    seq_out, tokens = [], 0
    t = time.perf_counter()
    for p, m in zip(work.prompts[:n_seq], work.max_new[:n_seq], strict=True):
        x = torch.tensor([p])
        seq_out.append(gen(x, torch.ones_like(x), m)[0, len(p):].tolist())
        tokens += m
    out["seq_tok_s"] = tokens / (time.perf_counter() - t)
    out["seq_outputs"] = seq_out
    progress("HF static batches")  # padded on the left; each batch runs to its longest request
    t = time.perf_counter()
    for i in range(0, len(work.prompts), static_bs):
        batch, news = work.prompts[i:i + static_bs], work.max_new[i:i + static_bs]
        width = max(len(p) for p in batch)
        x = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        gen(x, mask, max(news))
    out["static_tok_s"] = work.tokens / (time.perf_counter() - t)
    # The same KV memory and the same tokens per step as the engine (it takes 60 % of RAM otherwise), and a
    # warm-up request before the clock starts, as the engine gets.
    progress("HF continuous batching")
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    gc_cfg = GenerationConfig(max_new_tokens=max(work.max_new), do_sample=False, eos_token_id=-1, pad_token_id=pad)
    page = 256
    cb_cfg = ContinuousBatchingConfig(page_size=page, num_blocks=max(1, kv_bytes // (_kv_bytes_per_token(model.config) * page)),
                                      max_batch_tokens=batch_tokens)
    done = 0
    with model.continuous_batching_context_manager(generation_config=gc_cfg, continuous_batching_config=cb_cfg,
                                                   block=True, timeout=5) as manager:
        manager.add_request(work.prompts[0][:16], max_new_tokens=2, eos_token_id=-1)
        warm_deadline = time.time() + 300
        while time.time() < warm_deadline and not ((w := manager.get_result(timeout=1)) and w.is_finished()):
            pass
        t = time.perf_counter()
        for p, m in zip(work.prompts, work.max_new, strict=True):
            manager.add_request(p, max_new_tokens=m, eos_token_id=-1)
        generated = 0
        deadline = time.time() + 1800
        while done < len(work.prompts) and time.time() < deadline:
            result = manager.get_result(timeout=1)
            if result is not None and result.is_finished():
                done += 1
                generated += len(result.generated_tokens)
    out["cb_tok_s"] = generated / (time.perf_counter() - t)
    out["cb_done"] = done
    out["attn"] = model.config._attn_implementation
    model = None  # free it before the next phase
    _trim()
    return out


def greedy_check(folder: Path, prompts: list[list[int]], ours: list[list[int]],
                 theirs: list[list[int]]) -> tuple[bool, int, list[float]]:
    """All equal, or diverging only where HF's own top-two logits were within 1e-4."""
    from transformers import AutoModelForCausalLM

    from bench.parity import NEAR_TIE, top2_gap

    exact, gaps, ok = 0, [], True
    model = None
    for p, a, b in zip(prompts, ours, theirs, strict=True):
        if a == b:
            exact += 1
            continue
        i = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
        model = model or AutoModelForCausalLM.from_pretrained(folder).eval()
        gap = top2_gap(model, p + b[:i])
        gaps.append(gap)
        ok = ok and gap < NEAR_TIE
    return ok, exact, gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small workload (CI smoke test, < 2 minutes)")
    parser.add_argument("--model", help="model folder (default: SmolLM2-135M-Instruct from the bundled GGUF)")
    args = parser.parse_args()
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder = model_folder(args.model)
    tok = AutoTokenizer.from_pretrained(folder)
    if args.quick:
        work = make_workload(tok, 12, (20, 80), (8, 24))
        n_seq, static_bs, single_new, kv_bytes = 3, 16, 24, 64 << 20
    else:
        work = make_workload(tok, 64, (20, 300), (16, 128))
        n_seq, static_bs, single_new, kv_bytes = 8, 16, 128, 1200 << 20
    ppl_ids = tok(EVAL_TEXT)["input_ids"][:1024]
    started = time.perf_counter()
    baseline_rss = RssSampler.rss_mb()  # noqa: F841
    machine = measure_machine(args.quick)
    _trim()
    eng = {q: run_engine(folder, q, work, single_new, kv_bytes, ppl_ids) for q in ("none", "int8", "w8a8")}
    from engine import EngineConfig

    hf = run_hf(folder, work, single_new, n_seq, static_bs, kv_bytes, EngineConfig().max_batch_tokens)
    peers = measure_peers(folder, quick=args.quick)  # llama.cpp, CTranslate2, Tauon through each runtime
    match, exact, gaps = greedy_check(folder, work.prompts[:n_seq], [o for o in eng["none"]["outputs"][:n_seq]],
                                      hf["seq_outputs"])
    fp32 = eng["none"]
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(folder)
    n_params = fp32["weight_mb"] * 2**20 / 4  # fp32 stack
    bw_ceiling = machine["matvec_gbs"] * 1e9 / (fp32["weight_mb"] * 2**20)
    bw_ceiling_int8 = machine["matvec_gbs"] * 1e9 / (eng["int8"]["weight_mb"] * 2**20)
    flop_ceiling = machine["gflops"] * 1e9 / (2 * n_params)
    kv_mb = kv_bytes / 2**20
    rss_budget = fp32["weight_mb"] + kv_mb + 300
    rss = {q: e["rss_peak_mb"] - e["rss_before_mb"] for q, e in eng.items()}
    engine_rss = rss["none"]
    del baseline_rss

    rows = [
        ("(a) HF generate, one at a time", hf["seq_tok_s"], f"first {n_seq} requests"),
        (f"(b) HF generate, static batches of {static_bs}", hf["static_tok_s"], "padded, runs to the longest"),
        ("(c) HF continuous batching (same KV bytes and tokens/step, warmed)", hf["cb_tok_s"], f"{hf['attn']}, {hf['cb_done']} done"),
        ("(d) engine fp32", fp32["tok_s"], f"peak batch {fp32['peak_batch']}, ttft p50 {fp32['ttft_p50_s']:.1f}s"),
        ("(e) engine int8", eng["int8"]["tok_s"], f"ppl ×{eng['int8']['ppl'] / fp32['ppl']:.4f}"),
        ("(f) engine w8a8", eng["w8a8"]["tok_s"], f"ppl ×{eng['w8a8']['ppl'] / fp32['ppl']:.4f}"),
        ("single stream HF fp32", hf["single_tok_s"], f"{single_new} tokens"),
        ("single stream engine fp32", fp32["single_tok_s"], f"{fp32['single_tok_s'] / bw_ceiling:.0%} of bandwidth ceiling"),
        ("single stream engine int8", eng["int8"]["single_tok_s"],
         f"{eng['int8']['single_tok_s'] / bw_ceiling_int8:.0%} of int8 bandwidth ceiling"),
        ("single stream engine w8a8", eng["w8a8"]["single_tok_s"], ""),
    ]
    print(f"\nmodel {cfg.model_type} ({folder}), {len(work.prompts)} requests, {work.tokens} new tokens, "
          f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    print(f"machine: read {machine['read_gbs']:.1f} GB/s · fp32 matvec {machine['matvec_gbs']:.1f} GB/s · "
          f"fp32 matmul {machine['gflops']:.0f} GFLOP/s")
    print(f"ceilings: single stream fp32 {bw_ceiling:.1f} tok/s (matvec GB/s ÷ {fp32['weight_mb']:.0f} MB), "
          f"int8 {bw_ceiling_int8:.1f} tok/s (÷ {eng['int8']['weight_mb']:.0f} MB); batched {flop_ceiling:.0f} tok/s "
          f"(GFLOP/s ÷ 2×params)")
    print(f"\n{'system':<46} {'tok/s':>8}  notes")
    for name, value, note in rows:
        print(f"{name:<46} {value:>8.1f}  {note}")
    print(f"\nengine fp32 vs HF static ×{fp32['tok_s'] / hf['static_tok_s']:.2f} · vs HF CB "
          f"×{fp32['tok_s'] / hf['cb_tok_s']:.2f} · w8a8 vs fp32 ×{eng['w8a8']['tok_s'] / fp32['tok_s']:.2f} · "
          f"batched fp32 at {fp32['tok_s'] / flop_ceiling:.0%} of FLOP ceiling")
    peers.print()
    print(f"greedy match vs HF: {exact}/{n_seq} identical, near-tie gaps at divergences {gaps} → {match}")
    print(f"engine RSS growth while loaded and serving: fp32 {rss['none']:.0f} MB, int8 {rss['int8']:.0f} MB, "
          f"w8a8 {rss['w8a8']:.0f} MB (fp32 budget weights {fp32['weight_mb']:.0f} + KV {kv_mb:.0f} "
          f"+ 300 = {rss_budget:.0f} MB); total {time.perf_counter() - started:.0f} s")
    print(json.dumps({
        "hf_seq_tok_s": round(hf["seq_tok_s"], 2), "hf_static_tok_s": round(hf["static_tok_s"], 2),
        "hf_cb_tok_s": round(hf["cb_tok_s"], 2), "engine_tok_s": round(fp32["tok_s"], 2),
        "engine_int8_tok_s": round(eng["int8"]["tok_s"], 2), "engine_w8a8_tok_s": round(eng["w8a8"]["tok_s"], 2),
        "single_stream_tok_s": round(fp32["single_tok_s"], 2),
        "single_stream_int8_tok_s": round(eng["int8"]["single_tok_s"], 2),
        "single_stream_w8a8_tok_s": round(eng["w8a8"]["single_tok_s"], 2),
        "hf_single_stream_tok_s": round(hf["single_tok_s"], 2),
        "int8_ppl_ratio": round(eng["int8"]["ppl"] / fp32["ppl"], 4),
        "w8a8_ppl_ratio": round(eng["w8a8"]["ppl"] / fp32["ppl"], 4), "fp32_ppl": round(fp32["ppl"], 3),
        "greedy_match": match, "greedy_exact": exact, "greedy_compared": n_seq,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "engine_rss_mb": round(engine_rss, 1), "engine_int8_rss_mb": round(rss["int8"], 1),
        "engine_w8a8_rss_mb": round(rss["w8a8"], 1), "rss_budget_mb": round(rss_budget, 1),
        "read_gbs": round(machine["read_gbs"], 2), "matvec_gbs": round(machine["matvec_gbs"], 2),
        "gflops": round(machine["gflops"], 1), "single_stream_ceiling_tok_s": round(bw_ceiling, 2),
        "batched_ceiling_tok_s": round(flop_ceiling, 1), "requests": len(work.prompts),
        "new_tokens": work.tokens, "quick": args.quick, "wall_s": round(time.perf_counter() - started, 1),
        **peers.figures,
    }))


if __name__ == "__main__":
    main()
