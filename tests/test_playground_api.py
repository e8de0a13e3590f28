"""The playground's API: POST /api/deployments/{name}/explain (its checks, and the job a serving worker runs on
the deployment's own queue), cancelling an explain job, and saved sessions shared by link."""

from __future__ import annotations

import pytest
from django.test import override_settings

from console.jobs.models import Job
from console.playground import choices
from tests.conftest import make_user, wait_for
from tests.modelfactory import tiny_bert_dir
from tests.serving_rows import deploy

HELLO = [{"role": "user", "content": "Hello there, how are you"}]


def explain(api, name: str, **body):  # type: ignore[no-untyped-def]
    return api.post(f"/api/deployments/{name}/explain", body, format="json")


def finished(job_id: int, timeout: float = 120) -> Job:
    return wait_for(lambda: (j := Job.objects.get(pk=job_id)).is_terminal and j, timeout=timeout,
                    what=f"explain job #{job_id}")


def test_the_console_names_the_same_methods_and_spans_as_the_engine() -> None:
    from engine import attribute

    assert choices.METHODS == attribute.METHODS and choices.SPANS == attribute.SPANS


# --- explain: refused before anything is queued --------------------------------------------------------------

@pytest.mark.django_db
def test_explain_refuses_bad_input_with_a_clear_4xx_and_queues_nothing(user_api, bob, llama_dir, tmp_path):
    deploy("pg-nowhere", llama_dir, owner=bob, wait=False)  # no worker hosts it: pending
    deploy("pg-int8", llama_dir, owner=bob, wait=False, config={"engine": {"quantization": "int8"}})
    deploy("pg-embed", llama_dir, owner=bob, wait=False, task="embeddings")
    from engine.compress import compress_folder

    deploy("pg-int8-child", compress_folder(llama_dir, tmp_path / "int8", "int8") and tmp_path / "int8", owner=bob,
           wait=False)  # a compressed child stored as int8, served with the default engine config
    deploy("pg-cls-nowhere", tiny_bert_dir(tmp_path / "bert"), owner=bob, wait=False, task="text-classification")
    cases = [
        (404, "not_found", None, dict(name="nope", messages=HELLO)),
        (400, "invalid_choice", "method", dict(name="pg-nowhere", messages=HELLO, method="lime")),
        (400, "invalid", "messages", dict(name="pg-nowhere", messages=HELLO, prompt="both")),
        (400, "invalid", "output", dict(name="pg-nowhere", prompt="hi", output={"text": "no"})),
        (400, "unsupported_task", "name", dict(name="pg-embed", input="a text")),
        (400, "unsupported_method", "method", dict(name="pg-int8", prompt="hi", method="integrated_gradients")),
        (400, "unsupported_method", "method", dict(name="pg-int8-child", prompt="hi", method="integrated_gradients")),
        (400, "unsupported_method", "method", dict(name="pg-cls-nowhere", input="hi", method="shapley")),
        (409, "deployment_not_ready", None, dict(name="pg-nowhere", messages=HELLO, output="Fine, thanks.")),
    ]
    for status, code, field, body in cases:
        name = body.pop("name")
        res = explain(user_api, name, **body)
        assert res.status_code == status, (name, body, res.json())
        error = res.json()["error"]
        assert (error["code"], error["field"]) == (code, field), (name, body, error)
        assert error["message"]
    assert "not ready (pending)" in explain(user_api, "pg-nowhere", prompt="hi").json()["error"]["message"]
    assert "quantized" in explain(user_api, "pg-int8", prompt="hi", method="integrated_gradients").json()["error"]["message"]
    assert not Job.objects.filter(kind="explain").exists()


