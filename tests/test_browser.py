"""The browser flow in headless Chromium against a live server and a real Celery worker:
log in → register a model → upload two versions (with progress bars) → promote → promote → roll back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import IMPORT_TIMEOUT_MS, log_in
from tests.modelfactory import tiny_llama_dir, zip_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

def archive(tmp_path: Path, name: str, seed: int) -> Path:
    return zip_dir(tiny_llama_dir(tmp_path / name, seed=seed), tmp_path / f"{name}.zip")


def throttle_uploads(page, bytes_per_s: int) -> None:  # type: ignore[no-untyped-def]
    """Slow the browser's uploads (DevTools network emulation; -1 lifts it) so the progress bar is seen moving."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": bytes_per_s})


def upload(page, path: Path, *, watch_progress: bool = False) -> str:  # type: ignore[no-untyped-def]
    """Upload through the page's file input; return the import job id shown under the upload bar."""
    from playwright.sync_api import expect

    page.set_input_files("#upload-form input[type=file]", str(path))
    page.click("#upload-form button[type=submit]")
    bar = page.locator("#upload-form .upload-progress")
    expect(bar).to_be_visible()
    if watch_progress:  # upload.onprogress moves the bar part way before the request completes
        expect(bar.locator(".label")).to_have_text(re.compile(rf"Uploading {re.escape(path.name)}… ([1-9]|[1-9][0-9])%"))
        page.screenshot(path="/tmp/tauon-uploading.png")
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(bar.locator(".label")).to_have_text(f"Uploaded {path.name}")
    job_bar = page.locator("#upload-form .job-slot .progress[data-job-id]")
    expect(job_bar).to_be_attached()
    return job_bar.get_attribute("data-job-id")


