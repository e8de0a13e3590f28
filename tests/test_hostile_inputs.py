"""Inputs that used to end in a 500 (issue 15): each is now a 4xx in the API's error shape (OpenAI's on
/v1) that names what is wrong, and leaves nothing behind."""

from __future__ import annotations

import io
import struct
import zipfile

import pytest
from django.core.management import call_command
from django.test import Client

from console.audit.models import AuditEvent
from console.deployments.models import Deployment
from console.evaluation.models import Dataset, PromotionGate
from console.registry.models import Alias, ModelVersion
from tests.api_rows import error_of, make_model, make_version
from tests.test_evaluation_datasets import stored_files, upload
from tests.test_upload_api import assert_refused, post_file, storage_snapshot

pytestmark = pytest.mark.django_db


def openai_error(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"], error
    return error


@pytest.fixture
def chat(bob):  # type: ignore[no-untyped-def]
    """A text-generation and an embeddings deployment (no worker: every refusal comes before one is needed)."""
    model = make_model("tiny-llm", owner=bob)
    Alias.move(model, "production", make_version(model), actor=bob)
    Deployment.create(bob, name="chat", model=model, alias="production")
    encoder = make_model("tiny-enc", task="embeddings", owner=bob)
    Alias.move(encoder, "production", make_version(encoder, architecture="BertModel"), actor=bob)
    Deployment.create(bob, name="embed", model=encoder, alias="production")
    return model


# --- headers and bodies anyone can send ---------------------------------------------------------------------

@pytest.mark.parametrize("value", ["\xa0", "\x85", " \xa0 "])
def test_an_authorization_header_of_only_unicode_whitespace_is_a_401(anon_api, value):
    response = Client().get("/api/models/", HTTP_AUTHORIZATION=value)
    assert error_of(response, 401)["code"] == "authentication_failed"
    assert "Bearer" in response.json()["error"]["message"]


def test_a_v1_body_nested_100000_deep_is_a_400(user_api, chat):
    response = user_api.post("/v1/chat/completions", b"[" * 100_000, content_type="application/json")
    assert openai_error(response, 400)["code"] == "invalid_json"


def test_a_v1_field_nested_too_deep_to_serialize_is_a_400_naming_it(user_api, chat):
    body = '{"model": "chat", "messages": [{"role": "user", "content": "hi"}], "metadata": ' + "[" * 990 + "]" * 990 + "}"
    error = openai_error(user_api.post("/v1/chat/completions", body, content_type="application/json"), 400)
    assert error["param"] in ("metadata", None)


def test_a_dataset_line_nested_50000_deep_is_refused_naming_its_line(maintainer_api):
    before = stored_files()
    content = '{"prompt": "p", "answer": "a"}\n{"prompt": ' + "[" * 50_000 + "]" * 50_000 + ', "answer": "a"}\n'
    error = error_of(upload(maintainer_api, "deep", "qa", "deep.jsonl", content), 400)
    assert error["field"] == "file" and "line 2: nested too deeply" in error["message"]
    assert not Dataset.objects.exists() and stored_files() == before


# --- /v1 fields ----------------------------------------------------------------------------------------------

def test_a_lone_surrogate_in_a_completions_prompt_is_a_400_naming_prompt(user_api, chat):
    body = '{"model": "chat", "prompt": "hello \\ud800 there"}'
    error = openai_error(user_api.post("/v1/completions", body, content_type="application/json"), 400)
    assert error["param"] == "prompt" and "surrogate" in error["message"]


def test_a_lone_surrogate_in_embeddings_input_or_a_chat_message_is_a_400(user_api, chat):
    for path, body, param in [
        ("/v1/embeddings", '{"model": "embed", "input": ["fine", "\\udfff"]}', "input"),
        ("/v1/chat/completions", '{"model": "chat", "messages": [{"role": "user", "content": "\\ud83d"}]}', "messages"),
    ]:
        error = openai_error(user_api.post(path, body, content_type="application/json"), 400)
        assert error["param"] == param and "surrogate" in error["message"]


@pytest.mark.parametrize("seed", [2**64, 2**63, -(2**63) - 1])
def test_a_seed_out_of_range_is_a_400_naming_seed(user_api, chat, seed):
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "seed": seed}
    error = openai_error(user_api.post("/v1/chat/completions", body, content_type="application/json"), 400)
    assert error["param"] == "seed"


