"""The playground in headless Chromium against the real stack (uvicorn, the session's serving worker, SmolLM2):
a user chats with a streamed answer, explains it, and finds the heatmap; the saved session reopens with it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.db import connections

from console.jobs.models import Job
from tests.conftest import CHROMIUM, CHROMIUM_ARGS, log_in
from tests.serving_rows import deploy

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SCREENSHOT = "/tmp/tauon-playground-explain.png"


@pytest.fixture
def stack_page(web_server, monkeypatch) -> Iterator:  # type: ignore[no-untyped-def]
    """A browser page on the uvicorn server, where /v1 streams from the serving worker."""
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(base_url=web_server.url, viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
        context.close()
        browser.close()
        connections.close_all()


def server_side_password(user) -> None:  # type: ignore[no-untyped-def]
    """The test process hashes with MD5 for speed; the server knows only its production hashers."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    user.password = PBKDF2PasswordHasher().encode(f"{user.username}-Pass-123!", "playgroundsalt", iterations=1000)
    user.save(update_fields=["password"])


def test_a_user_chats_with_smollm2_explains_the_answer_and_finds_the_heatmap(stack_page, serving, smollm2_dir,
                                                                              charlie, bob):
    from playwright.sync_api import expect

    page = stack_page
    deploy("pg-smollm2", smollm2_dir, owner=bob, config={"engine": {"kv_cache_bytes": 64 * 1024**2}})
    server_side_password(charlie)
    log_in(page, "charlie")
    page.click("nav.mainnav >> text=Playground")
    expect(page).to_have_url(re.compile(r"/playground/$"))
    page.select_option("#pg-deployment", "pg-smollm2")
    expect(page.locator("#pg-deployment-status")).to_contain_text("ready")
    page.fill("#pg-temperature", "0")
    page.fill("#pg-max-tokens", "8")
    page.fill("#pg-input", "Repeat this word exactly: giraffe")
    page.click("#pg-send")

    # the answer streams in, then its token counts and timings show under it
    answer = page.locator(".pg-turn .pg-answer").first
    expect(answer).to_have_class(re.compile(r"\bstreaming\b"))
    expect(answer.locator(".answer-stats")).to_contain_text("completion tokens", timeout=60_000)
    expect(answer.locator(".answer-stats")).to_contain_text("tok/s")
    text = answer.locator(".answer-text").inner_text()
    assert "iraffe" in text, text
    expect(page).to_have_url(re.compile(r"/playground/\d+/$"))  # saved as a session

    # Explain (feature ablation over the user's message): a job with a progress bar, then the heatmap
    answer.locator("button.explain-button").click()
    expect(answer.locator(".pg-progress .progress[data-job-id]")).to_be_attached()
    heatmap = answer.locator(".heatmap[data-rows]")
    expect(heatmap).to_be_visible(timeout=120_000)
    job = Job.objects.filter(kind="explain").latest("id")
    assert job.status == "succeeded" and job.created_by == charlie
    rows, cols = len(job.result["output_tokens"]), len(job.result["input_tokens"])
    assert job.result["input_tokens"] == ["Repeat", " this", " word", " exactly", ":", " giraffe"]
    assert job.result["output_text"] == text
    shape = heatmap.evaluate("g => [g.data[0].z.length, g.data[0].z[0].length, g.layout.xaxis.ticktext.length]")
    assert shape == [rows, cols, cols]  # one row per output token, one column per input token
    assert int(heatmap.get_attribute("data-rows")) == rows and int(heatmap.get_attribute("data-cols")) == cols
    expect(answer.locator(".explain-summary")).to_contain_text(f"{rows} output × {cols} input tokens")
    expect(answer.locator(".totals .main-svg").first).to_be_attached()
    answer.scroll_into_view_if_needed()
    page.screenshot(path=SCREENSHOT, full_page=True)

    # the saved session reopens with its answer and explanation at once (no new job)
    jobs = Job.objects.filter(kind="explain").count()
    page.reload()
    expect(page.locator(".pg-turn .answer-text").first).to_have_text(text)
    expect(page.locator(".pg-turn .heatmap[data-rows]")).to_be_visible()
    assert Job.objects.filter(kind="explain").count() == jobs
    with page.expect_download() as download:
        page.locator(".pg-turn button:has-text('Download CSV')").click()
    assert download.value.suggested_filename == "attribution.csv"
