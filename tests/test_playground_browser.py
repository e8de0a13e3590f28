"""The playground in headless Chromium against the real stack (uvicorn, the session's serving worker, SmolLM2):
a user chats with a streamed answer, explains it, and finds the heatmap; the saved session reopens with it."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from console.jobs.models import Job
from tests.conftest import browser_page, log_in
from tests.serving_rows import deploy

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
SCREENSHOT = "/tmp/tauon-playground-explain.png"


@pytest.fixture
def stack_page(web_server, monkeypatch) -> Iterator:  # type: ignore[no-untyped-def]
    """A browser page on the uvicorn server, where /v1 streams from the serving worker."""
    with browser_page(web_server.url, monkeypatch, viewport=(1400, 1000), timeout_ms=30_000) as page:
        yield page


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
    # the page's script runs after plotly.js (deferred, 3.5 MB): ~3.6 s after the click on a loaded box
    expect(page.locator("#pg-deployment-status")).to_contain_text("ready", timeout=20_000)
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


def test_side_by_side_completion_encoders_and_a_shared_link_in_the_browser(stack_page, serving, llama_dir, tmp_path,
                                                                            charlie, bob):
    from playwright.sync_api import expect

    from console.registry.bundled import by_name
    from tests.modelfactory import tiny_bert_dir, tiny_llama_dir

    page = stack_page
    deploy("pg-tiny", llama_dir, owner=bob)
    deploy("chat", tiny_llama_dir(tmp_path / "other", seed=5), owner=bob)
    deploy("pg-cls", tiny_bert_dir(tmp_path / "bert", num_labels=3), owner=bob, task="text-classification")
    deploy("embed", by_name("all-minilm-l6-v2").path(), owner=bob, task="embeddings")
    server_side_password(charlie)
    server_side_password(bob)
    log_in(page, "charlie")
    page.goto("/playground/")

    # the same conversation against two deployments, answers and timings next to each other
    page.select_option("#pg-deployment", "pg-tiny")
    page.select_option("#pg-compare", "chat")
    page.fill("#pg-system", "Be brief.")
    page.fill("#pg-max-tokens", "6")
    page.fill("#pg-input", "Hello there")
    page.click("#pg-send")
    answers = page.locator(".pg-turn").first.locator(".pg-answer")
    expect(answers).to_have_count(2)
    for name in ("pg-tiny", "chat"):
        stats = page.locator(f".pg-turn .pg-answer[data-deployment={name}] .answer-stats")
        expect(stats).to_contain_text("completion tokens", timeout=60_000)
    page.fill("#pg-input", "And again")
    page.click("#pg-send")
    expect(page.locator(".pg-turn")).to_have_count(2)
    expect(page.locator(".pg-turn").nth(1).locator(".answer-stats").nth(1)).to_contain_text("completion tokens")

    # a plain completion
    page.select_option("#pg-compare", "")
    page.select_option("#pg-mode", "completion")
    expect(page.locator("#pg-system")).to_be_hidden()
    page.fill("#pg-input", "Once upon a time")
    page.click("#pg-send")
    third = page.locator(".pg-turn").nth(2)
    expect(third.locator(".pg-who").first).to_have_text("Prompt")
    expect(third.locator(".answer-stats")).to_contain_text("completion tokens", timeout=60_000)
    expect(page).to_have_url(re.compile(r"/playground/\d+/$"))

    # shared by link: bob opens it read-only and sees the same turns
    page.click("#pg-share")
    expect(page.locator("#pg-share-row")).to_be_visible()
    link = page.locator("#pg-share-url").input_value()
    assert "/playground/shared/" in link
    bob_page = page.context.browser.new_context(base_url=page.url.split("/playground/")[0]).new_page()
    log_in(bob_page, "bob")
    bob_page.goto(link)
    expect(bob_page.locator("#pg-shared-note")).to_contain_text("Shared by charlie")
    expect(bob_page.locator(".pg-turn")).to_have_count(3)
    expect(bob_page.locator(".pg-composer")).to_be_hidden()
    expect(bob_page.locator(".explain-button")).to_have_count(0)
    bob_page.context.close()

    # a classifier: labels with scores, then Explain draws the attribution over the text
    page.goto("/playground/")
    page.select_option("#pg-deployment", "pg-cls")
    expect(page.locator("#pg-classify")).to_be_visible()
    page.fill("#pg-text", "What a lovely day it is")
    page.click("#pg-predict")
    expect(page.locator(".pg-labels li")).to_have_count(3)
    page.click("#pg-explain-text")
    tokens = page.locator("#pg-cls-explain .pg-token")
    expect(tokens).to_have_count(6, timeout=60_000)
    expect(page.locator("#pg-cls-explain")).to_contain_text("Why “LABEL_")

    # embeddings: the cosine similarities of three texts as a 3 × 3 heatmap
    page.goto("/playground/")
    page.select_option("#pg-deployment", "embed")
    page.fill("#pg-texts", "A cat sits on the mat.\nA kitten rests on a rug.\nStocks fell sharply today.")
    page.click("#pg-embed")
    heat = page.locator("#pg-similarity")
    expect(heat).to_have_attribute("data-size", "3")
    z = heat.evaluate("g => g.data[0].z")
    assert z[0][0] == pytest.approx(1.0, abs=1e-4) and z[0][1] > z[0][2]
    page.screenshot(path="/tmp/tauon-playground-embeddings.png", full_page=True)
