"""`python -m bench.explain_isolation`: does Explain starve serving? User B's short completion (10 new tokens, greedy)
on SmolLM2-135M, idle and while N Shapley explain runs share the replica's process (as on a serving worker:
the engine's loop thread beside explain threads running attribution over the engine's own weights), with
explain's priority off (its forwards run whole, as before issue 13) and on (paced in ~0.1 s chunks,
waiting before each while the engine has work: engine/pacer.py, as workers/explain.py runs it).

    python -m bench.explain_isolation [--model FOLDER] [--explains 4] [--requests 5] [--yield-s 2]

B's latency is the median (and worst) of --requests completions sent one after another, each after a
pause; explain's pace is the attribution sequences it ran per second in the phase. Ratios are against the
idle latency of the same run. Human-readable table, then one JSON object as the last line."""

from __future__ import annotations

import argparse
import json
import threading
import time
from statistics import median
from typing import Any

from bench.engine import model_folder, progress

PROMPT = ("Write one sentence about why the sea looks blue on a clear day, and mention the sky, the sun, "
          "water, light and colour in plain words for a child who is curious about nature and science.")
B_CHAT = [{"role": "user", "content": "Name three rivers."}]
B_TOKENS = 10
ANSWER = 8  # tokens of the answer each explain attributes


class Stop(Exception):
    """Ends an explain thread at the end of its phase."""


class Rows:
    """Sequences explain has run through the model, counted per forward chunk (CausalForward.logprobs)."""

    def __init__(self) -> None:
        self.n, self.lock = 0, threading.Lock()

    def install(self) -> None:
        from engine import attribute as A

        original = A.CausalForward.logprobs

        def counted(fwd: Any, x: Any, n_prompt: int, targets: Any) -> Any:
            out = original(fwd, x, n_prompt, targets)
            with self.lock:
                self.n += x.shape[0]
            return out

        A.CausalForward.logprobs = counted  # type: ignore[method-assign]


ROWS = Rows()


def _explain_loop(engine: Any, prompt: Any, targets: list[int], stop: threading.Event, paced: bool,
                  yield_s: float, waited: list[float], slot: int) -> None:
    from engine import attribute as A
    from engine.pacer import ServingFirst

    def check() -> None:
        if stop.is_set():
            raise Stop

    pause = ServingFirst(engine.scheduler.has_work, yield_s, check) if paced else None
    try:
        while not stop.is_set():
            A.explain_generation(engine.stack, engine.tokenizer, prompt, targets, "shapley", samples=64,
                                 progress=lambda done, planned: check(), pause=pause)
    except Stop:
        pass
    waited[slot] = pause.waited_s if pause is not None else 0.0


def _b_latencies(engine: Any, n: int) -> list[float]:
    from engine import SamplingParams

    out = []
    for _ in range(n):
        time.sleep(0.5)  # B arrives while explain is in full swing, not right behind the previous answer
        began = time.perf_counter()
        done = engine.generate(B_CHAT, SamplingParams(max_new_tokens=B_TOKENS, ignore_eos=True)).result(timeout=600)
        assert len(done.token_ids) == B_TOKENS
        out.append(time.perf_counter() - began)
    return out


def phase(engine: Any, name: str, explains: int, paced: bool, yield_s: float, requests: int) -> dict[str, Any]:
    from engine import attribute as A

    progress(f"phase {name}: {explains} explain runs, B sends {requests} completions")
    prompt = A.build_prompt(engine.tokenizer, PROMPT)
    targets = list(range(2000, 2000 + ANSWER))
    stop = threading.Event()
    waited = [0.0] * explains
    threads = [threading.Thread(target=_explain_loop, args=(engine, prompt, targets, stop, paced, yield_s, waited, i),
                                daemon=True) for i in range(explains)]
    for t in threads:
        t.start()
    if explains:
        time.sleep(2.0)  # explain under way
    began = time.perf_counter()
    seen = ROWS.n
    if requests:
        latencies = _b_latencies(engine, requests)
    else:  # explain alone: its pace with nothing else to do
        time.sleep(15.0)
        latencies = [0.0]
    elapsed = time.perf_counter() - began
    done = ROWS.n - seen
    stop.set()
    for t in threads:
        t.join()
    return {"phase": name, "explains": explains, "paced": paced, "b_median_s": round(median(latencies), 3),
            "b_worst_s": round(max(latencies), 3), "b_all_s": [round(x, 3) for x in latencies],
            "explain_seq_per_s": round(done / elapsed, 1) if explains else None,
            "explain_waited_s": round(sum(waited), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a SmolLM2-like folder (default: the bundled SmolLM2, converted)")
    parser.add_argument("--explains", type=int, default=4, help="concurrent explain runs (default 4)")
    parser.add_argument("--requests", type=int, default=5, help="B's completions per phase (default 5)")
    parser.add_argument("--yield-s", type=float, default=2.0, help="the most explain waits per chunk (the "
                                                                   "default of TAUON_EXPLAIN_YIELD_S)")
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    from engine import EngineConfig, LLMEngine, SamplingParams

    hf_logging.set_verbosity_error()
    started = time.perf_counter()
    with LLMEngine.from_pretrained(model_folder(args.model), EngineConfig(kv_cache_bytes=64 << 20)) as engine:
        engine.generate(B_CHAT, SamplingParams(max_new_tokens=4)).result(timeout=600)  # warm up
        ROWS.install()
        alone = phase(engine, "explain alone", args.explains, True, args.yield_s, 0)  # paced: counted per chunk
        rows = [phase(engine, "idle", 0, False, 0.0, args.requests),
                phase(engine, "explain, priority off", args.explains, False, 0.0, args.requests),
                phase(engine, "explain, priority on", args.explains, True, args.yield_s, args.requests)]
    idle = rows[0]["b_median_s"]
    for row in rows:
        row["vs_idle"] = round(row["b_median_s"] / idle, 2)
    print(f"B's {B_TOKENS}-token completion on SmolLM2-135M, with {args.explains} Shapley explain runs "
          f"(samples 64, {ANSWER}-token answer) in the same process")
    print(f"{'phase':<24}{'B median s':>11}{'B worst s':>11}{'x idle':>8}{'explain seq/s':>15}")
    print(f"{'explain alone (15 s)':<24}{'-':>11}{'-':>11}{'-':>8}{alone['explain_seq_per_s']:>15.1f}")
    for row in rows:
        pace = "-" if row["explain_seq_per_s"] is None else f"{row['explain_seq_per_s']:.1f}"
        print(f"{row['phase']:<24}{row['b_median_s']:>11.3f}{row['b_worst_s']:>11.3f}{row['vs_idle']:>8.2f}{pace:>15}")
    off, on = rows[1], rows[2]
    ratio = round(on["b_median_s"] / off["b_median_s"], 3)
    print(f"priority on / off, B's median latency: {ratio}")
    print(json.dumps({"bench": "isolation", "explains": args.explains, "requests": args.requests,
                      "yield_s": args.yield_s, "phases": rows, "explain_alone_seq_per_s": alone["explain_seq_per_s"],
                      "on_vs_off_b_median": ratio,
                      "off_vs_idle": off["vs_idle"], "on_vs_idle": on["vs_idle"],
                      "wall_s": round(time.perf_counter() - started, 1)}))


if __name__ == "__main__":
    main()
