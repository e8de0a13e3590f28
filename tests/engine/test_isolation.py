"""One request's bad input or fault never fails the others in its batch, and a KV cache too small for
everyone at once still completes everyone (by preemption and recompute), with the same answers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine import EngineConfig, LLMEngine, SamplingParams
from engine.errors import InvalidPrompt, PromptTooLong
from engine.sequence import Sequence

PROMPTS = [[5 + i, 100 + 7 * i, 2000 + 31 * i, 42, 7 + i] for i in range(8)]
GREEDY = SamplingParams(max_new_tokens=24, ignore_eos=True)


@pytest.fixture(scope="module")
def engine(tiny_llama: Path):  # type: ignore[no-untyped-def]
    eng = LLMEngine.from_pretrained(tiny_llama, EngineConfig(kv_cache_bytes=8 << 20, max_num_seqs=16, block_size=8))
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def clean(engine: LLMEngine) -> list[list[int]]:
    handles = [engine.generate(p, GREEDY) for p in PROMPTS]
    return [h.result(60).token_ids for h in handles]


def _with_a_faulty_neighbour(engine: LLMEngine, inject) -> tuple[list[list[int]], BaseException | None]:  # type: ignore[no-untyped-def]
    faulty_prompt = [9, 8, 7, 6, 5, 4, 3]
    with engine._lock:  # nothing runs until every request is in and the fault is set
        faulty = engine.generate(faulty_prompt, SamplingParams(max_new_tokens=40, ignore_eos=True))
        handles = [engine.generate(p, GREEDY) for p in PROMPTS]
        inject(_find_locked(engine, faulty_prompt))
    outputs = [h.result(60).token_ids for h in handles]
    try:
        faulty.result(60)
    except Exception as exc:  # noqa: BLE001
        return outputs, exc
    return outputs, None


def _find_locked(engine: LLMEngine, prompt: list[int]) -> Sequence:
    return next(s for s in engine.scheduler.waiting if s.prompt_token_ids == prompt)


def test_token_ids_outside_the_vocabulary_are_refused_before_they_join_a_batch(engine: LLMEngine) -> None:
    for bad in ([1, 2, 999_999_999], [-1], [30522]):
        with pytest.raises(InvalidPrompt, match=r"outside this model's vocabulary \(ids 0 to 30521\)"):
            engine.generate(bad, GREEDY)
    assert engine.generate([1, 2, 30521], SamplingParams(max_new_tokens=2)).result(60).usage.completion_tokens == 2


def test_a_fault_in_one_rows_forward_fails_that_sequence_alone(engine: LLMEngine, clean: list[list[int]]) -> None:
    def bad_token(seq: Sequence) -> None:  # below the engine's validation: the row's embedding lookup fails
        seq.token_ids[-1] = 10**9

    outputs, error = _with_a_faulty_neighbour(engine, bad_token)
    assert isinstance(error, IndexError)
    assert outputs == clean


def test_a_fault_in_one_rows_sampling_fails_that_sequence_alone(engine: LLMEngine, clean: list[list[int]]) -> None:
    def nan_temperature(seq: Sequence) -> None:
        seq.params.temperature = math.nan

    outputs, error = _with_a_faulty_neighbour(engine, nan_temperature)
    assert isinstance(error, RuntimeError) and "probability" in str(error)
    assert outputs == clean


def test_a_fault_in_one_rows_detokenizing_fails_that_sequence_alone(engine: LLMEngine, clean: list[list[int]]) -> None:
    def broken_detokenizer(seq: Sequence) -> None:
        def add(token_id: int) -> str:
            raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "injected")

        seq.state.detok.add = add

    outputs, error = _with_a_faulty_neighbour(engine, broken_detokenizer)
    assert isinstance(error, UnicodeDecodeError)
    assert outputs == clean
    assert not engine.scheduler.running and not engine.scheduler.waiting


def test_a_request_that_can_never_fit_the_cache_is_refused_with_both_numbers(tiny_llama: Path) -> None:
    # 64 KiB of cache holds 128 tokens of this model: the usable context shrinks to that
    with LLMEngine.from_pretrained(tiny_llama, EngineConfig(kv_cache_bytes=64 << 10, block_size=8)) as eng:
        assert eng.max_model_len == 128
        with pytest.raises(PromptTooLong, match="the prompt has 100 tokens and max_tokens asks for 50 more, 150 in "
                                                "all, but the context window is 128 \\(all the KV cache holds"):
            eng.generate(list(range(10, 110)), SamplingParams(max_new_tokens=50))
        done = eng.generate(list(range(10, 110)), SamplingParams(max_new_tokens=28, ignore_eos=True)).result(60)
        assert done.usage.completion_tokens == 28


@pytest.mark.slow
def test_smollm2_four_answers_in_a_cache_for_two_match_an_unpressured_run(smollm2_dir: Path) -> None:
    chats = [[{"role": "user", "content": q}] for q in ("What is the capital of France?", "Name a large river.",
                                                         "What do bees make?", "Count from one to five.")]
    params = SamplingParams(max_new_tokens=32, ignore_eos=True)
    with LLMEngine.from_pretrained(smollm2_dir, EngineConfig(kv_cache_bytes=64 << 20)) as roomy:
        expected = [h.result(120).token_ids for h in [roomy.generate(c, params) for c in chats]]
        lengths = [len(roomy.encode(c)) + 32 for c in chats]
    per_token = 30 * 2 * 3 * 64 * 4  # layers × k|v × kv heads × head dim × float32
    blocks = sum(sorted((n + 15) // 16 for n in lengths)[-2:])  # the two longest sequences, and no more
    with LLMEngine.from_pretrained(smollm2_dir, EngineConfig(kv_cache_bytes=blocks * 16 * per_token)) as tight:
        handles = [tight.generate(c, params) for c in chats]
        got = [h.result(300).token_ids for h in handles]
        preempted = tight.stats()
    assert got == expected
    assert preempted.kv_blocks_total == blocks and preempted.preemptions > 0
