"""The OpenAI-compatible API end to end: the official `openai` client → uvicorn → Celery worker → engine,
tokens back through Redis streams. One serving worker hosts the session's deployments (conftest)."""

from __future__ import annotations

import json
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from console.deployments import live
from console.deployments.models import Deployment
from tests.conftest import wait_for
from tests.serving_rows import deploy, places

pytestmark = pytest.mark.django_db(transaction=True)
HELLO = [{"role": "user", "content": "Hello there"}]


def raw_key(user, **limits) -> str:  # type: ignore[no-untyped-def]
    from console.accounts.models import ApiKey

    return ApiKey.issue(user, name="test", **limits)[1]


def client_for(user, web_server, **limits) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    return openai.OpenAI(base_url=f"{web_server.url}/v1", api_key=raw_key(user, **limits), max_retries=0, timeout=60)


def test_a_compressed_int8_child_serves_through_v1_as_the_engine_runs_it(serving, web_server, llama_dir, charlie,
                                                                         bob, tmp_path):
    from engine import LLMEngine, SamplingParams
    from engine.compress import compress_folder

    compress_folder(llama_dir, tmp_path / "int8", "int8")
    deploy("int8-child", tmp_path / "int8", owner=bob)
    reply = client_for(charlie, web_server).chat.completions.create(
        model="int8-child", messages=HELLO, max_tokens=8, temperature=0, extra_body={"return_token_ids": True,
                                                                                     "ignore_eos": True})
    with LLMEngine.from_pretrained(tmp_path / "int8") as engine:
        direct = engine.generate(HELLO, SamplingParams(max_new_tokens=8, ignore_eos=True)).result(timeout=60)
    assert reply.choices[0].model_extra["token_ids"] == direct.token_ids
    assert reply.choices[0].message.content == direct.text