def test_a_maintainer_uploads_two_versions_promotes_and_rolls_back_in_the_browser(page, celery_worker, bob, tmp_path):
    from playwright.sync_api import expect

    first, second = archive(tmp_path, "tiny-a", seed=1), archive(tmp_path, "tiny-b", seed=2)

    # log in on the real login page
    page.goto("/jobs/")
    expect(page).to_have_url(re.compile(r"/login/\?next=/jobs/$"))
    page.fill("#id_username", "bob")
    page.fill("#id_password", "bob-Pass-123!")
    page.click("button:has-text('Log in')")
    expect(page.locator(".usermenu")).to_contain_text("bob")
    expect(page.locator(".usermenu .role")).to_have_text("maintainer")

    # register a model
    page.goto("/")
    page.fill("#id_name", "tiny-chat")
    page.select_option("#id_task", "text-generation")
    page.fill("#id_description", "A tiny llama for the browser test")
    page.click("#register-form button[type=submit]")
    expect(page).to_have_url(re.compile(r"/models/tiny-chat/$"))
    expect(page.locator(".messages")).to_contain_text("Registered model 'tiny-chat'")

    # upload v1: the upload bar fills, the import job's bar follows, then the page shows it ready
    throttle_uploads(page, first.stat().st_size // 3)
    upload(page, first, watch_progress=True)
    throttle_uploads(page, -1)
    expect(page.locator("#version-1 [data-version-status]")).to_have_text("ready", timeout=IMPORT_TIMEOUT_MS)
    expect(page.locator("#version-1")).to_contain_text("safetensors")
    page.screenshot(path="/tmp/tauon-model-v1-ready.png", full_page=True)

    # upload v2 the same way
    upload(page, second)
    expect(page.locator("#version-2 [data-version-status]")).to_have_text("ready", timeout=IMPORT_TIMEOUT_MS)

    # promote v1, then v2, to production
    for number, comment in ((1, "first release"), (2, "second release")):
        page.select_option("#id_version", str(number))
        page.fill("#id_alias", "production")
        page.fill("#id_comment", comment)
        page.click("#promote-form button[type=submit]")
        expect(page.locator("tr[data-alias=production] .alias-version")).to_have_text(f"v{number}")

    # roll back: production is on v1 again and the history lists the three moves
    page.once("dialog", lambda dialog: dialog.accept())  # rolling back production is confirmed
    page.click("[data-rollback=production]")
    expect(page.locator(".messages")).to_contain_text("Rolled 'production' back to v1.")
    expect(page.locator("tr[data-alias=production] .alias-version")).to_have_text("v1")
    rows = page.locator("#history-table tbody tr")
    expect(rows).to_have_count(3)
    expect(rows.nth(0)).to_contain_text("Rollback")
    expect(rows.nth(0)).to_contain_text("v2")
    expect(rows.nth(1)).to_contain_text("second release")
    expect(rows.nth(2)).to_contain_text("first release")
    page.screenshot(path="/tmp/tauon-model-rolled-back.png", full_page=True)

    # the two import jobs are listed as succeeded, and v1's page lists its files with their sha256
    page.click("nav.mainnav >> text=Jobs")
    expect(page.locator("#job-table tbody tr")).to_have_count(2)
    expect(page.locator("#job-table [data-job-badge]")).to_have_text(["succeeded", "succeeded"])
    page.screenshot(path="/tmp/tauon-jobs.png", full_page=True)
    page.goto("/models/tiny-chat/versions/1/")
    expect(page.locator("#files")).to_contain_text("model.safetensors")
    expect(page.locator("#files code.hash").first).to_have_text(re.compile(r"^[0-9a-f]{64}$"))
    page.screenshot(path="/tmp/tauon-version.png", full_page=True)

    # the audit log holds the registration and the three alias moves
    page.goto("/audit/?model=tiny-chat")
    actions = page.locator("#audit-table tbody td:nth-child(3)")
    for action in ("model.create", "alias.set", "alias.rollback"):
        expect(actions.filter(has_text=action).first).to_be_visible()
    expect(actions.filter(has_text="alias.")).to_have_count(3)
    page.screenshot(path="/tmp/tauon-audit.png", full_page=True)


def test_a_new_api_key_is_shown_once_and_can_be_revoked_in_the_browser(page, charlie):
    from playwright.sync_api import expect

    from console.accounts.models import ApiKey

    log_in(page, "charlie")
    page.click("nav.mainnav >> text=API keys")
    page.fill("#id_name", "notebook")
    page.click("#key-form button[type=submit]")
    raw = page.locator("#raw-key").input_value()
    assert raw.startswith("tau_") and ApiKey.authenticate(raw) is not None
    expect(page.locator("#new-key")).to_contain_text("only time it is shown")
    page.screenshot(path="/tmp/tauon-keys.png", full_page=True)
    page.goto("/keys/")
    expect(page.locator("#new-key")).to_have_count(0)
    assert raw not in page.content()
    page.once("dialog", lambda dialog: dialog.accept())  # revoking is confirmed
    page.click("tr:has-text('notebook') button:has-text('Revoke')")
    expect(page.locator("tr:has-text('notebook') .badge")).to_have_text("revoked")
    assert ApiKey.authenticate(raw) is None


def test_an_upload_the_api_refuses_shows_its_error_message_on_the_page(page, bob, tmp_path):
    from django.contrib.auth import get_user_model
    from playwright.sync_api import expect

    from console.registry.models import Model

    Model.objects.create(name="tiny-chat", task="text-generation", owner=get_user_model().objects.get(username="bob"))
    pickle = tmp_path / "weights.pt"
    pickle.write_bytes(b"\x80\x04not a model")
    log_in(page, "bob")
    page.goto("/models/tiny-chat/")
    page.set_input_files("#upload-form input[type=file]", str(pickle))
    page.click("#upload-form button[type=submit]")
    error = page.locator("#upload-form .form-error")
    expect(error).to_contain_text("'weights.pt' is a pickle checkpoint; Tauon accepts only safetensors and GGUF")
    expect(page.locator("#upload-form .upload-progress .label")).to_have_text("Upload refused")
    page.screenshot(path="/tmp/tauon-upload-refused.png", full_page=True)
    assert not Model.objects.get(name="tiny-chat").versions.exists()


def test_the_job_pages_follow_a_running_job_live_and_a_maintainer_cancels_one(page, celery_worker, bob):
    from playwright.sync_api import expect

    import tests.job_kinds  # noqa: F401 - registers test-sleep (the worker loads it too)
    from console.jobs.models import Job

    slow = Job.enqueue("test-sleep", {"steps": 4, "sleep": 1.0}, bob)
    log_in(page, "bob")
    page.goto("/jobs/")
    bar = page.locator(f'#job-table .progress[data-job-id="{slow.pk}"]')
    expect(bar.locator(".label")).to_have_text(re.compile(r"^(25|50|75)% · step [123]/4( · about \d+ s left)?$"),
                                          timeout=30_000)
    page.screenshot(path="/tmp/tauon-jobs-running.png", full_page=True)
    expect(page.locator(f'[data-job-badge="{slow.pk}"]')).to_have_text("succeeded", timeout=30_000)
    expect(bar).to_have_attribute("aria-valuenow", "100")

    endless = Job.enqueue("test-sleep", {"steps": 200, "sleep": 0.2}, bob)
    page.goto(f"/jobs/{endless.pk}/")
    expect(page.locator("#job-log")).to_contain_text("did step 2", timeout=30_000)  # log lines arrive live
    page.once("dialog", lambda dialog: dialog.accept())  # cancelling is confirmed
    page.click("#cancel-form button")
    expect(page.locator(".messages")).to_contain_text(f"Cancel requested for test-sleep job #{endless.pk}")
    expect(page.locator(f'h1 [data-job-badge="{endless.pk}"]')).to_have_text("cancelled", timeout=30_000)
    assert Job.objects.get(pk=endless.pk).status == "cancelled"


def test_importing_from_the_hub_while_offline_shows_the_reason_without_hanging(page, bob):
    from playwright.sync_api import expect

    from console.registry.models import Model

    Model.objects.create(name="hubbed", task="text-generation")
    log_in(page, "bob")
    page.goto("/models/hubbed/")
    page.fill("#hub-form input[name=hub_id]", "HuggingFaceTB/SmolLM2-135M-Instruct")
    page.click("#hub-form button[type=submit]")
    expect(page.locator("#hub-form .form-error")).to_contain_text("Cannot reach the Hugging Face hub", timeout=60_000)
    expect(page.locator("#hub-form button[type=submit]")).to_have_text("Import")
    assert not Model.objects.get(name="hubbed").versions.exists()
