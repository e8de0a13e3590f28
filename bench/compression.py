"""Compression methods on SmolLM2-135M on this CPU: one row per method with size, perplexity and
throughput as ratios to the dense float32 parent.

Every child is written by engine.compress (as the `compress` job does) and measured from its folder:
size on disk, perplexity on bench.texts' EVAL_TEXT, tokens/s of a short generation run. Wanda and
w8a8 calibrate on the registered `plain-english` dataset's text (not the evaluation text).

    python -m bench.compression [--tokens 1024] [--quick]

Last line: JSON `{"int8": {"size_ratio", "ppl_ratio", "tok_s_ratio"}, ...}` (child/parent)."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.engine import model_folder
from bench.texts import EVAL_TEXT


def measure(folder: Path, quantization: str, settings: Any) -> dict[str, float]:
    from engine.config import EngineConfig
    from engine.evaluator import run
    from engine.loader import release_memory

    try:
        return run(folder, "text", EVAL_TEXT,
                   EngineConfig(quantization=quantization, kv_cache_bytes=64 << 20, max_num_seqs=8), settings)
    finally:
        release_memory()


CALIBRATION = Path(__file__).resolve().parent.parent / "console/evaluation/data/plain-english.txt"


def main() -> None:
    from engine.compress import compress_folder, folder_stats
    from engine.compress_methods import CALIBRATED
    from engine.evaluator import Settings

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None, help="a Hugging Face folder (default: the bundled SmolLM2-135M)")
    ap.add_argument("--tokens", type=int, default=1024, help="perplexity window")
    ap.add_argument("--quick", action="store_true", help="fewer methods (int8, magnitude50, wanda50)")
    ap.add_argument("--requests", type=int, default=8, help="concurrent greedy generations timed for tokens/s")
    ap.add_argument("--new-tokens", type=int, default=64, help="tokens each of them generates")
    args = ap.parse_args()
    parent = model_folder(args.model)
    timing = {"latency_requests": args.requests, "max_new_tokens": args.new_tokens}
    settings = Settings(context_length=args.tokens, stride=args.tokens // 2, **timing)
    quick_settings = Settings(context_length=64, stride=32, **timing)  # the parent's reruns: tokens/s only
    tmp = Path(tempfile.mkdtemp(prefix="tauon-bench-compression-"))
    rows: dict[str, dict[str, Any]] = {}
    try:
        t = time.monotonic()
        base = measure(parent, "none", settings)
        base_size = folder_stats(parent)["size_bytes"]
        print(f"parent: perplexity {base['perplexity']:.3f}, {base['tokens_per_s']:.1f} tok/s, "
              f"{base_size / 1e6:.1f} MB on disk ({time.monotonic() - t:.0f} s)", flush=True)
        methods: list[tuple[str, str, dict[str, Any]]] = [
            ("int8", "int8", {}), ("w8a8", "w8a8", {}), ("fp16", "fp16", {}), ("bf16", "bf16", {}),
            ("magnitude50", "magnitude", {"sparsity": 0.5}), ("wanda50", "wanda", {"sparsity": 0.5}),
            ("magnitude2:4", "magnitude", {"structure": "2:4"}), ("wanda2:4", "wanda", {"structure": "2:4"})]
        if args.quick:
            methods = [m for m in methods if m[0] in ("int8", "magnitude50", "wanda50")]
        print(f"{'method':<14}{'size':>8}{'ppl':>10}{'tok/s':>9}{'parent':>8}{'size_ratio':>12}{'ppl_ratio':>11}"
              f"{'tok_s_ratio':>13}", flush=True)
        # Throughput drifts on a shared machine: each child is timed between two parent runs (the parent
        # run after one child is the one before the next) and compared with their mean.
        before = base["tokens_per_s"]
        for name, method, kw in methods:
            folder = tmp / name.replace(":", "-")
            if method in CALIBRATED:
                kw = {**kw, "calibration_text": CALIBRATION.read_text()}
            compress_folder(parent, folder, method, **kw)
            size = folder_stats(folder)["size_bytes"]
            got = measure(folder, "none", settings)
            after = measure(parent, "none", quick_settings)["tokens_per_s"]
            parent_tok_s = (before + after) / 2
            before = after
            rows[name] = {"size_ratio": round(size / base_size, 3),
                          "ppl_ratio": round(got["perplexity"] / base["perplexity"], 3),
                          "tok_s_ratio": round(got["tokens_per_s"] / parent_tok_s, 3)}
            r = rows[name]
            print(f"{name:<14}{size / 1e6:>7.1f}M{got['perplexity']:>10.2f}{got['tokens_per_s']:>9.1f}"
                  f"{parent_tok_s:>8.1f}{r['size_ratio']:>12}{r['ppl_ratio']:>11}{r['tok_s_ratio']:>13}", flush=True)
            shutil.rmtree(folder, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
