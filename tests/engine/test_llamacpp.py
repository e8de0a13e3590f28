"""The llamacpp runtime on the real bundled SmolLM2 Q4_1 GGUF (loaded once per session), and the one
place that picks a runtime (engine/api.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from engine.config import EngineConfig, SamplingParams
from engine.errors import PromptTooLong, UnsupportedModel
from tests.engine.conftest import SMOLLM2_GGUF, gguf_version_dir

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Name three colours of the rainbow."}]
CONFIG = EngineConfig(runtime="llamacpp", max_num_seqs=4, kv_cache_bytes=64 * 1024 * 1024, threads=1)


@pytest.fixture(scope="session")
def llama(smollm2_gguf_dir: Path):  # type: ignore[no-untyped-def]
    from engine import Engine

    engine = Engine.from_pretrained(smollm2_gguf_dir, CONFIG)
    yield engine
    engine.close()


def test_it_picks_llamacpp_for_a_version_that_kept_its_gguf(llama) -> None:  # type: ignore[no-untyped-def]
    assert llama.runtime == "llamacpp"
    assert "llama.cpp" in llama.runtime_note and llama.architecture == "llama"


def test_it_sends_llamacpp_the_chat_prompt_token_for_token_as_apply_chat_template_builds_it(llama) -> None:  # type: ignore[no-untyped-def]
    expected = llama.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    expected = list(expected if isinstance(expected, list) else expected["input_ids"])
    assert llama.encode(MESSAGES) == expected
    done = llama.generate(MESSAGES, SamplingParams(max_new_tokens=4)).result(timeout=60)
    assert done.usage.prompt_tokens == len(expected)


def test_it_streams_deltas_that_add_up_to_the_completion(llama) -> None:  # type: ignore[no-untyped-def]
    handle = llama.generate(MESSAGES, SamplingParams(max_new_tokens=24, ignore_eos=True))
    deltas = list(handle)
    done = handle.result(timeout=60)
    assert len(deltas) > 1
    assert "".join(d.text for d in deltas) == done.text and done.text
    assert [t for d in deltas for t in d.token_ids] == done.token_ids
    assert done.usage.completion_tokens == len(done.token_ids) == 24
    assert done.finish_reason == "length" and done.ttft_s is not None and done.ttft_s <= done.total_s
    assert llama.tokenizer.decode(done.token_ids) == done.text


def test_it_batches_concurrent_requests_and_greedy_answers_agree(llama) -> None:  # type: ignore[no-untyped-def]
    params = SamplingParams(max_new_tokens=16, ignore_eos=True)
    alone = llama.generate(MESSAGES, params).result(timeout=60)
    before = llama.stats().generated_tokens
    handles = [llama.generate(MESSAGES, params) for _ in range(4)]
    results = [h.result(timeout=120) for h in handles]
    assert all(r.token_ids == alone.token_ids for r in results)
    stats = llama.stats()
    assert stats.generated_tokens - before == 4 * 16
    assert stats.peak_batch_size >= 2  # the slots decoded together
    assert stats.running == 0 and stats.waiting == 0


def test_it_reproduces_a_seeded_sample_and_varies_across_seeds(llama) -> None:  # type: ignore[no-untyped-def]
    def sample(seed: int) -> list[int]:
        params = SamplingParams(max_new_tokens=16, temperature=1.5, seed=seed, ignore_eos=True)
        return llama.generate(MESSAGES, params).result(timeout=60).token_ids

    first = sample(7)
    assert sample(7) == first
    assert any(sample(s) != first for s in (8, 9, 10))


def test_it_stops_at_a_stop_string_and_leaves_it_out(llama) -> None:  # type: ignore[no-untyped-def]
    full = llama.generate(MESSAGES, SamplingParams(max_new_tokens=24, ignore_eos=True)).result(timeout=60).text
    words = full.split()
    stop = words[len(words) // 2]
    done = llama.generate(MESSAGES, SamplingParams(max_new_tokens=24, ignore_eos=True, stop=[stop])).result(timeout=60)
    assert done.finish_reason == "stop"
    assert stop not in done.text and full.startswith(done.text)


def test_it_stops_at_a_stop_token_id(llama) -> None:  # type: ignore[no-untyped-def]
    params = SamplingParams(max_new_tokens=24, ignore_eos=True)
    full = llama.generate(MESSAGES, params).result(timeout=60).token_ids
    stop_id = full[5]
    first = full.index(stop_id)
    done = llama.generate(MESSAGES, SamplingParams(max_new_tokens=24, ignore_eos=True,
                                                   stop_token_ids=[stop_id])).result(timeout=60)
    assert done.finish_reason == "stop"
    assert done.token_ids == full[:first + 1]


def test_it_returns_logprobs_with_the_asked_alternatives(llama) -> None:  # type: ignore[no-untyped-def]
    done = llama.generate(MESSAGES, SamplingParams(max_new_tokens=6, top_logprobs=2)).result(timeout=60)
    assert [lp.token_id for lp in done.logprobs] == done.token_ids
    assert all(len(lp.top) == 2 and lp.logprob <= 0.0 for lp in done.logprobs)
    assert done.logprobs[0].top[0][0] == done.token_ids[0]  # greedy: the chosen token is the likeliest


def test_a_cancelled_request_finishes_at_once_and_the_engine_keeps_serving(llama) -> None:  # type: ignore[no-untyped-def]
    handle = llama.generate(MESSAGES, SamplingParams(max_new_tokens=2000, ignore_eos=True))
    got_one = threading.Event()

    def read() -> None:
        for _ in handle:
            got_one.set()

    threading.Thread(target=read, daemon=True).start()
    assert got_one.wait(60)
    started = time.monotonic()
    handle.cancel()
    done = handle.result(timeout=5)
    assert done.finish_reason == "cancelled" and time.monotonic() - started < 1.0
    assert len(done.token_ids) < 2000
    assert llama.generate(MESSAGES, SamplingParams(max_new_tokens=3)).result(timeout=60).usage.completion_tokens


def test_it_refuses_a_sampling_field_llamacpp_cannot_honour_naming_field_and_runtime(llama) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="presence_penalty.*llamacpp"):
        llama.generate(MESSAGES, SamplingParams(presence_penalty=0.5))


def test_it_refuses_a_prompt_longer_than_the_context_window(llama) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PromptTooLong, match="context window"):
        llama.generate(list(range(100, 100 + llama.max_model_len)), SamplingParams(max_new_tokens=2))


def test_explicit_llamacpp_on_a_version_without_gguf_names_the_reason(tiny_llama: Path) -> None:
    from engine import Engine

    with pytest.raises(UnsupportedModel, match="no GGUF file"):
        Engine.from_pretrained(tiny_llama, EngineConfig(runtime="llamacpp"))
    engine = Engine.from_pretrained(tiny_llama, EngineConfig(kv_cache_bytes=8 * 1024 * 1024))
    try:
        assert engine.runtime == "torch"
    finally:
        engine.close()


def test_a_truncated_gguf_is_refused_by_llamacpp_and_auto_falls_back_to_torch(smollm2_dir: Path, tmp_path: Path) -> None:
    from engine import Engine

    broken = tmp_path / "broken.gguf"
    broken.write_bytes(SMOLLM2_GGUF.read_bytes()[:5_000_000])
    folder = gguf_version_dir(tmp_path / "version", smollm2_dir, broken)
    with pytest.raises(UnsupportedModel, match="llama.cpp cannot load"):
        Engine.from_pretrained(folder, EngineConfig(runtime="llamacpp"))
    engine = Engine.from_pretrained(folder, EngineConfig(kv_cache_bytes=8 * 1024 * 1024))
    try:
        assert engine.runtime == "torch"
        assert "fell back to it" in engine.runtime_note and "incomplete" in engine.runtime_note
    finally:
        engine.close()


def test_an_architecture_llamacpp_does_not_know_is_named(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    from engine.llamacpp import check_runnable

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(path, "quantumformer")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedModel, match="'quantumformer'"):
        check_runnable(path)


def test_the_runtime_setting_is_validated() -> None:
    with pytest.raises(ValueError, match="runtime must be one of auto, torch, llamacpp"):
        EngineConfig(runtime="vllm")
    with pytest.raises(ValueError, match="threads"):
        EngineConfig(threads=-1)


def test_loading_keeps_the_process_signal_handlers_and_locks_llamacpp_http_port(smollm2_gguf_dir: Path) -> None:
    import os
    import signal
    import urllib.error
    import urllib.request

    from engine import Engine

    got: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda sig, frame: got.append(sig))
    loaded: list = []  # type: ignore[type-arg]
    try:
        loader = threading.Thread(target=lambda: loaded.append(Engine.from_pretrained(smollm2_gguf_dir, CONFIG)))
        loader.start()  # the serving worker loads engines on a thread too
        loader.join()
        engine = loaded[0]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.2)
        assert got == [signal.SIGTERM]  # Python's handler (Celery's warm shutdown), not llama.cpp's
        with pytest.raises(urllib.error.HTTPError) as refused:  # xllamacpp's own HTTP server wants a key
            urllib.request.urlopen(f"{engine._server.listening_address}/v1/models", timeout=10)
        assert refused.value.code == 401
        engine.close()  # right after loading: must not hang
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_default_thread_count_is_the_physical_cores_this_process_may_use_less_one() -> None:
    import os

    from engine.llamacpp import default_threads, physical_cores

    cpus = os.sched_getaffinity(0)
    cores = set()
    for cpu in cpus:  # SMT siblings share (package, core): counted once
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        cores.add((topology / "physical_package_id").read_text() + (topology / "core_id").read_text())
    assert 1 <= physical_cores() <= len(cores) <= len(cpus)
    assert default_threads() == max(1, physical_cores() - 1)


def test_gpu_layers_stay_zero_on_a_cpu_build_and_an_explicit_cuda_is_refused_saying_why() -> None:
    import xllamacpp

    from engine.llamacpp import gpu_layers

    if any("GPU" in str(d.get("type")) for d in xllamacpp.get_device_info()):
        pytest.skip("this xllamacpp build sees a GPU")
    assert gpu_layers("cpu", 30) == 0 and gpu_layers("auto", 30) == 0
    with pytest.raises(UnsupportedModel, match="llama.cpp sees no GPU"):
        gpu_layers("cuda", 30)


def test_a_default_config_names_its_thread_count_in_the_runtime_note(smollm2_gguf_dir: Path) -> None:
    from engine import Engine
    from engine.llamacpp import default_threads

    engine = Engine.from_pretrained(smollm2_gguf_dir, EngineConfig(max_num_seqs=1, kv_cache_bytes=16 << 20))
    try:
        assert engine.runtime == "llamacpp" and engine.threads == default_threads() and engine.gpu_layers == 0
        n = default_threads()
        assert engine.runtime_note.endswith(f", {n} thread{'s' if n != 1 else ''})")
    finally:
        engine.close()


def test_coalesced_deltas_join_what_queued_up_and_add_up_to_the_completion(llama) -> None:  # type: ignore[no-untyped-def]
    handle = llama.generate(MESSAGES, SamplingParams(max_new_tokens=24, temperature=0.0, ignore_eos=True,
                                                     logprobs=True))
    done = handle.result(timeout=60)  # every delta is waiting now: one merged delta carries them all
    deltas = list(handle.coalesced())
    assert len(deltas) == 1
    assert deltas[0].text == done.text and deltas[0].token_ids == done.token_ids
    assert [t.token_id for t in deltas[0].logprobs] == done.token_ids


def test_background_requests_leave_a_slot_free_and_wait_while_an_interactive_prompt_goes_first(llama) -> None:  # type: ignore[no-untyped-def]
    from engine import admission
    from engine.llamacpp import BACKGROUND_PREFILLS

    cap = CONFIG.max_num_seqs - admission.background_reserve(CONFIG.max_num_seqs)
    greedy = SamplingParams(max_new_tokens=24, ignore_eos=True)
    alone = llama.generate(MESSAGES, greedy).result(timeout=60).token_ids
    background = [llama.generate(MESSAGES, SamplingParams(max_new_tokens=24, ignore_eos=True, priority=1))
                  for _ in range(CONFIG.max_num_seqs + 1)]
    most = most_prefilling = 0
    interactive, before, during = None, set(), set()
    deadline = time.monotonic() + 120
    while not all(h._done.is_set() for h in background) and time.monotonic() < deadline:
        with llama._lock:
            live = list(llama._requests.values())
            started = {id(r): r for r in live if r.started and r.params.priority > 0}
            interactive_waits = any(r.params.priority == 0 and r.first_token is None for r in live)
        most = max(most, len(started))
        most_prefilling = max(most_prefilling, sum(1 for r in started.values() if r.first_token is None))
        if interactive is None and len(started) == cap:
            before = set(started)  # every background slot is taken: an interactive request comes
            interactive = llama.generate(MESSAGES, greedy)
        elif interactive_waits:
            during |= set(started)
        time.sleep(0.002)
    assert interactive is not None and interactive.result(timeout=60).token_ids == alone
    assert during <= before  # no background request started while the interactive prompt waited
    assert most == cap and most_prefilling <= BACKGROUND_PREFILLS  # never the reserved slot
    assert all(len(h.result(timeout=60).token_ids) == 24 for h in background)


def test_a_narrowed_limit_hands_llamacpp_fewer_requests_at_once_oldest_first(llama) -> None:  # type: ignore[no-untyped-def]
    params = SamplingParams(max_new_tokens=8, ignore_eos=True)
    llama.limit_seqs(1)  # adaptive admission narrowed this replica to one request at a time
    try:
        handles = [llama.generate(MESSAGES, params) for _ in range(3)]
        most, firsts = 0, []
        deadline = time.monotonic() + 60
        while not all(h._done.is_set() for h in handles) and time.monotonic() < deadline:
            with llama._lock:
                most = max(most, sum(1 for r in llama._requests.values() if r.started))
            time.sleep(0.002)
        results = [h.result(timeout=60) for h in handles]
        firsts = [r.ttft_s for r in results]
        assert most == 1 and all(len(r.token_ids) == 8 for r in results)
        assert firsts == sorted(firsts)  # each waited for the one before it, in the order they came
    finally:
        llama.limit_seqs(CONFIG.max_num_seqs)
    assert llama.max_active == CONFIG.max_num_seqs
