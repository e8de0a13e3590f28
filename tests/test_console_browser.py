"""The console in headless Chromium at a phone's 390×844 and a desktop's 1400 px, in English and Chinese: no page
scrolls sideways, the nav collapses behind a Menu button, the deployment form checks every field at once beside
it (and its name pattern compiles), prefills from the registry's links and offers the runtime; the playground says
Explain's cap before anything is sent; times show in the reader's zone."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from console.deployments.models import Deployment
from tests import test_i18n_pages
from tests.conftest import browser_page
from tests.test_i18n_pages import page_urls

world = test_i18n_pages.world  # the fixture that gives every page content

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
PHONE, DESKTOP = (390, 844), (1400, 900)


def log_in(page: Any, username: str) -> None:
    page.goto("/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", f"{username}-Pass-123!")
    page.click("form.stack button[type=submit]")
    page.wait_for_url("**/")


def settle(page: Any) -> None:
    try:
        page.wait_for_load_state("networkidle", timeout=5_000)
    except Exception:  # noqa: BLE001 - the live pages poll; a busy network is fine, the layout is drawn
        pass


def test_no_page_is_wider_than_a_phone_or_a_desktop_in_either_language(live_server: Any, monkeypatch: Any,
                                                                     world: dict[str, Any], alice: Any) -> None:
    urls = {**page_urls(world), "404": "/models/no-such-model/"}
    too_wide: dict[str, int] = {}
    errors: list[str] = []
    for viewport, language in ((PHONE, "en"), (PHONE, "zh-hans"), (DESKTOP, "en"), (DESKTOP, "zh-hans")):
        alice.language = language
        alice.save(update_fields=["language"])
        with browser_page(live_server.url, monkeypatch, viewport=viewport) as page:
            page.on("console", lambda m: errors.append(f"{page.url}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
            log_in(page, "alice")
            for name, url in urls.items():
                page.goto(url)
                settle(page)
                width = page.evaluate("document.scrollingElement.scrollWidth")
                if width > viewport[0]:
                    too_wide[f"{name} {viewport[0]}px {language}"] = width
                if viewport == PHONE and language == "zh-hans" and name.split(":")[-1] in ("detail", "model", "page", "list"):
                    page.screenshot(path=f"/tmp/tauon-phone-zh-{name}.png", full_page=True)
    assert not too_wide, f"pages wider than the screen: {too_wide}"
    errors = [e for e in errors if "404 (Not Found)" not in e]  # the 404 page's own status
    assert not errors, errors


def test_on_a_phone_the_nav_opens_from_the_menu_button(live_server: Any, monkeypatch: Any, bob: Any) -> None:
    from playwright.sync_api import expect

    with browser_page(live_server.url, monkeypatch, viewport=PHONE) as page:
        log_in(page, "bob")
        link = page.locator("nav.mainnav a", has_text="Deployments")
        expect(link).to_be_hidden()
        page.click(".navtoggle")
        expect(page.locator(".navtoggle")).to_have_attribute("aria-expanded", "true")
        link.click()
        expect(page).to_have_url(re.compile(r"/deployments/$"))
        # the switcher: one click to Chinese, remembered on the user
        page.click("#language-switch button[value=zh-hans]")
        expect(page.locator("h1")).to_have_text("部署")
        bob.refresh_from_db()
        assert bob.language == "zh-hans"


def test_the_deployment_form_checks_every_field_at_once_and_prefills_from_a_registry_link(
        live_server: Any, monkeypatch: Any, world: dict[str, Any], bob: Any) -> None:
    from playwright.sync_api import expect

    version = world["model"].versions.get(number=1)
    version.path.mkdir(parents=True, exist_ok=True)
    (version.path / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}))
    with browser_page(live_server.url, monkeypatch, viewport=PHONE) as page:
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        log_in(page, "bob")
        page.goto("/deployments/?model=qwen-mini&version=1")  # "Deploy this version" on the registry's pages
        form = page.locator("#new-deployment #deployment-form")
        expect(form.locator("select[name=model]")).to_have_value("qwen-mini")
        expect(form.locator("select[name=target]")).to_have_value("version:1")
        expect(form.locator("input[name=name]")).to_have_value("qwen-mini")
        assert page.evaluate("(() => { new RegExp(document.querySelector('input[name=name]').pattern, 'v');"
                             " return true; })()")
        options = form.locator("select[name=runtime] option").evaluate_all("(os) => os.map((o) => o.value)")
        assert options == ["auto", "torch", "llamacpp"]
        expect(form.locator("input[name=max_model_len]")).to_have_attribute("max", "2048")
        expect(form.locator("[data-context-help]")).to_contain_text("2048")

        form.locator("input[name=name]").fill("bad name!")
        form.locator("input[name=replicas]").fill("0")
        form.locator("input[name=max_tokens]").fill("-5")
        form.locator("input[name=max_model_len]").fill("99999")
        form.locator("button[type=submit]").click()
        error_of = lambda field: form.locator(f"label:has([name={field}]) .field-error")  # noqa: E731
        expect(error_of("name")).to_have_text("Use letters, digits, - and _ only.")
        expect(error_of("replicas")).to_have_text("At least 1.")
        expect(error_of("max_tokens")).to_have_text("At least 1.")
        expect(error_of("max_model_len")).to_have_text("At most 2048.")
        expect(form.locator(".form-error")).to_have_text("Check the marked fields.")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE[0]
        page.screenshot(path="/tmp/tauon-phone-deployment-form-errors.png", full_page=True)
        assert not Deployment.objects.filter(name="bad name!").exists()

        form.locator("input[name=name]").fill("qwen-mini")
        expect(error_of("name")).to_be_hidden()  # a corrected field loses its message at once
        form.locator("input[name=replicas]").fill("1")
        form.locator("input[name=max_tokens]").fill("256")
        form.locator("input[name=max_model_len]").fill("1024")
        form.locator("select[name=runtime]").select_option("torch")
        form.locator("input[name=threads]").fill("2")
        form.locator("button[type=submit]").click()
        expect(page).to_have_url(re.compile(r"/deployments/qwen-mini/\?created=1$"))
        expect(page.locator(".messages")).to_contain_text("Created deployment 'qwen-mini'")
        created = Deployment.objects.get(name="qwen-mini")
        assert created.version.number == 1 and created.config["max_tokens"] == 256
        engine = created.config["engine"]
        assert (engine["runtime"], engine["threads"], engine["max_model_len"]) == ("torch", 2, 1024)
        assert not errors, errors


def test_the_playground_says_explains_cap_before_anything_is_sent(live_server: Any, monkeypatch: Any,
                                                                   world: dict[str, Any], alice: Any) -> None:
    from playwright.sync_api import expect

    alice.language = "zh-hans"
    alice.save(update_fields=["language"])
    with browser_page(live_server.url, monkeypatch, viewport=PHONE) as page:
        log_in(page, "alice")
        page.goto("/playground/")
        cap = page.locator("#pg-explain-cap")
        expect(page.locator("#pg-max-tokens")).to_have_value("128")
        expect(cap).to_be_visible()
        expect(cap).to_contain_text("64")
        expect(cap).to_contain_text("解释")
        page.fill("#pg-max-tokens", "64")
        expect(cap).to_be_hidden()
        assert "TAUON_" not in page.content()
        assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE[0]
        page.screenshot(path="/tmp/tauon-phone-playground-zh.png", full_page=True)


def test_times_show_in_the_readers_zone(live_server: Any, monkeypatch: Any, world: dict[str, Any], bob: Any) -> None:
    from playwright.sync_api import expect

    monkeypatch.setenv("TZ", "Asia/Shanghai")  # the browser's zone
    with browser_page(live_server.url, monkeypatch, viewport=DESKTOP) as page:
        log_in(page, "bob")
        page.goto("/datasets/zh-prose/")
        first = page.locator("#dataset-versions time").first
        expect(first).to_have_attribute("data-local", "1")
        expect(first).to_contain_text("GMT+8")
        assert first.get_attribute("title").endswith("UTC")  # the server's UTC stays on hover


def test_evaluation_charts_have_axis_titles_with_units_and_plain_hover_values(live_server: Any, monkeypatch: Any,
                                                                              world: dict[str, Any], bob: Any) -> None:
    with browser_page(live_server.url, monkeypatch, viewport=DESKTOP) as page:
        log_in(page, "bob")
        page.goto("/models/qwen-mini/evaluation/")
        page.wait_for_function("document.getElementById('eval-charts').dataset.drawn === '1'")
        charts = page.evaluate("""['chart-quality', 'chart-speed', 'chart-tradeoff'].map((id) => {
            const node = document.getElementById(id);
            return {y: node.layout.yaxis.title.text, x: (node.layout.xaxis.title || {}).text,
                    hover: node.data[0].hovertext, clip: node.data[0].cliponaxis};
        })""")
        quality, speed, tradeoff = charts
        assert quality["y"] == "Perplexity" and quality["x"] == "version"
        assert speed["y"] == "Tokens/s"
        assert tradeoff["x"] == "size (MB)" and tradeoff["clip"] is False
        assert "v2: 49,540.6" in quality["hover"] and not any(re.search(r"\dk\b", h) for h in quality["hover"])
        assert "14.2 tok/s" in speed["hover"][0]
        header = page.locator("#comparison-table thead").text_content()
        assert "Time to first token (s)" in header
        page.screenshot(path="/tmp/tauon-evaluation-charts.png", full_page=True)