@pytest.mark.django_db
def test_an_answer_over_the_token_cap_is_refused_with_the_cap_named(user_api, bob, llama_dir):
    deploy("pg-nowhere", llama_dir, owner=bob, wait=False)
    with override_settings(TAUON_EXPLAIN_MAX_OUTPUT_TOKENS=8, TAUON_EXPLAIN_MAX_PROMPT_TOKENS=20):
        res = explain(user_api, "pg-nowhere", messages=HELLO, output="one two three four five six seven eight nine")
        assert res.status_code == 400 and res.json()["error"]["code"] == "output_too_long"
        message = res.json()["error"]["message"]
        assert message == "The answer has 9 tokens; at most 8 output tokens can be explained; lower Max tokens " \
                          "or explain a shorter answer."
        res = explain(user_api, "pg-nowhere", messages=HELLO, output=list(range(9)))
        assert res.status_code == 400 and "at most 8 output tokens can be explained" in res.json()["error"]["message"]
        res = explain(user_api, "pg-nowhere", prompt="word " * 30)
        assert res.status_code == 400 and res.json()["error"]["code"] == "prompt_too_long"
        assert "at most 20 prompt tokens can be explained" in res.json()["error"]["message"]
        assert "TAUON_" not in res.json()["error"]["message"]  # speaks to the user, not to the operator


def test_anonymous_callers_get_401_from_explain(anon_api, db):  # type: ignore[no-untyped-def]
    assert explain(anon_api, "anything", prompt="hi").status_code in (401, 403)


# --- explain: the job on a worker hosting the deployment -----------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_explain_answers_202_and_the_job_carries_one_row_per_output_token(serving, user_api, charlie, bob, llama_dir):
    deploy("pg-tiny", llama_dir, owner=bob)
    res = explain(user_api, "pg-tiny", messages=HELLO, output=[2000, 2001, 2002], words=True)  # span: default
    assert res.status_code == 202, res.json()
    assert set(res.json()) == {"job", "deployment", "method", "output_tokens"} and res.json()["output_tokens"] == 3
    job = finished(res.json()["job"])
    assert job.status == "succeeded", job.error
    assert job.created_by == charlie and job.worker.startswith("serving@")  # the worker that hosts pg-tiny
    result = user_api.get(f"/api/jobs/{job.pk}/").json()["result"]
    assert {"input_tokens", "output_tokens", "attributions"} <= set(result)
    assert result["input_tokens"] == ["Hello", "there", ",", "how", "are", "you"]  # the user's words (as the page)
    assert len(result["output_tokens"]) == 3 and result["output_ids"] == [2000, 2001, 2002]
    assert len(result["attributions"]) == 3 and all(len(row) == 6 for row in result["attributions"])
    assert result["method"] == "feature_ablation" and result["forward_passes"] == 7 and result["version"] == 1
    assert any("Estimate: 6 input features × 3 output tokens" in line for line in job.log)

    # no answer given: the deployment answers greedily, and that answer is explained token for token
    res = explain(user_api, "pg-tiny", messages=HELLO, method="shapley", samples=1, span="prompt")
    job = finished(res.json()["job"])
    assert job.status == "succeeded", job.error
    assert job.result["generated"] is True and len(job.result["attributions"]) == len(job.result["output_ids"]) > 0
    assert len(job.result["input_tokens"]) == job.result["prompt_tokens"]  # span 'prompt': every token
    assert job.result["input_tokens"][:3] == ["[", "user", "]"]  # the chat template's tokens count too

    res = explain(user_api, "pg-tiny", messages=HELLO, output="fine thanks", method="integrated_gradients", steps=4)
    job = finished(res.json()["job"])
    assert job.status == "succeeded", job.error
    assert job.result["output_text"] == "fine thanks" and len(job.result["attributions"]) == 2
    assert job.result["output_round_trips"] is True