def test_the_openai_client_chats_streamed_and_not_with_the_same_answer(serving, web_server, llama_dir, charlie, bob):
    deploy("chat", llama_dir, owner=bob)
    client = client_for(charlie, web_server)
    reply = client.chat.completions.create(model="chat", messages=HELLO, max_tokens=8, temperature=0,
                                           extra_body={"ignore_eos": True})
    assert reply.object == "chat.completion" and reply.model == "chat"
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 8
    chunks = list(client.chat.completions.create(model="chat", messages=HELLO, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True},
                                                 extra_body={"ignore_eos": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8

    # greedy through the whole stack equals the engine run directly on the same folder
    from engine import LLMEngine, SamplingParams

    with LLMEngine.from_pretrained(llama_dir) as engine:
        direct = engine.generate(HELLO, SamplingParams(max_new_tokens=8, ignore_eos=True)).result(timeout=60)
    assert direct.text == reply.choices[0].message.content
    with_ids = client.chat.completions.create(model="chat", messages=HELLO, max_tokens=8, temperature=0,
                                              extra_body={"ignore_eos": True, "return_token_ids": True})
    assert with_ids.choices[0].model_extra["token_ids"] == direct.token_ids  # the extension: exact tokens
    streamed_ids = [i for c in client.chat.completions.create(
        model="chat", messages=HELLO, max_tokens=8, temperature=0, stream=True,
        extra_body={"ignore_eos": True, "return_token_ids": True}) for i in c.choices[0].model_extra.get("token_ids", [])]
    assert streamed_ids == direct.token_ids

    # sampling: the same seed gives the same answer; n gives that many choices
    sampled = [client.chat.completions.create(model="chat", messages=HELLO, max_tokens=12, temperature=1.0,
                                              seed=7, n=2).choices for _ in range(2)]
    assert [c.message.content for c in sampled[0]] == [c.message.content for c in sampled[1]]
    assert [c.index for c in sampled[0]] == [0, 1]

    # logprobs with alternatives
    lp = client.chat.completions.create(model="chat", messages=HELLO, max_tokens=3, temperature=0, logprobs=True,
                                        top_logprobs=2, extra_body={"ignore_eos": True}).choices[0].logprobs.content
    assert len(lp) == 3 and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in lp)
    assert all(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob for t in lp)


def test_text_completions_stream_and_cut_at_a_stop_string(serving, web_server, llama_dir, charlie, bob):
    deploy("chat", llama_dir, owner=bob)
    client = client_for(charlie, web_server)
    sampled = dict(model="chat", prompt="The weather today", max_tokens=12, temperature=1.0, seed=3,
                   extra_body={"ignore_eos": True})  # a random model's greedy answer may be all special tokens
    full = client.completions.create(**sampled).choices[0]
    assert full.finish_reason == "length" and full.text
    stop = full.text.strip().split()[1] if len(full.text.split()) > 1 else full.text.strip()[-2:]
    cut = client.completions.create(**sampled, stop=[stop], stream=True)
    pieces = list(cut)
    text = "".join(p.choices[0].text for p in pieces)
    assert stop not in text and full.text.startswith(text)
    assert pieces[-1].choices[0].finish_reason == "stop"


def test_bad_input_gets_a_clear_openai_error_before_any_worker_sees_it(serving, web_server, llama_dir, charlie, bob):
    deploy("chat", llama_dir, owner=bob, config={"max_tokens": 64, "max_n": 2})
    deploy("embed", llama_dir, owner=bob, task="embeddings", wait=False)
    client = client_for(charlie, web_server)
    cases = [
        (openai.NotFoundError, "model_not_found", dict(model="nope", messages=HELLO)),
        (openai.BadRequestError, "wrong_task", dict(model="embed", messages=HELLO)),
        (openai.BadRequestError, "invalid_value", dict(model="chat", messages=HELLO, max_tokens=65)),
        (openai.BadRequestError, "invalid_value", dict(model="chat", messages=HELLO, n=3)),
        (openai.BadRequestError, "invalid_type", dict(model="chat", messages=HELLO, temperature="hot")),
        (openai.BadRequestError, "invalid_value", dict(model="chat", messages=[{"role": "robot", "content": "x"}])),
        (openai.BadRequestError, "unsupported_parameter", dict(model="chat", messages=HELLO,
                                                               tools=[{"type": "function", "function": {"name": "f"}}])),
        (openai.BadRequestError, "context_length_exceeded",
         dict(model="chat", messages=[{"role": "user", "content": "word " * 400}])),
    ]
    for error, code, body in cases:
        with pytest.raises(error) as caught:
            client.chat.completions.create(**body)
        assert caught.value.code == code, (body, caught.value.body)
        assert caught.value.body["message"]
    assert "above this deployment's cap of 64" in str(_error(client, max_tokens=65))

    raw = httpx.post(f"{web_server.url}/v1/chat/completions", content=b"{not json",
                     headers={"Authorization": f"Bearer {client.api_key}"})
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
    assert httpx.get(f"{web_server.url}/v1/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{web_server.url}/v1", api_key="tau_nope", max_retries=0).models.list()
    assert live.inflight("chat") == 0  # nothing was left holding a place


def test_bad_token_ids_get_a_400_and_fail_no_other_users_request(serving, web_server, llama_dir, alice, charlie,
                                                                   bob):
    deploy("chat", llama_dir, owner=bob, config={"max_tokens": 64})
    a, b = client_for(alice, web_server), client_for(charlie, web_server)
    prompts = [f"Story {i}: once upon a time" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        running = [pool.submit(a.completions.create, model="chat", prompt=p, max_tokens=48,
                               extra_body={"ignore_eos": True}) for p in prompts]
        for bad in ([1, 2, 999_999_999], [-1]):
            with pytest.raises(openai.BadRequestError) as caught:
                b.completions.create(model="chat", prompt=bad, max_tokens=4)
            assert caught.value.code == "invalid_prompt" and caught.value.body["param"] == "prompt"
            assert "outside this model's vocabulary" in caught.value.body["message"]
        answers = [f.result(timeout=120) for f in running]
    assert all(r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 48 for r in answers)


def test_max_tokens_beyond_the_context_is_refused_and_a_default_shrinks_to_fit(serving, web_server, llama_dir,
                                                                              charlie, bob):
    deploy("chat", llama_dir, owner=bob, config={"max_tokens": 512, "sampling": {"max_tokens": 512}})
    client = client_for(charlie, web_server)
    prompt = list(range(1000, 1200))  # 200 of the model's 256 positions
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="chat", prompt=prompt, max_tokens=100)
    assert caught.value.code == "context_length_exceeded" and caught.value.body["param"] == "max_tokens"
    assert "200 tokens and max_tokens asks for 100 more" in caught.value.body["message"]
    reply = client.completions.create(model="chat", prompt=prompt, extra_body={"ignore_eos": True})
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 56


def _within(timeout: float, predicate) -> bool:  # type: ignore[no-untyped-def]
    try:
        wait_for(predicate, timeout=timeout)
    except AssertionError:
        return False
    return True


def _error(client: openai.OpenAI, **body) -> openai.APIStatusError:  # type: ignore[no-untyped-def]
    try:
        client.chat.completions.create(model="chat", messages=HELLO, **body)
    except openai.APIStatusError as exc:
        return exc
    raise AssertionError("no error")


def test_models_lists_the_deployments_and_metrics_need_a_key(serving, web_server, llama_dir, charlie, bob):
    deploy("chat", llama_dir, owner=bob)
    client = client_for(charlie, web_server)
    assert [m.id for m in client.models.list()] == ["chat"]
    client.chat.completions.create(model="chat", messages=HELLO, max_tokens=2)
    assert httpx.get(f"{web_server.url}/metrics").status_code == 401
    text = httpx.get(f"{web_server.url}/metrics", headers={"Authorization": f"Bearer {client.api_key}"}).text
    assert 'tauon_requests_total{deployment="chat",endpoint="/v1/chat/completions",status="200"}' in text
    assert 'tauon_ready_replicas{deployment="chat"} 1.0' in text
    assert "tauon_time_to_first_token_seconds_bucket" in text and 'tauon_kv_cache_usage_ratio{deployment="chat"' in text


def test_a_full_deployment_answers_429_with_retry_after_at_once(serving, web_server, slow_llama_dir, charlie, bob):
    deploy("full", slow_llama_dir, owner=bob, config={"engine": {"max_num_seqs": 1, "max_queue": 1},
                                                      "max_tokens": 3000})
    key = raw_key(charlie)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"model": "full", "prompt": "Once", "max_tokens": 3000, "temperature": 0, "ignore_eos": True,
            "stream": True}
    with httpx.Client(base_url=web_server.url, headers=headers, timeout=60) as http:
        streams = [http.stream("POST", "/v1/completions", json=body) for _ in range(2)]
        responses = [s.__enter__() for s in streams]  # both places taken (one running, one queued)
        assert [r.status_code for r in responses] == [200, 200]
        started = time.perf_counter()
        refused = http.post("/v1/completions", json={**body, "stream": False})
        assert time.perf_counter() - started < 1.0
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "queue_full"
        for s in streams:
            s.__exit__(None, None, None)
    # The web side frees a closed stream's place when it sees the disconnect (ClosingStream, tests/test_stream_close.py),
    # the worker when the generation ends. Under the whole suite this once in two runs took over 10 s (cause not found,
    # see the 2026-12-06 notes): past 10 s the test says who holds the places, then waits out the generation.
    if not _within(10, lambda: live.inflight("full") == 0):
        warnings.warn(f"places of 'full' still held 10 s after their streams closed:\n"
                      f"{places('full', web_server, serving)}", stacklevel=1)
        wait_for(lambda: live.inflight("full") == 0, timeout=80, what="places freed")
    client = openai.OpenAI(base_url=f"{web_server.url}/v1", api_key=key, max_retries=0)
    freed = client.completions.create(model="full", prompt="Once", max_tokens=4, temperature=0,
                                      extra_body={"ignore_eos": True})  # the places are free again: served
    assert freed.usage.completion_tokens == 4 and freed.choices[0].finish_reason == "length"