# --- REST routes -------------------------------------------------------------------------------------------

def test_options_on_an_alias_answers_its_methods(maintainer_api, chat):
    response = maintainer_api.options("/api/models/tiny-llm/aliases/production")
    assert response.status_code == 200, response.content
    assert {"GET", "PUT", "DELETE"} <= {m.strip() for m in response["Allow"].split(",")}


def test_a_gate_without_an_alias_is_a_400_naming_alias(admin_api, bob):
    call_command("import_datasets")
    make_model("tiny", owner=bob)
    body = {"model": "tiny", "dataset": "plain-english", "metric": "perplexity"}
    assert error_of(admin_api.post("/api/gates/", body, format="json"), 400)["field"] == "alias"
    assert not PromotionGate.objects.exists()


@pytest.mark.parametrize("method", ["patch", "put"])
def test_a_deployment_change_may_name_its_own_model(maintainer_api, chat, method):
    body = {"name": "chat", "model": "tiny-llm", "alias": "production", "replicas": 2}
    response = getattr(maintainer_api, method)("/api/deployments/chat/", body, format="json")
    assert response.status_code == 200, response.content
    assert Deployment.objects.get(name="chat").replicas == 2
    change = AuditEvent.objects.filter(action="deployment.change").latest("pk")
    assert change.data["replicas"] == 2 and "model" not in change.data


# --- uploads ----------------------------------------------------------------------------------------------

def zip_of(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture
def llm(bob):  # type: ignore[no-untyped-def]
    return make_model("tiny-llm", owner=bob)


def test_an_archive_entry_name_over_255_bytes_is_refused(maintainer_api, llm):
    before = storage_snapshot()
    archive = zip_of({"config.json": b"{}", "x" * 300 + ".json": b"{}"})
    assert_refused(post_file(maintainer_api, "m.zip", archive), 400, "unsafe_path", "over 255 bytes", before)


def test_an_archive_2000_folders_deep_is_refused(maintainer_api, llm):
    before = storage_snapshot()
    archive = zip_of({"config.json": b"{}", "d/" * 2000 + "f.json": b"{}"})
    assert_refused(post_file(maintainer_api, "m.zip", archive), 400, "unsafe_path", "2000 folders deep", before)


def nested_gguf(depth: int) -> bytes:
    """A GGUF header (no tensors) whose one metadata value is an array of arrays … `depth` deep."""
    key = b"evil.nested"
    value = struct.pack("<IQ", 9, 1) * depth + struct.pack("<IQ", 4, 0)  # (ARRAY of, 1 item) … (uint32, 0 items)
    return b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, len(key)) + key + struct.pack("<I", 9) + value


def test_a_gguf_with_deeply_nested_metadata_is_refused(maintainer_api, llm):
    before = storage_snapshot()
    data = nested_gguf(100_000)
    assert_refused(post_file(maintainer_api, "deep.gguf", data), 400, "invalid_gguf", "nested more than 8 deep",
                   before)
    assert not ModelVersion.objects.exists()


def test_a_rest_body_nested_100000_deep_is_a_400(maintainer_api):
    response = maintainer_api.post("/api/deployments/", b"[" * 100_000, content_type="application/json")
    assert error_of(response, 400)["code"] == "parse_error"


def test_a_lone_surrogate_in_predict_input_is_a_400_naming_input(user_api, bob):
    model = make_model("tiny-cls", task="text-classification", owner=bob)
    Alias.move(model, "production", make_version(model, architecture="BertForSequenceClassification"), actor=bob)
    Deployment.create(bob, name="cls", model=model, alias="production")
    response = user_api.post("/api/deployments/cls/predict", '{"input": ["fine", "\\ud800"]}',
                             content_type="application/json")
    error = error_of(response, 400)
    assert error["field"] == "input" and "surrogate" in error["message"]
