"""In headless Chromium, against a live server and the session's real Celery worker: a maintainer starts a
LoRA fine-tuning of a tiny Llama from its version page and, on the job's page, watches the plotly loss
chart grow while the job runs and the job reach done (the final chart: every step plus eval loss)."""

from __future__ import annotations

import re

import pytest

from console.jobs.models import Job
from tests.api_rows import make_model
from tests.conftest import log_in
from tests.serving_rows import stored_version
from tests.test_finetune_jobs import QA, dataset

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

STEPS = 200


def test_a_maintainer_fine_tunes_from_the_version_page_and_watches_the_loss_chart(page, celery_worker, bob,
                                                                                  llama_dir):
    from playwright.sync_api import expect

    stored_version(make_model("tiny", owner=bob), llama_dir)
    dataset("sums", "qa", QA, bob)
    log_in(page, "bob")
    page.goto("/models/tiny/versions/1/")

    form = page.locator("#finetune-form")
    form.locator("select[name=finetune-dataset]").select_option("sums")
    form.locator("select[name=finetune-method]").select_option("lora")
    form.locator("input[name=finetune-max_steps]").fill(str(STEPS))
    form.locator("input[name=finetune-batch_size]").fill("4")
    form.locator("input[name=finetune-learning_rate]").fill("0.001")
    form.locator("input[name=finetune-eval_fraction]").fill("0.25")
    page.screenshot(path="/tmp/tauon-finetune-form.png", full_page=True)
    form.locator("button[type=submit]").click()

    expect(page).to_have_url(re.compile(r"/jobs/\d+/$"))
    job_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    expect(page.locator("h1")).to_contain_text(f"finetune job #{job_id}")
    # while it runs, the chart grows from the progress polling (no reload)
    page.wait_for_function("""() => {
        const chart = document.getElementById("job-chart");
        const badge = document.querySelector("[data-job-badge]");
        return chart && Number(chart.dataset.points) > 0 && badge.textContent.trim() === "running"
               && chart.querySelector(".main-svg") !== null;
    }""", timeout=120_000)
    live_points = int(page.locator("#job-chart").get_attribute("data-points"))
    assert 1 <= live_points < STEPS + 2

    # done: the page reloads and draws the whole curve, train loss per step and eval loss before/after
    expect(page.locator("[data-job-badge]")).to_have_text("succeeded", timeout=180_000)
    expect(page.locator("#job-finished")).not_to_have_text("—", timeout=30_000)  # the reloaded page, from the server
    page.wait_for_load_state("load")
    expect(page.locator("#job-chart")).to_have_attribute("data-points", str(STEPS + 2), timeout=30_000)
    expect(page.locator("#job-chart .main-svg").first).to_be_visible()
    expect(page.locator("#job-chart")).to_contain_text("train loss")
    expect(page.locator("#job-chart")).to_contain_text("eval loss")
    expect(page.locator("#cancel-form")).to_have_count(0)  # nothing left to cancel
    job = Job.objects.get(pk=job_id)
    assert job.status == "succeeded" and len(job.series["train_loss"]) == STEPS
    page.screenshot(path="/tmp/tauon-finetune-chart.png", full_page=True, timeout=60_000)
