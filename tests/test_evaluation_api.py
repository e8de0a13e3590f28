"""Starting evaluations through POST /api/jobs/ (params validated and normalized), stored results on the
pages and /api/evaluations/, and the promotion gate: the promote action (API and page) refuses with the
numbers, passes within the allowed regression, and an admin may override it with a recorded reason.
Results are written as the worker writes them."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from console.audit.models import AuditEvent
from console.evaluation.config import key_of, normalize
from console.evaluation.models import Dataset, EvaluationResult, PromotionGate
from console.jobs.models import Job
from console.registry.models import Alias, Model
from tests.api_rows import error_of, make_model, make_version

pytestmark = pytest.mark.django_db

DEFAULT = normalize({})


@pytest.fixture
def tiny(bob) -> Model:  # type: ignore[no-untyped-def]
    """A text-generation model with v1 on production, v2 and v3 ready, v4 failed; the built-in datasets."""
    call_command("import_datasets")
    model = make_model("tiny", owner=bob)
    first = make_version(model, total_size=1000)
    for _ in range(2):
        make_version(model, parent=first, total_size=500)
    make_version(model, status="failed")
    Alias.move(model, "production", first, actor=bob)
    return model


def result(model: Model, number: int, dataset: str = "plain-english", config: dict[str, Any] | None = None,
           **metrics: float) -> EvaluationResult:
    config = config or DEFAULT
    dataset_version = Dataset.objects.get(name=dataset).latest
    return EvaluationResult.objects.create(version=model.versions.get(number=number), dataset_version=dataset_version,
                                           config=config, config_key=key_of(config), metrics=metrics)


def evaluate(api: Any, **params: Any) -> Any:
    return api.post("/api/jobs/", {"kind": "evaluate", "params": params}, format="json")


# --- starting an evaluation ------------------------------------------------------------------------------------
def test_an_evaluation_is_queued_with_normalized_params_and_audited(tiny, bob, maintainer_api):
    response = evaluate(maintainer_api, model="tiny", versions=[3, 2, 3], dataset="plain-english",
                        config={"engine": {"quantization": "int8"}, "context_length": 512})
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    assert (job.kind, job.status, job.created_by) == ("evaluate", "queued", bob)
    assert job.params == {"model": "tiny", "versions": [2, 3], "dataset": "plain-english", "dataset_version": 1,
                          "config": {**DEFAULT, "context_length": 512,
                                     "engine": {**DEFAULT["engine"], "quantization": "int8"}}}
    assert AuditEvent.objects.get(action="job.create").data["kind"] == "evaluate"


@pytest.mark.parametrize(("params", "field", "says"), [
    ({"model": "nope", "versions": [1], "dataset": "plain-english"}, "params.model", "No model named 'nope'"),
    ({"model": "tiny", "versions": [], "dataset": "plain-english"}, "params.versions", "non-empty list"),
    ({"model": "tiny", "versions": [9], "dataset": "plain-english"}, "params.versions", "has no version 9"),
    ({"model": "tiny", "versions": [4], "dataset": "plain-english"}, "params.versions", "is 'failed'"),
    ({"model": "tiny", "versions": list(range(1, 10)), "dataset": "plain-english"}, "params.versions", "At most 8"),
    ({"model": "tiny", "versions": [1], "dataset": "nope"}, "params.dataset", "No dataset named 'nope'"),
    ({"model": "tiny", "versions": [1], "dataset": "plain-english", "dataset_version": 7}, "params.dataset_version",
     "has no version 7"),
    ({"model": "tiny", "versions": [1], "dataset": "plain-english", "config": {"engine": {"quantisation": "int8"}}},
     "params.config.engine.quantisation", "unknown engine setting"),
    ({"model": "tiny", "versions": [1], "dataset": "plain-english", "config": {"engine": {"quantization": "int3"}}},
     "params.config.engine.quantization", "quantization must be one of"),
    ({"model": "tiny", "versions": [1], "dataset": "plain-english", "config": {"stride": 4096}},
     "params.config.stride", "stride <= context_length"),
    ({"model": "tiny", "versions": [1], "dataset": "plain-english", "config": {"temperature": 1}},
     "params.config.temperature", "unknown setting"),
    ({"model": "tiny", "versions": [1], "dataset": "plain-english", "extra": 1}, "params.extra", "unknown parameter"),
])
def test_bad_evaluation_params_are_refused_naming_the_parameter(tiny, maintainer_api, params, field, says):
    error = error_of(evaluate(maintainer_api, **params), 400)
    assert error["field"] == field and says in error["message"], error
    assert not Job.objects.exists()


def test_a_dataset_must_fit_the_models_task(tiny, bob, maintainer_api):
    make_model("sentiment", task="text-classification", owner=bob)
    make_version(Model.objects.get(name="sentiment"))
    error = error_of(evaluate(maintainer_api, model="sentiment", versions=[1], dataset="simple-qa"), 400)
    assert error["field"] == "params.dataset" and "for text-generation models" in error["message"]


def test_users_may_not_start_evaluations(tiny, user_api):
    assert error_of(evaluate(user_api, model="tiny", versions=[1], dataset="plain-english"), 403)


# --- results ---------------------------------------------------------------------------------------------------
def test_results_are_listed_and_filtered(tiny, user_api):
    result(tiny, 1, perplexity=10.0)
    result(tiny, 2, perplexity=11.0)
    result(tiny, 2, dataset="simple-qa", exact_match=0.5)
    body = user_api.get("/api/evaluations/?model=tiny&dataset=plain-english").json()
    assert body["count"] == 2 and {r["version"] for r in body["results"]} == {1, 2}
    one = user_api.get("/api/evaluations/?version=2&dataset=simple-qa").json()["results"][0]
    assert one | {"id": 0, "updated_at": None} == {
        "id": 0, "model": "tiny", "version": 2, "dataset": "simple-qa", "dataset_version": 1,
        "config_key": key_of(DEFAULT), "config": DEFAULT, "metrics": {"exact_match": 0.5}, "runtime": "",
        "job": None, "updated_at": None}


def test_the_version_page_and_the_comparison_page_show_the_results(tiny, charlie):
    result(tiny, 1, perplexity=12.5, tokens_per_s=40.0, ttft_s=0.1, peak_memory_bytes=2_000_000, size_bytes=1000)
    result(tiny, 2, perplexity=13.75, tokens_per_s=90.0, ttft_s=0.05, peak_memory_bytes=1_000_000, size_bytes=500)
    client = Client()
    client.force_login(charlie)
    version_page = client.get("/models/tiny/versions/2/").content.decode()
    assert 'id="evaluation-table"' in version_page and "13.75" in version_page and "90.0" in version_page
    page = client.get("/models/tiny/evaluation/").content.decode()
    assert 'data-compare-version="1"' in page and 'data-compare-version="2"' in page
    assert 'id="chart-quality"' in page and 'id="eval-chart-data"' in page and "plotly" in page
    assert 'id="evaluate-form"' not in page  # users read; maintainers run evaluations
    empty = client.get("/models/tiny/evaluation/?dataset=simple-qa").content.decode()
    assert 'id="no-results"' in empty


def test_a_comparison_row_names_the_runtime_that_measured_its_speed_in_both_languages(tiny, charlie):
    measured = result(tiny, 1, perplexity=12.5, tokens_per_s=80.0, size_bytes=1000)
    measured.runtime = "llamacpp"
    measured.save()
    result(tiny, 2, perplexity=13.75, tokens_per_s=20.0, size_bytes=500)  # stored before runtimes were recorded
    client = Client()
    client.force_login(charlie)
    page = client.get("/models/tiny/evaluation/").content.decode()
    assert page.count("data-runtime=") == 1 and 'data-runtime="llamacpp"' in page
    assert "measured on llama.cpp" in page and "Tokens/s and TTFT were measured on llama.cpp" in page
    zh = client.get("/models/tiny/evaluation/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert 'data-runtime="llamacpp"' in zh and "measured on" not in zh and "由 llama.cpp 测得" in zh


# --- the promotion gate -----------------------------------------------------------------------------------------
def gate(api: Any, **fields: Any) -> Any:
    body = {"model": "tiny", "alias": "production", "dataset": "plain-english", "metric": "perplexity",
            "max_regression_pct": 2, **fields}
    return api.post("/api/gates/", body, format="json")


def promote(api: Any, version: int, **extra: Any) -> Any:
    return api.put("/api/models/tiny/aliases/production", {"version": version, **extra}, format="json")


def test_only_admins_set_gates_and_setting_one_is_audited(tiny, admin_api, maintainer_api, user_api):
    assert error_of(gate(maintainer_api), 403)
    response = gate(admin_api)
    assert response.status_code == 201, response.content
    assert response.json()["rule"] == "perplexity on plain-english no more than 2 % higher than production"
    assert gate(admin_api, max_regression_pct=5).json()["id"] == response.json()["id"]  # the same rule, changed
    assert PromotionGate.objects.get().max_regression_pct == 5
    assert user_api.get("/api/gates/?model__name=tiny").json()["count"] == 1
    assert [e.action for e in AuditEvent.objects.filter(action__startswith="gate.")] == ["gate.set", "gate.set"]


def test_a_promotion_worse_than_production_by_more_than_the_gate_allows_is_refused_with_the_numbers(
        tiny, admin_api, maintainer_api):
    gate(admin_api)
    result(tiny, 1, perplexity=10.0)
    result(tiny, 2, perplexity=10.5)  # 5 % worse
    error = error_of(promote(maintainer_api, 2), 409)
    assert error["code"] == "gate_failed" and error["field"] == "version"
    assert ("The perplexity of v2 on 'plain-english' v1 is 10.5, 5.00 % worse than production's v1 (10); "
            "the gate allows at most 2 % worse.") in error["message"]
    assert Alias.objects.get(model=tiny, name="production").version.number == 1


def test_a_promotion_within_the_gate_goes_through(tiny, admin_api, maintainer_api):
    gate(admin_api)
    result(tiny, 1, perplexity=10.0)
    result(tiny, 3, perplexity=10.1)  # 1 % worse
    assert promote(maintainer_api, 3).status_code == 200
    assert Alias.objects.get(model=tiny, name="production").version.number == 3


def test_for_a_higher_is_better_metric_the_gate_refuses_a_drop(tiny, admin_api, maintainer_api):
    gate(admin_api, dataset="simple-qa", metric="exact_match", max_regression_pct=10)
    result(tiny, 1, dataset="simple-qa", exact_match=0.5)
    result(tiny, 2, dataset="simple-qa", exact_match=0.4)
    assert "20.00 % worse than" in error_of(promote(maintainer_api, 2), 409)["message"]
    result(tiny, 3, dataset="simple-qa", exact_match=0.6)
    assert promote(maintainer_api, 3).status_code == 200


def test_the_gate_refuses_while_a_version_lacks_a_result_under_its_config(tiny, admin_api, maintainer_api):
    gate(admin_api)
    result(tiny, 1, perplexity=10.0)
    result(tiny, 2, config=normalize({"context_length": 128, "stride": 64}), perplexity=9.0)  # another config does not count
    message = error_of(promote(maintainer_api, 2), 409)["message"]
    assert "v2 lack it" in message and "Evaluate both on 'plain-english' first" in message


def test_only_the_gated_alias_is_checked_and_a_rollback_is_not(tiny, admin_api, maintainer_api):
    gate(admin_api)
    result(tiny, 1, perplexity=10.0)
    result(tiny, 2, perplexity=20.0)
    assert maintainer_api.put("/api/models/tiny/aliases/staging", {"version": 2}, format="json").status_code == 200
    assert promote(admin_api, 2, override_reason="known regression, accepted").status_code == 200
    back = maintainer_api.post("/api/models/tiny/aliases/production/rollback", {}, format="json")
    assert back.status_code == 200 and back.json()["version"] == 1


def test_an_admin_overrides_a_failing_gate_with_a_recorded_reason(tiny, admin_api, maintainer_api, alice):
    gate(admin_api)
    result(tiny, 1, perplexity=10.0)
    result(tiny, 2, perplexity=12.0)
    refused = error_of(promote(maintainer_api, 2, override_reason="please"), 409)["message"]
    assert "Only an admin can override the gate" in refused
    response = promote(admin_api, 2, override_reason="v2 fixes a safety bug; perplexity is secondary")
    assert response.status_code == 200 and response.json()["version"] == 2
    event = AuditEvent.objects.get(action="gate.override")
    assert event.actor == alice and event.data["reason"] == "v2 fixes a safety bug; perplexity is secondary"
    assert event.data["failed"][0]["candidate"] == 12.0 and event.data["failed"][0]["baseline"] == 10.0
    assert event.data["failed"][0]["regression_pct"] == pytest.approx(20.0)


def test_the_promote_form_shows_the_gate_refusal_and_lets_an_admin_override(tiny, admin_api, bob, alice):
    gate(admin_api)
    result(tiny, 1, perplexity=10.0)
    result(tiny, 2, perplexity=12.0)
    maintainer = Client()
    maintainer.force_login(bob)
    refused = maintainer.post("/models/tiny/promote/", {"version": 2, "alias": "production"})
    assert refused.status_code == 400 and "Promotion gate failed" in refused.content.decode()
    admin = Client()
    admin.force_login(alice)
    assert "id_override_reason" in admin.get("/models/tiny/").content.decode()
    done = admin.post("/models/tiny/promote/", {"version": 2, "alias": "production", "override_reason": "hotfix"})
    assert done.status_code == 302
    page = admin.get("/models/tiny/evaluation/").content.decode()
    assert "hotfix" in page and 'data-gate="' in page


def test_the_evaluation_page_sets_and_removes_gates_for_admins_only(tiny, alice, bob):
    admin, maintainer = Client(), Client()
    admin.force_login(alice)
    maintainer.force_login(bob)
    form = {"alias": "production", "dataset": "plain-english", "metric": "perplexity", "max_regression_pct": "3"}
    maintainer.post("/models/tiny/evaluation/gates/", form)
    assert not PromotionGate.objects.exists()
    admin.post("/models/tiny/evaluation/gates/", form)
    made = PromotionGate.objects.get()
    assert made.max_regression_pct == 3 and made.config == DEFAULT
    admin.post(f"/models/tiny/evaluation/gates/{made.pk}/remove/")
    assert not PromotionGate.objects.exists() and AuditEvent.objects.filter(action="gate.delete").exists()


def test_the_openapi_schema_documents_datasets_evaluations_gates_and_re_runs(tmp_path):
    import yaml

    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    paths = yaml.safe_load(out.read_text())["paths"]
    assert {"/api/datasets/", "/api/datasets/{name}/", "/api/evaluations/", "/api/gates/", "/api/gates/{id}/",
            "/api/jobs/{id}/rerun"} <= set(paths)
    upload = paths["/api/datasets/"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    assert upload.endswith("/DatasetUploadRequest")