@pytest.mark.django_db(transaction=True)
def test_a_classifier_is_explained_on_its_worker_towards_the_predicted_label(serving, user_api, bob, tmp_path):
    deploy("pg-cls", tiny_bert_dir(tmp_path / "bert", num_labels=3), owner=bob, task="text-classification")
    text = "What a lovely day it is"
    predicted = user_api.post("/api/deployments/pg-cls/predict", {"input": text}, format="json").json()
    res = explain(user_api, "pg-cls", input=text)
    assert res.status_code == 202 and res.json()["method"] == "integrated_gradients"
    job = finished(res.json()["job"])
    assert job.status == "succeeded", job.error
    assert job.result["output_tokens"] == [predicted["results"][0][0]["label"]]
    assert [text[a:b] for a, b in job.result["spans"]] == job.result["input_tokens"]
    assert len(job.result["attributions"]) == 1 and len(job.result["attributions"][0]) == 6


@pytest.mark.django_db(transaction=True)
def test_the_creator_or_a_maintainer_may_cancel_an_explain_job_and_no_one_else(user_api, maintainer_api, charlie):
    from tests.conftest import key_client

    job = Job.enqueue("explain", {"deployment": "pg-nowhere", "task": "text-generation", "prompt": "hi"}, charlie)
    other = key_client(make_user("erin", "user"))
    assert other.post(f"/api/deployments/pg-nowhere/explain/{job.pk}/cancel").status_code == 404
    assert user_api.post(f"/api/deployments/elsewhere/explain/{job.pk}/cancel").status_code == 404
    res = user_api.post(f"/api/deployments/pg-nowhere/explain/{job.pk}/cancel")
    assert res.status_code == 202 and res.json()["status"] == "cancelled"
    assert maintainer_api.post(f"/api/deployments/pg-nowhere/explain/{job.pk}/cancel").status_code == 409
    from workers.celery import app

    with app.connection_for_write() as conn:  # nothing left on a queue no worker consumes
        conn.default_channel.queue_purge("deploy.pg-nowhere")


# --- sessions -----------------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_sessions_are_saved_per_user_and_opened_by_others_only_through_a_share_link(user_api, maintainer_api):
    data = {"params": {"temperature": 0}, "turns": [{"mode": "chat", "user": "hi", "answers": []}]}
    res = user_api.post("/api/playground/sessions/", {"title": "Greeting", "deployment": "pg-tiny", "data": data},
                        format="json")
    assert res.status_code == 201 and res.json()["owner"] == "charlie" and res.json()["share_url"] is None
    sid = res.json()["id"]
    assert [s["title"] for s in user_api.get("/api/playground/sessions/").json()["results"]] == ["Greeting"]
    assert maintainer_api.get("/api/playground/sessions/").json()["results"] == []
    assert maintainer_api.get(f"/api/playground/sessions/{sid}/").status_code == 404
    assert maintainer_api.patch(f"/api/playground/sessions/{sid}/", {"title": "mine"}, format="json").status_code == 404

    patched = user_api.patch(f"/api/playground/sessions/{sid}/", {"data": {**data, "system": "Be brief."}}, format="json")
    assert patched.status_code == 200 and patched.json()["data"]["system"] == "Be brief."

    shared = user_api.post(f"/api/playground/sessions/{sid}/share").json()
    assert shared["shared"] and "/playground/shared/" in shared["share_url"]
    token = shared["share_url"].rstrip("/").rsplit("/", 1)[1]
    assert user_api.post(f"/api/playground/sessions/{sid}/share").json()["share_url"] == shared["share_url"]
    seen = maintainer_api.get(f"/api/playground/shared/{token}/")
    assert seen.status_code == 200 and seen.json()["data"]["system"] == "Be brief." and seen.json()["owner"] == "charlie"

    assert user_api.delete(f"/api/playground/sessions/{sid}/share").json()["shared"] is False
    assert maintainer_api.get(f"/api/playground/shared/{token}/").status_code == 404
    assert user_api.patch(f"/api/playground/sessions/{sid}/", {"data": [1]}, format="json").status_code == 400
    assert user_api.delete(f"/api/playground/sessions/{sid}/").status_code == 204
