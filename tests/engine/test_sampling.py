"""Sampling, seeds, logprobs, penalties, stop strings, streaming, cancel and overload, on the
tiny random Llama (fast) and SmolLM2's byte-level tokenizer for multi-byte text."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.parity import hf_greedy
from engine.config import EngineConfig, SamplingParams
from engine.detokenizer import Detokenizer
from engine.errors import Overloaded, PromptTooLong
from engine.llm_engine import LLMEngine
from engine.sampler import _filtered_probs, sample
from engine.sequence import Sequence

PROMPT = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def engine(tiny_llama: Path) -> Iterator[LLMEngine]:
    eng = LLMEngine.from_pretrained(tiny_llama, EngineConfig(kv_cache_bytes=8 << 20, max_num_seqs=8, block_size=8))
    yield eng
    eng.close()


def sampled(seed: int | None, n: int = 24) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=1.0, top_p=0.95, top_k=200, seed=seed, ignore_eos=True)


def test_the_same_seed_gives_the_same_output(engine: LLMEngine) -> None:
    a = engine.generate(PROMPT, sampled(7)).result(60)
    b = engine.generate(PROMPT, sampled(7)).result(60)
    c = engine.generate(PROMPT, sampled(8)).result(60)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_seeded_requests_reproduce_inside_a_busy_batch(engine: LLMEngine) -> None:
    alone = engine.generate(PROMPT, sampled(11)).result(60)
    crowd = [engine.generate(f"{PROMPT} {i}", sampled(None)) for i in range(4)]
    again = engine.generate(PROMPT, sampled(11))
    assert again.result(60).token_ids == alone.token_ids
    for h in crowd:
        h.result(60)


def test_greedy_logprobs_report_the_chosen_token_and_alternatives(engine: LLMEngine, tiny_llama: Path) -> None:
    result = engine.generate(PROMPT, SamplingParams(max_new_tokens=4, top_logprobs=3, ignore_eos=True)).result(60)
    assert len(result.logprobs) == 4
    for tok, lp in zip(result.token_ids, result.logprobs, strict=True):
        assert lp.token_id == tok and len(lp.top) == 3
        assert lp.top[0][0] == tok and lp.top[0][2] == pytest.approx(lp.logprob)
        assert lp.top[0][2] >= lp.top[1][2] >= lp.top[2][2]
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    with torch.inference_mode():
        ref = torch.log_softmax(hf(torch.tensor([engine.encode(PROMPT)])).logits[0, -1], dim=-1)
    assert result.logprobs[0].logprob == pytest.approx(float(ref[result.token_ids[0]]), abs=1e-4)


def test_repetition_penalty_matches_hf_generate(engine: LLMEngine, tiny_llama: Path) -> None:
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids = engine.encode(PROMPT)
    ours = engine.generate(PROMPT, SamplingParams(max_new_tokens=16, repetition_penalty=1.5, ignore_eos=True))
    with torch.inference_mode():
        theirs = hf.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, repetition_penalty=1.5,
                             eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    assert ours.result(60).token_ids == theirs


def test_presence_and_frequency_penalties_subtract_from_generated_tokens() -> None:
    seq = Sequence([1, 2], SamplingParams(presence_penalty=0.5, frequency_penalty=0.25, logprobs=False))
    seq.token_ids += [5, 5, 7]
    logits = torch.zeros(1, 10)
    logits[0, 5] = 3.0
    logits[0, 7] = 2.9
    logits[0, 1] = 2.0  # prompt tokens are not penalised by these two
    out = sample(logits, [seq], [None])
    # 5: 3 - 0.5 - 0.5 = 2.0 ; 7: 2.9 - 0.5 - 0.25 = 2.15 ; 1: 2.0 → 7 wins
    assert out[0].token_id == 7


def test_top_k_and_top_p_keep_only_the_head_of_the_distribution() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    p = _filtered_probs(logits, [2], [1.0])
    assert (p[0, 2:] == 0).all() and p[0, :2].sum() == pytest.approx(1.0)
    p = _filtered_probs(logits, [0], [0.5])  # the first token alone already holds > 50 %
    assert p[0, 0] == pytest.approx(1.0)


def test_a_stop_string_across_token_boundaries_cuts_the_text_and_never_leaks(engine: LLMEngine) -> None:
    full = engine.generate(PROMPT, SamplingParams(max_new_tokens=24, ignore_eos=True)).result(60)
    detok = Detokenizer(engine.tokenizer, engine.encode(PROMPT), [])
    cut = None
    for tok in full.token_ids:
        before = len(detok.text)
        detok.add(tok)
        added = len(detok.text) - before
        if before >= 3 and added >= 3:
            stop = full.text[before - 2:before + 2]  # two characters on each side of a token boundary
            if full.text.find(stop) == before - 2:
                cut = (stop, full.text[:before - 2])
                break
    assert cut, f"no token boundary to test in {full.text!r}"
    stop, expected = cut
    handle = engine.generate(PROMPT, SamplingParams(max_new_tokens=24, stop=[stop], ignore_eos=True))
    deltas = [d.text for d in handle]
    result = handle.result()
    assert result.text == expected and result.finish_reason == "stop"
    assert "".join(deltas) == expected
    assert all(stop not in "".join(deltas[:i + 1]) for i in range(len(deltas)))


def test_the_detokenizer_never_splits_a_multibyte_character(smollm2_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    text = "Café 世界 🎉 naïve — ok"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert any("\ufffd" in tok.decode([i]) for i in ids)  # some characters span several tokens
    detok = Detokenizer(tok, tok("Hi", add_special_tokens=False)["input_ids"], [])
    deltas = [detok.add(i) for i in ids] + [detok.finish()]
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text


def test_text_that_may_start_a_stop_string_is_held_until_it_cannot(smollm2_dir: Path) -> None:
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    ids = tok(" The answer is Paris. Done", add_special_tokens=False)["input_ids"]
    detok = Detokenizer(tok, [], ["is Paris!"])
    deltas = [detok.add(i) for i in ids]
    # " is Par…" was held back while it could still become the stop string, then released
    assert not detok.stopped and "".join(deltas) + detok.finish() == " The answer is Paris. Done"
    detok = Detokenizer(tok, [], ["ris. D"])
    out = "".join(detok.add(i) for i in ids) + detok.finish()
    assert detok.stopped and out == " The answer is Pa"


def test_a_prompt_longer_than_the_context_is_a_clear_error(engine: LLMEngine) -> None:
    with pytest.raises(PromptTooLong, match="context window is 256"):
        engine.generate(list(range(1000, 1300)), SamplingParams(max_new_tokens=4))
    # and the engine keeps serving
    assert engine.generate("still alive", SamplingParams(max_new_tokens=2)).result(60).usage.completion_tokens >= 1


def test_asking_for_more_tokens_than_the_context_leaves_names_both_numbers(engine: LLMEngine) -> None:
    with pytest.raises(PromptTooLong, match="250 tokens and max_tokens asks for 50 more, 300 in all, but the context "
                                            "window is 256; ask for at most 6") as caught:
        engine.generate(list(range(1000, 1250)), SamplingParams(max_new_tokens=50))
    assert caught.value.param == "max_tokens"


def test_a_default_max_tokens_shrinks_to_the_context_window(engine: LLMEngine) -> None:
    params = SamplingParams(max_new_tokens=50, ignore_eos=True, fit_context=True)
    result = engine.generate(list(range(1000, 1250)), params).result(60)
    assert result.finish_reason == "length" and result.usage.completion_tokens == 6


def test_async_iteration_streams_the_same_deltas(engine: LLMEngine) -> None:
    async def consume() -> tuple[str, str]:
        handle = engine.generate(PROMPT, SamplingParams(max_new_tokens=12, ignore_eos=True))
        parts = [d.text async for d in handle]
        return "".join(parts), (await handle.aresult()).text

    streamed, final = asyncio.run(consume())
    assert streamed == final


@pytest.fixture
def narrow(tiny_llama: Path) -> Iterator[LLMEngine]:
    eng = LLMEngine.from_pretrained(tiny_llama, EngineConfig(kv_cache_bytes=4 << 20, max_num_seqs=1, max_queue=1))
    yield eng
    eng.close()


def test_a_full_queue_raises_overloaded(narrow: LLMEngine) -> None:
    running = narrow.generate(PROMPT, SamplingParams(max_new_tokens=200, ignore_eos=True))
    next(iter(running))  # it holds the only slot
    waiting = narrow.generate(PROMPT, SamplingParams(max_new_tokens=2))
    with pytest.raises(Overloaded, match="queue is full"):
        narrow.generate(PROMPT, SamplingParams(max_new_tokens=2))
    running.cancel()
    assert waiting.result(60).finish_reason == "length"


def test_cancel_frees_the_slot_within_one_step(narrow: LLMEngine) -> None:
    first = narrow.generate(PROMPT, SamplingParams(max_new_tokens=200, ignore_eos=True))
    got = list(itertools.islice(iter(first), 3))
    second = narrow.generate("another request", SamplingParams(max_new_tokens=3, ignore_eos=True))
    steps_before = narrow.stats().steps
    first.cancel()
    done = first.result(30)
    assert done.finish_reason == "cancelled"
    assert done.usage.completion_tokens <= len(got) + (narrow.stats().steps - steps_before) + 1
    assert second.result(30).usage.completion_tokens == 3  # it got the freed slot
    deadline = time.time() + 10
    while narrow.stats().kv_blocks_used and time.time() < deadline:
        time.sleep(0.01)
    stats = narrow.stats()
    assert stats.kv_blocks_used == 0 and stats.running == 0 and stats.waiting == 0


def test_hf_greedy_helper_sees_the_same_eos_rules(engine: LLMEngine, tiny_llama: Path) -> None:
    hf = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    ids = engine.encode("a")
    assert engine.generate("a", SamplingParams(max_new_tokens=8)).result(60).token_ids == hf_greedy(hf, ids, 8)