def test_a_place_is_freed_when_its_generation_ends_though_its_client_died_without_a_word(serving, web_server,
                                                                                        slow_llama_dir, bob):
    """A client process killed mid-request (a web process, a batch job) never closes its call: the worker
    frees the place when the generation ends, not the request's deadline minutes later."""
    import asyncio

    from console.inference import requests as parse
    from console.inference.gateway import Call

    deployment = deploy("slow", slow_llama_dir, owner=bob, config={"timeout_s": 600})
    parsed = parse.completion({"model": "slow", "prompt": "Once", "max_tokens": 6, "ignore_eos": True},
                              deployment.config)

    async def open_and_walk_away() -> str:
        call = Call(deployment.name, deployment.queue, deployment.config, parsed.work)
        await call.open()
        await call.first()  # accepted: a worker runs it; this client now "dies" (never reads, never closes)
        return call.request_id

    request_id = asyncio.run(open_and_walk_away())
    assert live.client().zscore(live.inflight_key("slow"), request_id) is not None  # its place, until its deadline
    wait_for(lambda: live.client().zscore(live.inflight_key("slow"), request_id) is None, timeout=30,
             what="the place freed when the generation ended")


def test_a_request_its_worker_refuses_frees_its_place_though_its_client_died(serving, web_server, llama_dir, bob):
    """A request that reaches a worker with no replica of its deployment (moved or stopped meanwhile) is over
    there: its place is freed at once, not at its deadline, when no client is left to free it."""
    import uuid

    from workers.celery import app

    deploy("chat", llama_dir, owner=bob)
    request_id, r = f"req-{uuid.uuid4().hex}", live.client()
    deadline = time.time() + 600
    r.zadd(live.inflight_key("ghost"), {request_id: deadline})  # admitted by a client that then died
    app.send_task("tauon.infer", args=["ghost", request_id, {"kind": "generate", "deadline": deadline}],
                  queue="deploy.chat")  # a queue the session's worker takes, for a deployment it does not host
    wait_for(lambda: r.zscore(live.inflight_key("ghost"), request_id) is None, timeout=10,
             what="the place of the refused request freed")
    event = json.loads(r.xrange(live.stream_key(request_id))[0][1]["e"])
    assert (event["type"], event["status"], event["code"]) == ("error", 503, "replica_unavailable")


