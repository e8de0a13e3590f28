"""Int8 layers: weight-only numerics for `int8`, calibrated per-token int8 for `w8a8`; perplexity
on SmolLM2 stays within 1 % and 5 % of float32."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.texts import EVAL_TEXT
from engine.config import EngineConfig, SamplingParams
from engine.llm_engine import LLMEngine
from engine.quantize import Int8Linear, quantize_stack
from engine.runner import build_stack, perplexity


def dequantized(linear: nn.Linear) -> torch.Tensor:
    w = linear.weight.detach()
    scale = w.abs().amax(dim=1, keepdim=True) / 127
    return torch.round(w / scale).clamp(-127, 127) * scale


def test_int8_keeps_activations_exact_so_only_the_weights_are_rounded() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(256, 128)
    x = torch.randn(5, 256)
    x[:, 7] *= 50  # an outlier channel, as LLM activations have
    ref = nn.functional.linear(x, dequantized(linear), linear.bias)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = Int8Linear(linear, two_pass=True)(x)
    assert (y - ref).abs().max() < 1e-3 * ref.abs().max()


def test_w8a8_with_smoothing_stays_close_to_float32() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(256, 128)
    x = torch.randn(8, 256)
    x[:, 7] *= 50
    ref = linear(x)
    act = x.abs().amax(dim=0)
    smooth = (act.sqrt() / linear.weight.abs().amax(dim=0).sqrt()).clamp(min=1e-2)
    plain = Int8Linear(linear, two_pass=False)(x)
    smoothed = Int8Linear(linear, two_pass=False, smooth=smooth)(x)
    err = lambda y: float((y - ref).norm() / ref.norm())  # noqa: E731
    assert err(smoothed) < 0.02 and err(smoothed) < err(plain)


def test_quantization_mode_cuda_only_is_refused_on_cpu(tiny_llama: Path) -> None:
    with pytest.raises(ValueError, match="CUDA only"):
        LLMEngine.from_pretrained(tiny_llama, EngineConfig(quantization="int4", kv_cache_bytes=1 << 20))


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "limit"), [("int8", 1.01), ("w8a8", 1.05)])
def test_smollm2_perplexity_stays_within_the_mode_budget(smollm2_dir: Path, mode: str, limit: float) -> None:
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = tok(EVAL_TEXT)["input_ids"][:1024]
    base = perplexity(build_stack(AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()), ids)
    stack = build_stack(AutoModelForCausalLM.from_pretrained(smollm2_dir).eval())
    quantize_stack(stack, mode, tokenizer=tok, device=torch.device("cpu"))
    assert perplexity(stack, ids) / base <= limit


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int8", "w8a8"])
def test_a_quantized_smollm2_engine_still_answers(smollm2_dir: Path, mode: str) -> None:
    with LLMEngine.from_pretrained(smollm2_dir, EngineConfig(quantization=mode, kv_cache_bytes=32 << 20)) as engine:
        result = engine.generate([{"role": "user", "content": "What is the capital of France?"}],
                                 SamplingParams(max_new_tokens=12)).result(120)
    assert "Paris" in result.text
