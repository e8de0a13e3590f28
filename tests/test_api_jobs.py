"""/api/jobs/: list with filters, inspect, start (user-creatable kinds only, params validated), cancel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.core.exceptions import ValidationError

import tests.job_kinds  # noqa: F401 - registers test-sleep, which users may not start themselves
from console.audit.models import AuditEvent
from console.jobs import kinds
from console.jobs.models import Job
from tests.api_rows import error_of
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def echo_kind() -> Iterator[None]:
    """A kind users may start directly, registered only for the test that asks for it."""

    def validate(params: dict[str, Any], user: Any) -> dict[str, Any]:
        steps = params.get("steps", 1)
        if not isinstance(steps, int) or not 1 <= steps <= 10:
            raise ValidationError({"steps": "steps must be an integer from 1 to 10."})
        return {"steps": steps, "requested_by": user.username}

    kinds.register(kinds.JobKind(name="test-echo", handler="tests.job_kinds.sleep_handler", validate=validate,
                                 user_creatable=True))
    yield
    kinds.KINDS.pop("test-echo")


def test_jobs_are_listed_newest_first_with_every_field(bob, user_api):
    Job.objects.create(kind="import", created_by=bob)
    job = Job.objects.create(kind="test-sleep", created_by=bob, params={"steps": 2})
    body = user_api.get("/api/jobs/").json()
    assert body["count"] == 2 and body["results"][0]["id"] == job.pk
    assert set(body["results"][0]) == {
        "id", "kind", "params", "status", "progress", "progress_message", "log", "result", "error",
        "cancel_requested", "created_by", "created_at", "started_at", "finished_at", "worker", "deliveries", "eta_s",
        "series"}
    assert body["results"][0] | {"created_at": None} == {
        "id": job.pk, "kind": "test-sleep", "params": {"steps": 2}, "status": "queued", "progress": 0.0,
        "progress_message": "", "log": [], "result": None, "error": "", "cancel_requested": False,
        "created_by": "bob", "created_at": None, "started_at": None, "finished_at": None, "worker": "",
        "deliveries": 0, "eta_s": None, "series": {}}


def test_jobs_filter_by_kind_status_and_creator_and_paginate(alice, bob, user_api):
    Job.objects.create(kind="import", created_by=bob, status="succeeded")
    Job.objects.create(kind="import", created_by=alice)
    Job.objects.create(kind="test-sleep", created_by=bob, status="failed")

    def count(query: str) -> int:
        return user_api.get(f"/api/jobs/?{query}").json()["count"]

    assert (count("kind=import"), count("status=failed"), count("created_by=bob")) == (2, 1, 2)
    assert count("kind=import&created_by=alice&status=queued") == 1
    assert error_of(user_api.get("/api/jobs/?status=stuck"), 400)["field"] == "status"
    page = user_api.get("/api/jobs/?page_size=2").json()
    assert page["count"] == 3 and len(page["results"]) == 2 and page["next"].endswith("page=2&page_size=2")


def test_a_job_shows_its_progress_log_and_result(bob, user_api):
    job = Job.objects.create(kind="test-sleep", created_by=bob)
    job.claim("worker-1")
    job.report(0.5, "half way", log="did a thing")
    body = user_api.get(f"/api/jobs/{job.pk}/").json()
    assert (body["status"], body["progress"], body["progress_message"], body["worker"]) == (
        "running", 0.5, "half way", "worker-1")
    assert body["log"][0].endswith("did a thing") and body["started_at"]


def test_an_unknown_job_is_a_404_naming_it(user_api):
    assert error_of(user_api.get("/api/jobs/999/"), 404)["message"] == "No job #999."
    assert error_of(user_api.post("/api/jobs/999/cancel"), 403)  # users may not cancel at all


def test_cancelling_a_queued_job_ends_it_and_is_audited(bob, maintainer_api):
    job = Job.objects.create(kind="test-sleep", created_by=bob)
    response = maintainer_api.post(f"/api/jobs/{job.pk}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    event = AuditEvent.objects.get(action="job.cancel")
    assert (event.actor, event.target_id) == (bob, str(job.pk))
    assert event.data == {"kind": "test-sleep", "status_before": "queued", "status_after": "cancelled"}


def test_cancelling_a_running_job_asks_it_to_stop(bob, alice, admin_api):
    job = Job.objects.create(kind="test-sleep", created_by=bob)
    job.claim("worker-1")
    body = admin_api.post(f"/api/jobs/{job.pk}/cancel").json()
    assert (body["status"], body["cancel_requested"]) == ("running", True)
    assert AuditEvent.objects.get(action="job.cancel").actor == alice


def test_a_finished_job_cannot_be_cancelled(bob, maintainer_api):
    job = Job.objects.create(kind="test-sleep", created_by=bob)
    job.claim("worker-1")
    job.succeed({"ok": True})
    error = error_of(maintainer_api.post(f"/api/jobs/{job.pk}/cancel"), 409)
    assert error["message"] == f"Job #{job.pk} has already finished (succeeded); there is nothing to cancel."
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize("kind", ["import", "test-sleep", "nonsense"])
def test_only_user_creatable_kinds_can_be_started_here(maintainer_api, kind):
    error = error_of(maintainer_api.post("/api/jobs/", {"kind": kind}, format="json"), 400)
    assert error["code"] == "unknown_kind" and error["field"] == "kind"
    prefix = f"Unknown job kind '{kind}'; known kinds: "
    assert error["message"].startswith(prefix)
    listed = error["message"].removeprefix(prefix).rstrip(".").split(", ")
    assert "evaluate" in listed and "compress" in listed and "import" not in listed and "test-sleep" not in listed
    assert not Job.objects.exists()


def test_the_refusal_lists_the_kinds_that_can_be_started(echo_kind, maintainer_api):
    error = error_of(maintainer_api.post("/api/jobs/", {"kind": "nonsense"}, format="json"), 400)
    listed = error["message"].removeprefix("Unknown job kind 'nonsense'; known kinds: ").rstrip(".").split(", ")
    assert "test-echo" in listed and "evaluate" in listed and listed == sorted(listed)


def test_a_maintainer_starts_a_job_with_validated_params_and_it_is_audited(echo_kind, bob, maintainer_api):
    response = maintainer_api.post("/api/jobs/", {"kind": "test-echo", "params": {"steps": 3}}, format="json")
    assert response.status_code == 202
    job = Job.objects.get()
    assert response.json()["id"] == job.pk and response.json()["status"] == "queued"
    assert (job.kind, job.params, job.created_by) == ("test-echo", {"steps": 3, "requested_by": "bob"}, bob)
    event = AuditEvent.objects.get(action="job.create")
    assert event.actor == bob and event.data == {"kind": "test-echo", "params": {"steps": 3, "requested_by": "bob"}}


@pytest.mark.parametrize(("params", "field", "says"), [
    ({"steps": 99}, "params.steps", "steps must be an integer from 1 to 10."),
    ([1, 2], "params", "params must be a JSON object."),
])
def test_invalid_params_are_refused_naming_the_parameter(echo_kind, maintainer_api, params, field, says):
    error = error_of(maintainer_api.post("/api/jobs/", {"kind": "test-echo", "params": params}, format="json"), 400)
    assert (error["field"], error["message"]) == (field, says)
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_cancelling_through_the_api_stops_a_job_running_on_a_real_worker(celery_worker, bob, maintainer_api):
    job = Job.enqueue("test-sleep", {"steps": 600, "sleep": 0.05}, bob)
    wait_for(lambda: Job.objects.filter(pk=job.pk, status="running", progress__gt=0).exists(), 60, what="job start")
    assert maintainer_api.post(f"/api/jobs/{job.pk}/cancel").json()["cancel_requested"] is True
    done = wait_for(lambda: Job.objects.filter(pk=job.pk, status__in=["cancelled", "succeeded", "failed"]).first(),
                    30, what="job end")
    assert done.status == "cancelled" and done.progress < 1.0


def test_jobs_of_a_private_kind_are_seen_only_by_their_creator_and_maintainers(charlie, maintainer_api, user_api):
    from console.accounts.models import User

    erin = User.objects.create_user(username="erin", password="x", role="user")
    mine = Job.objects.create(kind="explain", params={"prompt": "charlie's secret"}, created_by=charlie)
    theirs = Job.objects.create(kind="explain", params={"prompt": "erin's secret"}, created_by=erin)
    listed = {row["id"] for row in user_api.get("/api/jobs/?kind=explain").json()["results"]}
    assert listed == {mine.pk}
    assert user_api.get(f"/api/jobs/{theirs.pk}/").status_code == 404
    assert {row["id"] for row in maintainer_api.get("/api/jobs/?kind=explain").json()["results"]} == {mine.pk, theirs.pk}
