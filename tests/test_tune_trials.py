"""A tune's trial deployments (workers/tune_trials.py), without a serving worker: hidden from people (pages,
/api, /v1) and their names reserved; a trial no worker takes fails with its reason and leaves no deployment
behind; the default search space offers llama.cpp when the version has a GGUF. Trials measured through a
real serving worker are in tests/test_tune_jobs.py."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from console.deployments.models import Deployment
from console.deployments.tuning import remove_trials, validate_params
from console.jobs.models import Job
from engine.inspect import GGUF_NAME
from tests.api_rows import make_model, make_version
from tests.engine.conftest import SMOLLM2_GGUF

pytestmark = pytest.mark.django_db


def trial_of(job: Job, model: Any, number: int = 1) -> Deployment:
    return Deployment.everything.create(name=Deployment.trial_name(job.pk, number), model=model,
                                        version=model.versions.get(), config={"engine": {}}, tune_job=job)


@pytest.fixture
def tuned(bob: Any) -> tuple[Job, Any]:
    model = make_model("tuned-model", owner=bob)
    make_version(model)
    job = Job.objects.create(kind="tune", params={"model": model.name, "deployment": "nobody-serves-this"},
                             status="running", created_by=bob)
    return job, model


def test_trial_deployments_are_hidden_from_people_and_their_names_reserved(
        tuned: tuple[Job, Any], user_api: Any, maintainer_api: Any, charlie: Any) -> None:
    job, model = tuned
    trial = trial_of(job, model)
    assert trial.internal and Deployment.everything.filter(pk=trial.pk).exists()
    assert not Deployment.objects.filter(name=trial.name).exists()
    listed = maintainer_api.get("/api/deployments/").json()
    assert trial.name not in str(listed)
    assert maintainer_api.get(f"/api/deployments/{trial.name}/").status_code == 404
    assert maintainer_api.delete(f"/api/deployments/{trial.name}/").status_code == 404
    assert user_api.get("/v1/models").json()["data"] == []
    called = user_api.post("/v1/chat/completions", {"model": trial.name, "messages": [{"role": "user",
                                                                                       "content": "hi"}]},
                           format="json")
    assert called.status_code == 404 and called.json()["error"]["code"] == "model_not_found"
    browser = Client()
    browser.force_login(charlie)
    assert trial.name not in browser.get("/deployments/").content.decode()
    assert browser.get(f"/deployments/{trial.name}/").status_code == 404
    taken = maintainer_api.post("/api/deployments/", {"name": "tune-7-2", "model": model.name, "version": 1},
                                format="json")
    assert taken.status_code == 400 and "reserved for tuning trials" in str(taken.json())
    assert remove_trials(job) == 1 and not Deployment.everything.filter(tune_job=job).exists()


def test_a_trial_no_worker_takes_fails_with_its_reason_and_leaves_no_deployment(
        tuned: tuple[Job, Any]) -> None:
    from workers.tune_trials import TrialFailed, trial_deployment, wait_ready

    job, model = tuned
    seen: list[str] = []
    with pytest.raises(TrialFailed, match="no serving worker took it.*'nobody-serves-this'"):
        with trial_deployment(job, 3, model.versions.get(), {"max_num_seqs": 4}, 60) as deployment:
            assert deployment.name == f"tune-{job.pk}-3" and deployment.config["engine"]["max_num_seqs"] == 4
            wait_ready(deployment, 0.6, lambda f, m: seen.append(m))
    assert seen and "waiting for its replica" in seen[0]
    assert not Deployment.everything.filter(tune_job=job).exists()


def test_a_cancel_while_waiting_deletes_the_trial_deployment(tuned: tuple[Job, Any]) -> None:
    from console.jobs.models import JobCancelled
    from workers.tune_trials import trial_deployment, wait_ready

    job, model = tuned
    job.request_cancel()

    with pytest.raises(JobCancelled):
        with trial_deployment(job, 1, model.versions.get(), {}, 60) as deployment:
            wait_ready(deployment, 60, lambda f, m: job.report(f, m))
    assert not Deployment.everything.filter(tune_job=job).exists()


def test_the_default_space_offers_llamacpp_with_threads_when_the_version_has_a_gguf(bob: Any) -> None:
    model = make_model("gguf-model", owner=bob)
    version = make_version(model, format="gguf")
    version.path.mkdir(parents=True, exist_ok=True)
    (version.path / GGUF_NAME).symlink_to(SMOLLM2_GGUF)
    cleaned = validate_params({"model": model.name, "version": 1, "max_trials": 6}, bob)
    assert cleaned["space"]["runtime"] == ["torch", "llamacpp"] and cleaned["space"]["threads"][0] == 0
    assert len(cleaned["space"]["threads"]) > 1
    assert validate_params(cleaned, bob) == cleaned
    plain = make_model("plain-model", owner=bob)
    make_version(plain)
    assert validate_params({"model": plain.name, "version": 1}, bob)["space"]["runtime"] == ["torch"]


def test_candidates_do_not_differ_only_in_what_their_runtime_ignores() -> None:
    from engine.tuning import candidates, check_space

    base = {"runtime": "torch", "quantization": "none", "max_num_seqs": 8, "max_batch_tokens": 256,
            "kv_cache_bytes": 256 << 20, "threads": 0}
    space = check_space({"runtime": ["torch", "llamacpp"], "quantization": ["none", "int8"], "max_num_seqs": [8],
                         "max_batch_tokens": [256], "kv_cache_bytes": [256 << 20], "threads": [0, 1, 2]})
    got = candidates(space, base, 24)
    assert len(got) == 2 + 3  # torch × {none, int8} (threads pinned), llamacpp × threads (quantization pinned)
    assert {(c["runtime"], c["quantization"]) for c in got} == {("torch", "none"), ("torch", "int8"),
                                                                ("llamacpp", "none")}
    assert got[1]["runtime"] == "llamacpp" or got[1]["quantization"] == "int8"  # each runtime × quantization early


def test_each_level_serves_prompts_no_earlier_level_left_in_a_prompt_cache() -> None:
    from workers.tune_trials import fresh

    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a river."}]
    ids = [17, 18, 19]
    for prompt in ("Once upon a time", ids, chat):
        a, b = fresh(prompt, 1), fresh(prompt, 2)
        assert a != b and a != prompt
    assert fresh(ids, 1)[1:] == ids and fresh(ids, 1)[0] != fresh(ids, 2)[0]  # they differ from the first token
    assert fresh(chat, 7) == [{"role": "system", "content": "(7) Be brief."}, chat[1]]
    assert chat[0]["content"] == "Be brief."  # the workload itself is left as it was