def test_a_client_that_disconnects_cancels_its_generation_within_a_second(serving, web_server, slow_llama_dir,
                                                                          charlie, bob):
    deploy("slow", slow_llama_dir, owner=bob, config={"max_tokens": 3000})
    body = {"model": "slow", "prompt": "Once", "max_tokens": 3000, "temperature": 0, "ignore_eos": True,
            "stream": True}
    with httpx.Client(base_url=web_server.url, headers={"Authorization": f"Bearer {raw_key(charlie)}"},
                      timeout=60) as http:
        with http.stream("POST", "/v1/completions", json=body) as response:
            request_id = response.headers["X-Request-Id"]
            lines = response.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
        closed_ms = time.time() * 1000

    def cancelled_at_ms() -> float | None:
        """When the worker wrote the request's `finish` (the web side dropped the stream at the disconnect,
        so whatever the worker writes after it is there to read); Redis stamps entries in ms."""
        for entry_id, fields in live.client().xrange(live.stream_key(request_id)):
            event = json.loads(fields["e"])
            if event["type"] == "finish":
                assert event["reason"] == "cancelled" and event["completion_tokens"] < 3000
                return float(entry_id.split("-")[0])
        return None

    finished_ms = wait_for(cancelled_at_ms, timeout=5, interval=0.05, what="the worker to cancel the request")
    assert finished_ms - closed_ms < 1000, finished_ms - closed_ms
    wait_for(lambda: live.inflight("slow") == 0, timeout=5, what="the place to be freed")


