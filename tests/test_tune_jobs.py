"""The `tune` job through POST /api/jobs/: refused up front naming the field, run end to end on a tiny
random model by a real Celery worker, each trial on a transient deployment that the session's real serving
worker loads and the job drives through the gateway (no trial deployment outlives the job, also when
cancelled), its result page, and applying its recommendation to a deployment (maintainers and admins only,
audited with the figures)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from console.audit.models import AuditEvent
from console.deployments.models import Deployment
from console.jobs.models import Job
from tests.api_rows import make_model, make_version
from tests.conftest import wait_for
from tests.serving_rows import deploy

pytestmark = pytest.mark.django_db(transaction=True)

TINY_SPACE = {"quantization": ["none", "int8"], "max_num_seqs": [2, 8], "max_batch_tokens": [64],
              "kv_cache_bytes": [4 << 20]}
FAST_WORKLOAD = {"synthetic": {"prompt_tokens": [4, 12], "output_tokens": [4, 8]}, "concurrency": [1, 4],
                 "requests": 6}


def post(api: Any, params: dict[str, Any]) -> Any:
    return api.post("/api/jobs/", {"kind": "tune", "params": params}, format="json")


def refused(api: Any, params: dict[str, Any], field: str) -> str:
    response = post(api, params)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == f"params.{field}", error
    assert not Job.objects.filter(kind="tune").exists()
    return error["message"]


@pytest.fixture
def chat(bob: Any, llama_dir: Any) -> Deployment:
    return deploy("chat", llama_dir, owner=bob, wait=False,
                  config={"engine": {"kv_cache_bytes": 4 << 20, "max_num_seqs": 2, "max_batch_tokens": 64}})


def test_bad_tune_params_are_refused_naming_the_field(maintainer_api: Any, chat: Deployment, bob: Any) -> None:
    base = {"deployment": "chat", "workload": FAST_WORKLOAD}
    assert "unknown parameter" in refused(maintainer_api, {**base, "trials": 3}, "trials")
    assert "No deployment" in refused(maintainer_api, {**base, "deployment": "nope"}, "deployment")
    assert "unknown constraint" in refused(maintainer_api, {**base, "constraints": {"ttft_ms": 5}},
                                           "constraints.ttft_ms")
    assert "tunable" in refused(maintainer_api, {**base, "space": {"batch": [1]}}, "space.batch")
    refused(maintainer_api, {**base, "space": {"max_num_seqs": [0]}}, "space.max_num_seqs")
    refused(maintainer_api, {**base, "objective": "cost"}, "objective")
    refused(maintainer_api, {**base, "max_trials": 0}, "max_trials")
    refused(maintainer_api, {**base, "workload": {"concurrency": [0]}}, "workload.concurrency")
    refused(maintainer_api, {**base, "workload": {"dataset": "nope"}}, "workload.dataset")
    refused(maintainer_api, {**base, "workload": {"synthetic": {"prompt_tokens": [9, 3]}}},
            "workload.synthetic.prompt_tokens")
    chat_sample = {"chats": [{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}]}
    refused(maintainer_api, {**base, "workload": {**chat_sample, "dataset": "qa"}}, "workload.chats")
    refused(maintainer_api, {**base, "workload": {"chats": []}}, "workload.chats")
    refused(maintainer_api, {**base, "workload": {"chats": [{"messages": [{"role": "bot", "content": "x"}],
                                                              "max_tokens": 8}]}}, "workload.chats[0].messages")
    assert "the model's context" in refused(
        maintainer_api, {**base, "workload": {"chats": [{"messages": [{"role": "user", "content": "x"}],
                                                         "max_tokens": 10**6}]}}, "workload.chats[0].max_tokens")
    assert "smallest candidate" in refused(maintainer_api, {**base, "constraints": {"max_memory_bytes": 1000}},
                                           "constraints.max_memory_bytes")
    big = make_model("huge", owner=bob)
    make_version(big, parameter_count=70_000_000_000)
    message = refused(maintainer_api, {"model": "huge", "version": 1, "constraints": {"ttft_p99_ms": 0.5}},
                      "constraints.ttft_p99_ms")
    assert "below one forward pass" in message
    assert "GGUF" in refused(maintainer_api, {**base, "space": {"runtime": ["llamacpp"]}}, "space.runtime")


def test_cleaned_params_validate_again_unchanged_so_a_tune_can_be_rerun(chat: Deployment, bob: Any) -> None:
    from console.deployments.tuning import validate_params

    cleaned = validate_params({"deployment": "chat", "workload": FAST_WORKLOAD, "max_trials": 2}, bob)
    assert cleaned["baseline"]["max_num_seqs"] == 2 and cleaned["model"] == "chat-model"
    assert validate_params(cleaned, bob) == cleaned
    again = validate_params({"model": "chat-model", "version": 1}, bob)
    assert again["deployment"] is None and validate_params(again, bob) == again


def test_a_traffic_sample_is_the_workload_each_trial_serves(chat: Deployment, bob: Any) -> None:
    from console.deployments.tuning import validate_params
    from workers.tuning import _workload

    sample = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Q{i}?"}],
               "max_tokens": 4 + i} for i in range(3)]
    cleaned = validate_params({"deployment": "chat", "workload": {"chats": sample, "concurrency": [2],
                                                                  "requests": 3}}, bob)
    assert "synthetic" not in cleaned["workload"] and validate_params(cleaned, bob) == cleaned
    workload, _ = _workload(cleaned["workload"])
    assert workload.prompts == [c["messages"] for c in sample] and workload.output_tokens == [4, 5, 6]
    assert workload.share(5).output_tokens == [4, 5, 6, 4, 5] and workload.concurrency == [2]


def test_a_deployment_no_worker_can_host_is_refused(maintainer_api: Any, bob: Any) -> None:
    model = make_model("gone", owner=bob)
    make_version(model, status="failed")
    Deployment.objects.create(name="broken", model=model, version=model.versions.get(), config={"engine": {}})
    assert "no ready version" in refused(maintainer_api, {"deployment": "broken"}, "deployment")


def test_only_maintainers_start_tunes(user_api: Any, chat: Deployment) -> None:
    assert post(user_api, {"deployment": "chat"}).status_code == 403


def trials_of(job_id: int) -> list[str]:
    return list(Deployment.everything.filter(tune_job_id=job_id).values_list("name", flat=True))


def test_a_tune_measures_real_trials_recommends_and_its_settings_apply(
        celery_worker: Any, serving: Any, chat: Deployment, maintainer_api: Any, user_api: Any, admin_api: Any,
        bob: Any, llama_dir: Any) -> None:
    response = post(maintainer_api, {"deployment": "chat", "workload": FAST_WORKLOAD, "space": TINY_SPACE,
                                     "max_trials": 3, "constraints": {"max_perplexity_ratio": 1000}})
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["id"])
    seen: set[str] = set()

    def ended() -> Job | None:
        seen.update(trials_of(job.pk))
        return Job.objects.filter(pk=job.pk, status__in=["succeeded", "failed", "cancelled"]).first()

    done = wait_for(ended, 240, what="the tune to end")
    assert done.status == "succeeded", done.error + celery_worker.log()[-3000:] + serving.log()[-3000:]
    assert seen and all(name.startswith(f"tune-{job.pk}-") for name in seen)  # served as deployments of their own
    assert trials_of(job.pk) == []  # and deleted
    result = done.result
    assert len(result["trials"]) == 3 and result["trials"][0]["settings"]["max_num_seqs"] == 2  # baseline first
    measured = [t for t in result["trials"] if t["status"] == "measured"]
    assert measured and all(t["figures"]["tokens_per_s"] > 0 and t["figures"]["ttft_p99_ms"] > 0 for t in measured)
    assert result["recommended"] in [t["number"] for t in measured] and result["why"]
    assert result["pareto"]
    assert any("trial 1" in line for line in done.log)

    browser = Client()
    browser.force_login(bob)
    page = browser.get(f"/jobs/{done.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "tune-trials" in html and "tune-chart" in html and result["why"].split(";")[0][:20] in html

    url = "/api/deployments/chat/apply-tune"
    assert user_api.post(url, {"job": done.pk}, format="json").status_code == 403
    other = deploy("other", llama_dir, owner=bob, wait=False)
    wrong = maintainer_api.post(f"/api/deployments/{other.name}/apply-tune", {"job": done.pk}, format="json")
    assert wrong.status_code == 400 and wrong.json()["error"]["field"] == "job"
    applied = admin_api.post(url, {"job": done.pk}, format="json")
    assert applied.status_code == 200, applied.content
    chosen = result["trials"][result["recommended"] - 1]["settings"]
    chat.refresh_from_db()
    assert all(chat.config["engine"][k] == v for k, v in chosen.items())
    event = AuditEvent.objects.filter(action="deployment.apply_tune").get()
    assert event.data["job"] == done.pk and event.data["after"] == chosen
    assert "tokens_per_s" in event.data["figures_after"] and event.data["before"]["max_num_seqs"] == 2


def test_apply_tune_refuses_a_job_that_is_not_a_finished_tune(maintainer_api: Any, chat: Deployment) -> None:
    call_command("import_datasets")
    job = Job.objects.create(kind="tune", params={"model": chat.model.name}, status="running")
    response = maintainer_api.post("/api/deployments/chat/apply-tune", {"job": job.pk}, format="json")
    assert response.status_code == 400 and "only a finished tune" in response.json()["error"]["message"]
    missing = maintainer_api.post("/api/deployments/chat/apply-tune", {"job": 999999}, format="json")
    assert missing.status_code == 404


def test_the_deployment_page_offers_maintainers_a_tune_form_a_ttft_target_field_and_chart(
        chat: Deployment, bob: Any, charlie: Any) -> None:
    browser = Client()
    browser.force_login(bob)
    html = browser.get("/deployments/chat/").content.decode()
    assert 'id="tune-start"' in html and "chart-ttft" not in html
    chat.change(bob, config={"ttft_target_ms": 1500})
    html = browser.get("/deployments/chat/", HTTP_ACCEPT_LANGUAGE="zh-hans").content.decode()
    assert 'id="chart-ttft" data-target="1500"' in html and "开始调优" in html
    assert 'name="ttft_target_ms"' in html and 'value="1500" data-field="config.ttft_target_ms"' in html
    assert "自适应准入" in html  # the form's field, translated
    user = Client()
    user.force_login(charlie)
    assert 'id="tune-start"' not in user.get("/deployments/chat/").content.decode()


def test_a_running_tune_reports_progress_and_stops_on_cancel(celery_worker: Any, serving: Any, chat: Deployment,
                                                             maintainer_api: Any) -> None:
    workload = {**FAST_WORKLOAD, "requests": 200, "synthetic": {"prompt_tokens": [8, 16], "output_tokens": [32, 64]}}
    response = post(maintainer_api, {"deployment": "chat", "workload": workload, "space": TINY_SPACE, "max_trials": 4})
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    wait_for(lambda: Job.objects.filter(pk=job_id, status="running", progress__gt=0).exists() and trials_of(job_id),
             180, what="the tune to report progress on a trial deployment")
    assert maintainer_api.post(f"/api/jobs/{job_id}/cancel").status_code in (200, 202)
    done = wait_for(lambda: Job.objects.filter(pk=job_id, status__in=["succeeded", "failed", "cancelled"]).first(),
                    60, what="the tune to stop")
    assert done.status == "cancelled", (done.status, done.error)
    assert trials_of(job_id) == []  # no orphan
