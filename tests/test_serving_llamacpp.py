"""A GGUF version through the whole stack on the llamacpp runtime: openai client → /v1 → worker → llama.cpp."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from console.deployments.models import Deployment, Replica
from tests.conftest import wait_for
from tests.engine.conftest import SMOLLM2_GGUF, gguf_version_dir
from tests.serving_rows import deploy
from tests.test_serving import client_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
ENGINE = {"engine": {"threads": 1, "max_num_seqs": 4, "kv_cache_bytes": 64 * 1024**2}}


@pytest.fixture(scope="session")
def gguf_version(smollm2_dir: Path, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """The bundled GGUF version's files as an import stores them: source.gguf beside its conversion."""
    return gguf_version_dir(tmp_path_factory.mktemp("gguf") / "version", smollm2_dir)


def test_a_gguf_version_answers_through_v1_on_llamacpp_as_the_runtime_does_directly(serving, web_server,
                                                                                     gguf_version, charlie, bob):
    from engine import Engine, EngineConfig, SamplingParams

    deployment = deploy("small", gguf_version, owner=bob, config=ENGINE)
    reason = Replica.objects.get(deployment=deployment, status="ready").status_reason
    assert "llama.cpp" in reason, reason
    client = client_for(charlie, web_server)
    reply = client.chat.completions.create(model="small", messages=QUESTION, max_tokens=12, temperature=0,
                                           extra_body={"return_token_ids": True})
    streamed = list(client.chat.completions.create(model="small", messages=QUESTION, max_tokens=12, temperature=0,
                                                   stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == reply.choices[0].message.content
    engine = Engine.from_pretrained(gguf_version, EngineConfig(**ENGINE["engine"]))
    try:
        assert engine.runtime == "llamacpp"
        direct = engine.generate(QUESTION, SamplingParams(max_new_tokens=12)).result(timeout=120)
        template_ids = engine.encode(QUESTION)
    finally:
        engine.close()
    assert reply.choices[0].model_extra["token_ids"] == direct.token_ids
    assert reply.choices[0].message.content == direct.text
    assert reply.usage.prompt_tokens == len(template_ids) == streamed[-1].usage.prompt_tokens
    assert reply.usage.completion_tokens == len(direct.token_ids)

    with pytest.raises(openai.BadRequestError) as caught:  # a field llama.cpp cannot honour: named, never ignored
        client.chat.completions.create(model="small", messages=QUESTION, max_tokens=4, presence_penalty=0.5)
    assert "presence_penalty" in caught.value.body["message"] and "llamacpp" in caught.value.body["message"]

    def figures() -> dict:  # type: ignore[type-arg]
        return Replica.objects.get(deployment=deployment, status="ready").stats

    wait_for(lambda: figures().get("generated_tokens", 0) >= 24, timeout=30, what="llama.cpp figures in heartbeats")
    assert {"running", "waiting", "kv_cache_usage", "tokens_per_s", "steps"} <= set(figures())
    deployment.refresh_from_db()
    assert figures()["engine"] == deployment.config["engine"]  # the engine config it serves, as the API shows


def test_a_corrupt_gguf_fails_its_replica_with_the_reason_and_the_worker_keeps_serving(
        serving, web_server, gguf_version, smollm2_dir, tmp_path, charlie, bob):
    from engine.inspect import GGUF_NAME

    broken = tmp_path / "broken"
    broken.mkdir()
    for item in gguf_version.iterdir():
        if item.name != GGUF_NAME:
            (broken / item.name).symlink_to(item.resolve())
    (broken / GGUF_NAME).write_bytes(SMOLLM2_GGUF.read_bytes()[:4_000_000])
    config = {"engine": {**ENGINE["engine"], "runtime": "llamacpp"}}
    deployment = deploy("slow", broken, owner=bob, config=config, wait=False)

    def failed() -> Replica | None:
        return Replica.objects.filter(deployment=deployment, status="failed").first()

    wait_for(failed, timeout=60, what="the replica of the corrupt GGUF to fail")
    assert "llama.cpp cannot load" in failed().status_reason and "incomplete" in failed().status_reason  # type: ignore[union-attr]
    assert Deployment.objects.get(pk=deployment.pk).status == "failed"
    deploy("small", gguf_version, owner=bob, config=ENGINE)  # the same worker process still serves
    reply = client_for(charlie, web_server).chat.completions.create(model="small", messages=QUESTION, max_tokens=4)
    assert reply.usage.completion_tokens == 4


def test_explain_on_a_llamacpp_deployment_attributes_with_the_versions_torch_weights(serving, user_api, gguf_version,
                                                                                    bob):
    from tests.test_playground_api import explain, finished

    deploy("small", gguf_version, owner=bob, config=ENGINE)
    res = explain(user_api, "small", messages=QUESTION, output="Paris.", span="user")
    assert res.status_code == 202, res.json()
    job = finished(res.json()["job"], timeout=180)
    assert job.status == "succeeded", job.error
    assert any("runs on llamacpp; attributing with the version's torch weights" in line for line in job.log), job.log
    assert len(job.result["attributions"]) == len(job.result["output_ids"]) > 0
