"""Greedy float32 output matches Hugging Face `generate` token for token: single requests,
batches of mixed prompt lengths, and requests that arrive while others are mid-decode."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from bench.parity import hf_greedy
from engine.config import EngineConfig, SamplingParams
from engine.llm_engine import LLMEngine
from tests.engine.parity import assert_greedy_parity

PROMPTS = [
    "hello world",
    "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm afternoon sun",
    "a",
    "numbers one two three four five six",
]


def greedy(n: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, ignore_eos=True)


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def tiny(request: pytest.FixtureRequest, tiny_llama: Path, tiny_gpt2: Path) -> Iterator[tuple[LLMEngine, object]]:
    folder = tiny_llama if request.param == "llama" else tiny_gpt2
    engine = LLMEngine.from_pretrained(folder, EngineConfig(kv_cache_bytes=8 << 20, max_num_seqs=8, block_size=8))
    yield engine, AutoModelForCausalLM.from_pretrained(folder).eval()
    engine.close()


def test_a_single_greedy_request_matches_hf_generate(tiny: tuple[LLMEngine, object]) -> None:
    engine, hf = tiny
    result = engine.generate(PROMPTS[1], greedy(24)).result(60)
    ids = engine.encode(PROMPTS[1])
    assert result.token_ids == hf_greedy(hf, ids, 24, eos=False)
    assert result.finish_reason == "length"
    assert result.usage.prompt_tokens == len(ids) and result.usage.completion_tokens == 24


def test_a_batch_of_mixed_prompt_lengths_matches_hf_generate(tiny: tuple[LLMEngine, object]) -> None:
    engine, hf = tiny
    before = engine.stats().steps
    handles = [engine.generate(p, greedy(12 + 4 * i)) for i, p in enumerate(PROMPTS)]
    results = [h.result(60) for h in handles]
    for i, (prompt, result) in enumerate(zip(PROMPTS, results, strict=True)):
        ids = engine.encode(prompt)
        assert_greedy_parity(hf, ids, result.token_ids, hf_greedy(hf, ids, 12 + 4 * i, eos=False))
    # one at a time would take a step per token (12 + 16 + 20 + 24 = 72); batched, about the longest (24)
    assert engine.stats().steps - before < 12 + 16 + 20 + 24


def test_requests_arriving_mid_decode_join_the_batch_and_match_hf(tiny: tuple[LLMEngine, object]) -> None:
    engine, hf = tiny
    before = engine.stats().steps
    first = engine.generate(PROMPTS[0], greedy(40))
    stream = iter(first)
    seen = list(itertools.islice(stream, 5))  # `first` is decoding now
    assert len(seen) == 5
    late = [engine.generate(p, greedy(10)) for p in PROMPTS[1:]]
    assert not first.done, "`first` finished before the newcomers arrived; nothing here tests joining"
    results = [first.result(60)] + [h.result(60) for h in late]
    for prompt, result, n in zip(PROMPTS, results, [40, 10, 10, 10], strict=True):
        ids = engine.encode(prompt)
        assert_greedy_parity(hf, ids, result.token_ids, hf_greedy(hf, ids, n, eos=False))
    # `first` alone takes a step per token (40); newcomers that waited for it to finish would add 10 more
    # steps at least. Joined mid-decode, their tokens ride along in `first`'s steps.
    assert engine.stats().steps - before < 40 + 10


def test_streamed_deltas_add_up_to_the_final_text(tiny: tuple[LLMEngine, object]) -> None:
    engine, _ = tiny
    handle = engine.generate(PROMPTS[3], greedy(16))
    deltas = list(handle)
    result = handle.result()
    assert "".join(d.text for d in deltas) == result.text
    assert [t for d in deltas for t in d.token_ids] == result.token_ids
    assert result.ttft_s is not None and 0 < result.ttft_s <= result.total_s


# -- SmolLM2-135M-Instruct (the bundled model), loaded once for this module --

CHATS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
    [{"role": "system", "content": "You are a terse assistant who answers in one short line."},
     {"role": "user", "content": "Name three primary colours and explain briefly why painters mix them."}],
]


@pytest.fixture(scope="module")
def smol(smollm2_dir: Path) -> Iterator[tuple[LLMEngine, object]]:
    engine = LLMEngine.from_pretrained(smollm2_dir, EngineConfig(kv_cache_bytes=128 << 20, max_num_seqs=8))
    yield engine, AutoModelForCausalLM.from_pretrained(smollm2_dir).eval()
    engine.close()


@pytest.mark.slow
def test_smollm2_single_chat_matches_hf_generate(smol: tuple[LLMEngine, object]) -> None:
    engine, hf = smol
    result = engine.generate(CHATS[0], SamplingParams(max_new_tokens=16)).result(120)
    ids = engine.encode(CHATS[0])
    theirs = hf_greedy(hf, ids, 16)
    assert result.token_ids == theirs[:len(result.token_ids)]
    assert "Paris" in result.text and result.finish_reason == "stop"


@pytest.mark.slow
def test_smollm2_mixed_batch_with_a_late_arrival_matches_hf_generate(smol: tuple[LLMEngine, object]) -> None:
    engine, hf = smol
    handles = [engine.generate(c, greedy(12)) for c in CHATS[:2]]
    list(itertools.islice(iter(handles[0]), 3))
    handles.append(engine.generate(CHATS[2], greedy(12)))
    for chat, handle in zip(CHATS, handles, strict=True):
        ids = engine.encode(chat)
        assert_greedy_parity(hf, ids, handle.result(120).token_ids, hf_greedy(hf, ids, 12, eos=False))


def test_engine_from_pretrained_picks_the_llm_engine_and_reports_stats(tiny_llama: Path) -> None:
    from engine import Engine

    with Engine.from_pretrained(tiny_llama, EngineConfig(kv_cache_bytes=2 << 20, block_size=8)) as engine:
        assert isinstance(engine, LLMEngine)
        engine.generate(PROMPTS[0], greedy(6)).result(60)
        stats = engine.stats()
    assert stats.generated_tokens == 6 and stats.running == 0 and stats.waiting == 0
    assert stats.kv_blocks_total > 0 and 0.0 <= stats.kv_cache_usage <= 1.0 and stats.peak_batch_size == 1


@pytest.mark.parametrize(("gather_below", "scattered"), [(0, False), (0, True), (10**6, False)],
                         ids=["in-place", "in-place-scattered-blocks", "gathered"])
def test_chunked_prefill_and_every_attention_path_match_hf(tiny_llama: Path, gather_below: int, scattered: bool,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from engine import runner
    from engine.block_manager import BlockManager

    monkeypatch.setattr(runner, "GATHER_MAX_CONTEXT", gather_below)
    if scattered:  # no contiguous runs: blocks are taken one by one, interleaved between sequences
        monkeypatch.setattr(BlockManager, "_find_run", lambda self, n: -1)
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    prompts = [list(range(100 + 40 * i, 100 + 40 * i + n)) for i, n in enumerate((90, 7, 150, 33))]
    # a 16-token step budget: every prompt longer than that is prefilled in chunks between decodes
    config = EngineConfig(kv_cache_bytes=8 << 20, max_num_seqs=8, block_size=8, max_batch_tokens=16)
    with LLMEngine.from_pretrained(tiny_llama, config) as engine:
        results = [h.result(60) for h in [engine.generate(p, greedy(20)) for p in prompts]]
    for ids, result in zip(prompts, results, strict=True):
        assert_greedy_parity(hf, ids, result.token_ids, hf_greedy(hf, ids, 20, eos=False))


def test_an_interactive_request_overtakes_a_full_engine_of_background_ones_with_unchanged_output(
        tiny_llama: Path) -> None:
    with LLMEngine.from_pretrained(tiny_llama, EngineConfig(kv_cache_bytes=8 << 20, max_num_seqs=3,
                                                              block_size=8)) as engine:
        alone = engine.generate(PROMPTS[0], greedy(8)).result(60).token_ids
        # an interactive request in the seat background work leaves free, then a batch in the other two
        holder = engine.generate(PROMPTS[3], SamplingParams(max_new_tokens=120, ignore_eos=True))
        next(iter(holder))
        bg = [engine.generate(p, SamplingParams(max_new_tokens=120, ignore_eos=True, priority=1))
              for p in PROMPTS[1:3]]
        next(iter(bg[0]))
        next(iter(bg[1]))  # every seat is taken and decoding
        interactive = engine.generate(PROMPTS[0], greedy(8)).result(60)
        assert not any(h._done.is_set() for h in bg)  # it finished first, while they still ran
        assert interactive.token_ids == alone  # yielding a seat changes nobody's greedy tokens
        assert all(len(h.result(60).token_ids) == 120 for h in bg)  # the preempted one was recomputed
        assert len(holder.result(60).token_ids) == 120
        assert engine.stats().preemptions >= 1


def test_a_background_step_stops_between_layers_for_an_interactive_arrival_and_loses_nothing(
        tiny_llama: Path) -> None:
    cfg = EngineConfig(kv_cache_bytes=8 << 20, max_num_seqs=8, block_size=8)
    bg_params = SamplingParams(max_new_tokens=12, ignore_eos=True, priority=1)
    with LLMEngine.from_pretrained(tiny_llama, cfg) as engine:
        alone_bg = [engine.generate(p, bg_params).result(60).token_ids for p in PROMPTS[1:3]]
        alone = engine.generate(PROMPTS[0], greedy(8)).result(60).token_ids
    with LLMEngine.from_pretrained(tiny_llama, cfg) as engine:
        forward = engine.runner.forward
        arrived: list[object] = []
        layers_run: list[int] = []

        def arrive_mid_step(seqs, num_new, interrupt=None):  # type: ignore[no-untyped-def]
            if interrupt is not None and not arrived:  # the first background step: a request comes in
                def asked() -> bool:
                    layers_run.append(1)
                    if len(layers_run) == 2:  # after the first layer has written its keys and values
                        arrived.append(engine.generate(PROMPTS[0], greedy(8)))
                    return interrupt()
                return forward(seqs, num_new, asked)
            return forward(seqs, num_new, interrupt)

        engine.runner.forward = arrive_mid_step  # type: ignore[method-assign]
        bg = [engine.generate(p, bg_params) for p in PROMPTS[1:3]]
        results = [h.result(60).token_ids for h in bg]
        interactive = arrived[0].result(60)  # type: ignore[attr-defined]
        assert engine.stats().interrupted_steps == 1 and len(layers_run) == 2  # stopped before layer 2
        assert interactive.token_ids == alone and results == alone_bg  # nothing computed twice went wrong