def test_per_key_rate_limits_answer_429_with_retry_after(serving, web_server, llama_dir, charlie, bob):
    deploy("chat", llama_dir, owner=bob)
    by_requests = client_for(charlie, web_server, requests_per_minute=2)
    for _ in range(2):
        by_requests.chat.completions.create(model="chat", messages=HELLO, max_tokens=1)
    with pytest.raises(openai.RateLimitError) as caught:
        by_requests.chat.completions.create(model="chat", messages=HELLO, max_tokens=1)
    assert caught.value.code == "rate_limit_requests" and 1 <= int(caught.value.response.headers["Retry-After"]) <= 60

    by_tokens = client_for(charlie, web_server, tokens_per_minute=100)  # a chat reserves its prompt's bound (55)
    by_tokens.chat.completions.create(model="chat", messages=HELLO, max_tokens=8,
                                      extra_body={"ignore_eos": True})  # + max_tokens; settles at its usage
    by_tokens.chat.completions.create(model="chat", messages=HELLO, max_tokens=8, extra_body={"ignore_eos": True})
    with pytest.raises(openai.RateLimitError) as caught:  # two real usages left less than this reservation
        by_tokens.chat.completions.create(model="chat", messages=HELLO, max_tokens=40)
    assert caught.value.code == "rate_limit_tokens" and int(caught.value.response.headers["Retry-After"]) >= 1


def test_embeddings_through_the_openai_client_equal_the_engine(serving, web_server, charlie, bob):
    from console.registry.bundled import by_name
    from engine import EmbeddingEngine

    folder = by_name("all-minilm-l6-v2").path()
    deploy("embed", folder, task="embeddings", owner=bob)
    texts = ["A cat sits on the mat.", "Stocks fell sharply today.", "ok"]
    client = client_for(charlie, web_server)
    as_base64 = client.embeddings.create(model="embed", input=texts)  # the client asks for base64 by default
    as_floats = client.embeddings.create(model="embed", input=texts, encoding_format="float")
    direct = EmbeddingEngine(folder).embed(texts).vectors
    import torch

    for answer in (as_base64, as_floats):
        got = torch.tensor([d.embedding for d in answer.data])
        assert got.shape == direct.shape
        assert torch.nn.functional.cosine_similarity(got, direct).min() > 1 - 1e-5
    assert as_floats.usage.prompt_tokens > len(texts)


def test_a_classification_deployment_predicts_labels_like_the_engine(serving, web_server, tmp_path, bob, user_api):
    from engine import ClassificationEngine
    from tests.modelfactory import tiny_bert_dir

    folder = tiny_bert_dir(tmp_path / "clf", num_labels=3)
    deploy("classify", folder, task="text-classification", owner=bob)
    texts = ["great product", "awful service, never again"]
    response = user_api.post("/api/deployments/classify/predict", {"input": texts, "top_k": 2}, format="json")
    assert response.status_code == 200, response.content
    direct = ClassificationEngine(folder).classify(texts, top_k=2)
    for got, want in zip(response.json()["results"], direct, strict=True):
        assert [g["label"] for g in got] == [w.label for w in want]
        assert all(abs(g["score"] - w.score) < 1e-5 for g, w in zip(got, want, strict=True))
    wrong = user_api.post("/api/deployments/classify/predict", {"input": []}, format="json")
    assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "input"


def test_promotion_and_rollback_lose_no_request(serving, web_server, tmp_path, charlie, bob):
    from console.registry.models import Alias
    from tests.modelfactory import tiny_llama_dir
    from tests.serving_rows import stored_version

    deployment = deploy("promote", tiny_llama_dir(tmp_path / "v1", seed=1), owner=bob)
    v2 = stored_version(deployment.model, tiny_llama_dir(tmp_path / "v2", seed=2))
    client = client_for(charlie, web_server)

    def ask(_: int) -> tuple[str, str]:
        reply = client.chat.completions.create(model="promote", messages=HELLO, max_tokens=16, temperature=0,
                                               extra_body={"ignore_eos": True})
        assert reply.usage.completion_tokens == 16 and reply.choices[0].finish_reason == "length"
        return reply.system_fingerprint, reply.choices[0].message.content

    def serving_version(fingerprint: str) -> bool:
        return ask(0)[0] == fingerprint

    with ThreadPoolExecutor(4) as pool:
        traffic = [pool.submit(lambda: [ask(i) for i in range(25)]) for _ in range(3)]
        time.sleep(0.5)
        Alias.move(deployment.model, "production", v2, actor=bob)
        wait_for(lambda: serving_version("tauon-v2"), timeout=30, what="version 2 to serve")
        Alias.rollback(deployment.model, "production", actor=bob)
        wait_for(lambda: serving_version("tauon-v1"), timeout=30, what="the rollback to version 1")
        answers = [a for t in traffic for a in t.result()]  # any failed request raised here
    assert {f for f, _ in answers} <= {"tauon-v1", "tauon-v2"} and len(answers) == 75
    by_version = {f: {text for g, text in answers if g == f} for f in ("tauon-v1", "tauon-v2")}
    assert all(len(texts) <= 1 for texts in by_version.values())  # greedy: one answer per version


