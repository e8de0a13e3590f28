"""In headless Chromium, against a live server and the session's real Celery worker: a maintainer runs an
evaluation of two versions from the model's evaluation page, watches its progress bar reach done, and then
sees the comparison table and the plotly charts."""

from __future__ import annotations

import json
import re

import pytest
from django.core.management import call_command

from tests.conftest import log_in
from tests.test_evaluation_jobs import FAST, two_versions

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_maintainer_runs_an_evaluation_from_the_page_and_sees_the_chart(page, celery_worker, bob, llama_dir):
    from playwright.sync_api import expect

    call_command("import_datasets")
    two_versions(llama_dir, bob)
    log_in(page, "bob")
    page.goto("/models/tiny/")
    page.click("#evaluation-link")
    expect(page.locator("#no-results")).to_be_visible()

    form = page.locator("#evaluate-form")
    form.locator("input[name=versions][value='1']").check()
    form.locator("input[name=versions][value='2']").check()
    form.locator("select[name=dataset]").select_option("plain-english")
    form.locator("textarea[name=config]").fill(json.dumps({k: v for k, v in FAST.items() if k != "engine"}))
    form.locator("button[type=submit]").click()

    bar = page.locator("#evaluate-progress")
    expect(bar).to_be_attached()
    expect(bar).to_have_attribute("data-job-status", "succeeded", timeout=120_000)
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(bar.locator(".label")).to_have_text(re.compile(r"^100%"))

    expect(page).to_have_url(re.compile(r"/models/tiny/evaluation/\?dataset=plain-english&dataset_version=1&config=\w+"))
    expect(page.locator("#comparison-table tbody tr")).to_have_count(2)
    for chart in ("#chart-quality", "#chart-speed", "#chart-tradeoff"):
        expect(page.locator(f"{chart} .main-svg").first).to_be_visible(timeout=30_000)
    expect(page.locator("#chart-quality")).to_contain_text("Perplexity")
    page.screenshot(path="/tmp/tauon-evaluation.png", full_page=True)
