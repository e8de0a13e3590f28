"""`python -m bench.attribution`: what Explain costs on SmolLM2-135M (fp32, this CPU) for a 32-token prompt
and a 16-token answer, per method, with perturbations batched (ours) against one forward per
perturbation (Captum's `LLMAttribution`, `forward_in_tokens=False`, on the Hugging Face model).

    python -m bench.attribution [--model FOLDER] [--prompt-tokens 32] [--answer-tokens 16] [--skip-captum]

Human-readable table, then one JSON object as the last line."""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

from bench.models import smollm2

PROMPT = ("Write one sentence about why the sea looks blue on a clear day, and mention the sky, the sun, "
          "water, light and colour in plain words for a child who is curious about nature and science.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="a causal-LM folder (default: SmolLM2-135M)")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--answer-tokens", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=16, help="integrated gradients: path points")
    parser.add_argument("--samples", type=int, default=1, help="Shapley: feature orders sampled")
    parser.add_argument("--skip-captum", action="store_true", help="skip the unbatched Captum reference row")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import torch

    from engine import EngineConfig, LLMEngine, SamplingParams
    from engine import attribute as A

    torch.manual_seed(0)
    folder = args.model or smollm2()
    engine = LLMEngine.from_pretrained(folder, EngineConfig(kv_cache_bytes=32 * 1024**2))
    tok = engine.tokenizer
    ids = tok(PROMPT, add_special_tokens=False)["input_ids"][: args.prompt_tokens]
    prompt = A.build_prompt(tok, tok.decode(ids))
    prompt = A.Prompt(prompt.ids[: args.prompt_tokens], prompt.tokens[: args.prompt_tokens],
                      [[i] for i in range(min(args.prompt_tokens, len(prompt.ids)))],
                      prompt.labels[: args.prompt_tokens])
    done = engine.generate(prompt.ids, SamplingParams(max_new_tokens=args.answer_tokens, ignore_eos=True))
    targets = done.result(timeout=300).token_ids
    rows: list[tuple[str, float, int, int]] = []
    warm = A.Prompt(prompt.ids[:8], prompt.tokens[:8], [[i] for i in range(8)], prompt.labels[:8])
    A.explain_generation(engine.stack, tok, warm, targets[:4], batch_size=args.batch_size)  # first-call costs

    def run(label: str, method: str, **kw: int) -> None:
        r = A.explain_generation(engine.stack, tok, prompt, targets, method, **kw)
        rows.append((label, r.seconds, r.forward_passes, r.batches))

    run("feature_ablation", "feature_ablation", batch_size=args.batch_size)
    run("feature_ablation_unbatched", "feature_ablation", batch_size=1)
    run("integrated_gradients", "integrated_gradients", steps=args.steps, batch_size=args.batch_size)
    run("shapley", "shapley", samples=args.samples, batch_size=args.batch_size)
    if not args.skip_captum:
        from captum.attr import FeatureAblation, LLMAttribution, TextTokenInput
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        inp = TextTokenInput("x", tok, baselines=A.baseline_token(tok))
        inp.inp_tensor = inp.itp_tensor = torch.tensor([prompt.ids])
        inp.values, inp.n_itp_features = tok.convert_ids_to_tokens(prompt.ids), len(prompt.ids)
        started = time.perf_counter()
        LLMAttribution(FeatureAblation(hf), tok).attribute(inp, target=torch.tensor(targets), forward_in_tokens=False)
        n = len(prompt.ids) + 1
        rows.append(("captum_llm_attribution_fa", time.perf_counter() - started, n, n))
    engine.close()

    print(f"SmolLM2 attribution cost: {len(prompt.ids)}-token prompt, {len(targets)}-token answer, "
          f"batch {args.batch_size}, IG {args.steps} steps, Shapley {args.samples} sample(s)")
    print(f"{'method':<30} {'seconds':>8} {'sequences':>10} {'forwards':>9}")
    for label, seconds, sequences, batches in rows:
        print(f"{label:<30} {seconds:>8.2f} {sequences:>10} {batches:>9}")
    summary = {"prompt_tokens": len(prompt.ids), "answer_tokens": len(targets), "batch_size": args.batch_size,
               "ig_steps": args.steps, "shapley_samples": args.samples,
               **{f"{label}_s": round(seconds, 2) for label, seconds, _, _ in rows},
               "feature_ablation_goal_met": rows[0][1] < 10.0}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