def test_a_stopped_deployment_refuses_requests_and_serves_again_once_started(serving, web_server, llama_dir,
                                                                             charlie, bob, maintainer_api):
    deploy("stop-start", llama_dir, owner=bob)
    client = client_for(charlie, web_server)
    assert maintainer_api.post("/api/deployments/stop-start/stop").json()["status"] == "stopped"
    assert "stop-start" not in [m.id for m in client.models.list()]
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="stop-start", messages=HELLO, max_tokens=2)
    assert caught.value.code == "deployment_stopped"
    wait_for(lambda: live.live_replicas("stop-start") == 0, timeout=10, what="the replica to unload")
    maintainer_api.post("/api/deployments/stop-start/start")
    wait_for(lambda: live.live_replicas("stop-start") == 1, timeout=30, what="the replica to load again")
    assert client.chat.completions.create(model="stop-start", messages=HELLO, max_tokens=2).choices
    assert Deployment.objects.get(name="stop-start").status == "ready"


def test_a_request_that_outlives_the_deployment_timeout_gets_504_and_its_generation_stops(
        serving, web_server, slow_llama_dir, charlie, bob):
    deploy("slow", slow_llama_dir, owner=bob, config={"max_tokens": 3000, "timeout_s": 2})
    headers = {"Authorization": f"Bearer {raw_key(charlie)}"}
    body = {"model": "slow", "prompt": "Once", "max_tokens": 3000, "temperature": 0, "ignore_eos": True}
    started = time.perf_counter()
    response = httpx.post(f"{web_server.url}/v1/completions", json=body, headers=headers, timeout=60)
    assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
    assert time.perf_counter() - started < 5
    with httpx.stream("POST", f"{web_server.url}/v1/completions", json={**body, "stream": True}, headers=headers,
                      timeout=60) as streamed:
        replica = streamed.headers["X-Tauon-Replica"]
        last = [line for line in streamed.iter_lines() if line.startswith("data:")][-1]
    assert json.loads(last[5:])["error"]["code"] == "timeout"
    wait_for(lambda: json.loads(live.client().get(live.replica_key(replica)) or "{}").get("running") == 0,
             timeout=5, what="the worker to drop the timed-out request")


def test_a_body_over_the_size_limit_gets_413(serving, web_server, charlie, settings):
    huge = {"model": "chat", "messages": [{"role": "user", "content": "x" * 11_000_000}]}
    response = httpx.post(f"{web_server.url}/v1/chat/completions", json=huge, timeout=60,
                          headers={"Authorization": f"Bearer {raw_key(charlie)}"})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"


@pytest.mark.slow
def test_smollm2_answers_through_the_stack_exactly_as_the_engine_does(serving, web_server, smollm2_dir, charlie,
                                                                      bob):
    from engine import LLMEngine, SamplingParams

    deploy("small", smollm2_dir, owner=bob, config={"engine": {"kv_cache_bytes": 64 * 1024**2}})
    question = [{"role": "user", "content": "What is the capital of France?"}]
    reply = client_for(charlie, web_server).chat.completions.create(model="small", messages=question, max_tokens=12,
                                                                     temperature=0)
    assert "Paris" in reply.choices[0].message.content
    with LLMEngine.from_pretrained(smollm2_dir) as engine:
        direct = engine.generate(question, SamplingParams(max_new_tokens=12)).result(timeout=120)
    assert reply.choices[0].message.content == direct.text
    assert reply.usage.prompt_tokens == direct.usage.prompt_tokens
