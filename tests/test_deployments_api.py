"""/api/deployments/: create, read, change, stop, delete, with roles and clear 400s (no worker needed)."""

from __future__ import annotations

import pytest

from console.audit.models import AuditEvent
from console.deployments.models import Deployment, Replica
from console.registry.models import Alias
from tests.api_rows import error_of, make_model, make_version

pytestmark = pytest.mark.django_db


@pytest.fixture
def served(bob):  # type: ignore[no-untyped-def]
    """A text-generation model with ready versions 1 and 2; 'production' points at 1."""
    model = make_model("tiny-llm", owner=bob)
    v1, v2 = make_version(model), make_version(model)
    Alias.move(model, "production", v1, actor=bob)
    return model, v1, v2


def test_a_maintainer_deploys_a_model_following_production_by_default(maintainer_api, served):
    response = maintainer_api.post("/api/deployments/", {"name": "chat", "model": "tiny-llm"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["alias"] == "production" and body["version"] is None and body["serving_version"] == 1
    assert body["status"] == "pending" and "--deployments chat" in body["status_reason"]
    assert body["config"]["engine"]["max_num_seqs"] == 32 and body["config"]["max_tokens"] == 512
    assert body["replicas"] == 1 and body["task"] == "text-generation" and body["created_by"] == "bob"
    assert AuditEvent.objects.filter(action="deployment.create").count() == 1


def test_the_serving_version_follows_the_alias_unless_a_version_is_pinned(maintainer_api, served, bob):
    model, v1, v2 = served
    maintainer_api.post("/api/deployments/", {"name": "follows", "model": "tiny-llm"}, format="json")
    maintainer_api.post("/api/deployments/", {"name": "pinned", "model": "tiny-llm", "version": 1}, format="json")
    Alias.move(model, "production", v2, actor=bob)
    assert maintainer_api.get("/api/deployments/follows/").json()["serving_version"] == 2
    assert maintainer_api.get("/api/deployments/pinned/").json()["serving_version"] == 1
    changed = maintainer_api.patch("/api/deployments/pinned/", {"version": 2, "replicas": 3,
                                                                "config": {"engine": {"quantization": "int8"}}},
                                   format="json")
    assert changed.status_code == 200, changed.content
    body = changed.json()
    assert body["serving_version"] == 2 and body["replicas"] == 3
    assert body["config"]["engine"]["quantization"] == "int8" and body["config"]["engine"]["max_num_seqs"] == 32


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"name": "Not A Slug", "model": "tiny-llm"}, "name", "slug"),
    ({"name": "x", "model": "tiny-llm", "alias": "production", "version": 1}, "alias", "not both"),
    ({"name": "x", "model": "tiny-llm", "config": {"engine": {"max_num_seqs": 0}}}, "config.engine.max_num_seqs",
     "positive integer"),
    ({"name": "x", "model": "tiny-llm", "config": {"engine": {"quantization": "int3"}}},
     "config.engine.quantization", "one of"),
    ({"name": "x", "model": "tiny-llm", "config": {"engine": {"turbo": True}}}, "config.engine.turbo", "unknown"),
    ({"name": "x", "model": "tiny-llm", "config": {"max_tokens": 0}}, "config.max_tokens", "between"),
    ({"name": "x", "model": "tiny-llm", "config": {"max_tokens": 64, "sampling": {"max_tokens": 65}}},
     "config.sampling.max_tokens", "between 1 and 64"),
    ({"name": "x", "model": "tiny-llm", "replicas": -1}, "replicas", "greater than or equal"),
])
def test_bad_deployments_get_a_400_naming_the_field_and_nothing_is_created(maintainer_api, served, body, field,
                                                                           words):
    error = error_of(maintainer_api.post("/api/deployments/", body, format="json"), 400)
    assert error["field"] == field and words in error["message"], error
    assert not Deployment.objects.exists()


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"name": "x", "model": "nope"}, "model", "does not exist"),
    ({"name": "x", "model": "tiny-llm", "alias": "staging"}, "alias", "no alias 'staging'"),
    ({"name": "x", "model": "tiny-llm", "version": 9}, "version", "no version 9"),
])
def test_a_deployment_naming_what_does_not_exist_gets_a_404_naming_the_field(maintainer_api, served, body, field,
                                                                             words):
    error = error_of(maintainer_api.post("/api/deployments/", body, format="json"), 404)
    assert error["field"] == field and words in error["message"], error
    assert not Deployment.objects.exists()


def test_a_version_that_is_not_ready_cannot_be_pinned(maintainer_api, served):
    make_version(served[0], status="importing")
    error = error_of(maintainer_api.post("/api/deployments/", {"name": "x", "model": "tiny-llm", "version": 3},
                                         format="json"), 400)
    assert "importing" in error["message"]


def test_name_and_model_cannot_change_and_a_name_is_unique(maintainer_api, served):
    maintainer_api.post("/api/deployments/", {"name": "chat", "model": "tiny-llm"}, format="json")
    assert error_of(maintainer_api.patch("/api/deployments/chat/", {"name": "other"}, format="json"),
                    400)["field"] == "name"
    assert error_of(maintainer_api.post("/api/deployments/", {"name": "chat", "model": "tiny-llm"}, format="json"),
                    409)["field"] == "name"


def test_users_read_deployments_but_only_maintainers_change_them(user_api, maintainer_api, anon_api, served):
    maintainer_api.post("/api/deployments/", {"name": "chat", "model": "tiny-llm"}, format="json")
    assert user_api.get("/api/deployments/").json()["results"][0]["name"] == "chat"
    assert anon_api.get("/api/deployments/").status_code == 401
    assert error_of(user_api.post("/api/deployments/", {"name": "y", "model": "tiny-llm"}, format="json"), 403)
    assert error_of(user_api.patch("/api/deployments/chat/", {"replicas": 2}, format="json"), 403)
    assert error_of(user_api.post("/api/deployments/chat/stop"), 403)
    assert error_of(user_api.delete("/api/deployments/chat/"), 403)


def test_stop_start_and_delete_are_recorded_and_status_follows(maintainer_api, served):
    maintainer_api.post("/api/deployments/", {"name": "chat", "model": "tiny-llm"}, format="json")
    stopped = maintainer_api.post("/api/deployments/chat/stop").json()
    assert stopped["stopped"] is True and stopped["status"] == "stopped"
    assert maintainer_api.post("/api/deployments/chat/start").json()["status"] == "pending"
    assert maintainer_api.delete("/api/deployments/chat/").status_code == 204
    assert not Deployment.objects.exists()
    actions = list(AuditEvent.objects.filter(action__startswith="deployment.").values_list("action", flat=True))
    assert sorted(actions) == ["deployment.change", "deployment.change", "deployment.create", "deployment.delete"]


def test_status_comes_from_the_replicas_heartbeats(maintainer_api, served, settings):
    from datetime import timedelta

    from django.utils import timezone

    maintainer_api.post("/api/deployments/", {"name": "chat", "model": "tiny-llm", "replicas": 2}, format="json")
    deployment = Deployment.objects.get(name="chat")
    a = Replica.objects.create(deployment=deployment, key="a" * 32, worker="w1@h", pid=1, slot=0, status="loading")
    assert deployment.status_and_reason() == ("loading", "Loading version 1.")
    a.status = "ready"
    a.save()
    Replica.objects.create(deployment=deployment, key="b" * 32, worker="w2@h", pid=2, slot=1, status="ready",
                           heartbeat_at=timezone.now() - timedelta(seconds=settings.TAUON_REPLICA_LOST_S + 1))
    assert deployment.status_and_reason() == ("ready", "1 of 2 replicas ready; 1 lost.")
    body = maintainer_api.get("/api/deployments/chat/").json()
    assert sorted(r["state"] for r in body["replica_set"]) == ["lost", "ready"]
    Replica.objects.update(status="failed", status_reason="Loading version 1 failed: OSError: no such file")
    assert deployment.status_and_reason() == ("failed", "Loading version 1 failed: OSError: no such file")


def test_a_deployment_whose_alias_was_removed_says_so(maintainer_api, served, bob):
    model, _, _ = served
    maintainer_api.post("/api/deployments/", {"name": "chat", "model": "tiny-llm"}, format="json")
    Alias.objects.get(model=model, name="production").remove(actor=bob)
    body = maintainer_api.get("/api/deployments/chat/").json()
    assert body["status"] == "failed" and "points to no version" in body["status_reason"]


def test_predict_refuses_a_generation_deployment_and_an_unknown_one(user_api, maintainer_api, served):
    maintainer_api.post("/api/deployments/", {"name": "chat", "model": "tiny-llm"}, format="json")
    assert error_of(user_api.post("/api/deployments/chat/predict", {"input": "hi"}, format="json"),
                    400)["code"] == "wrong_task"
    assert error_of(user_api.post("/api/deployments/nope/predict", {"input": "hi"}, format="json"), 404)


def test_an_explicit_llamacpp_runtime_needs_a_version_that_kept_a_gguf_llamacpp_runs(maintainer_api, served, tmp_path):
    import gguf
    import numpy as np

    from engine.inspect import GGUF_NAME

    body = {"name": "x", "model": "tiny-llm", "config": {"engine": {"runtime": "llamacpp"}}}
    error = error_of(maintainer_api.post("/api/deployments/", body, format="json"), 400)
    assert error["field"] == "config.engine.runtime" and "version 1 has no GGUF file" in error["message"], error
    odd = make_version(served[0], format="gguf")
    odd.path.mkdir(parents=True)
    w = gguf.GGUFWriter(odd.path / GGUF_NAME, "quantumformer")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    error = error_of(maintainer_api.post("/api/deployments/", {**body, "version": odd.number}, format="json"), 400)
    assert error["field"] == "config.engine.runtime" and "'quantumformer'" in error["message"], error
    assert not Deployment.objects.exists()
    auto = maintainer_api.post("/api/deployments/", {**body, "version": odd.number, "config": {}}, format="json")
    assert auto.status_code == 201 and auto.json()["config"]["engine"]["runtime"] == "auto"


def test_a_new_deployment_starts_from_its_versions_sampling_defaults(maintainer_api, served):  # type: ignore[no-untyped-def]
    _, v1, _ = served
    v1.config = {"sampling": {"temperature": 0.2, "top_p": 0.9, "max_tokens": 64, "seed": 7}}
    v1.save(update_fields=["config"])
    made = maintainer_api.post("/api/deployments/", {"name": "from-version", "model": "tiny-llm"}, format="json")
    assert made.status_code == 201, made.json()  # follows production, which is v1
    assert made.json()["config"]["sampling"] == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 64}
    own = maintainer_api.post("/api/deployments/", {"name": "own-defaults", "model": "tiny-llm", "version": 1,
                                                    "config": {"sampling": {"temperature": 1.0}}}, format="json")
    assert own.json()["config"]["sampling"] == {"temperature": 1.0, "top_p": 0.9, "max_tokens": 64}  # its own win
