"""The deployment pages: who sees what (Django's test client), and the whole flow in headless Chromium,
where every change goes through the REST API from the page's script. No worker runs here, so a new
deployment stays pending; replicas and figures are written directly, as a worker would write them."""

from __future__ import annotations

import gzip
import json
import re
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from console.deployments import live
from console.deployments.models import Deployment, Replica
from console.registry.models import Alias, Model
from tests.api_rows import make_model, make_version
from tests.conftest import log_in

pytestmark = pytest.mark.django_db


def login(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def served_model(owner: Any, name: str = "chatbot", task: str = "text-generation") -> Model:
    """A model with two ready versions (v2 on 'production'), one failed version and a 'staging' alias on v1."""
    model = make_model(name=name, task=task, owner=owner)
    first, second = make_version(model), make_version(model)
    make_version(model, status="failed")
    Alias.move(model, "staging", first, actor=owner)
    Alias.move(model, "production", second, actor=owner)
    return model


@pytest.fixture
def chatbot(bob: Any) -> Model:
    return served_model(bob)


@pytest.fixture
def assistant(bob: Any, chatbot: Model) -> Deployment:
    return Deployment.create(bob, name="assistant", model=chatbot, alias="production", replicas=2)


def replica(deployment: Deployment, slot: int, *, status: str = "ready", beat_ago_s: float = 0,
            stats: dict[str, Any] | None = None) -> Replica:
    return Replica.objects.create(deployment=deployment, key=uuid.uuid4().hex, worker=f"serve-{slot}@host",
                                  pid=4000 + slot, slot=slot, version=deployment.target_version(), status=status,
                                  stats=stats or {}, heartbeat_at=timezone.now() - timedelta(seconds=beat_ago_s))


# --- who sees what ---------------------------------------------------------------------------------

def test_anonymous_visitors_are_sent_to_log_in_from_the_deployment_pages(assistant):
    for url in (reverse("deployments:list"), reverse("deployments:detail", args=["assistant"]),
                reverse("deployments:plotly-js")):
        response = Client().get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url


def test_a_user_sees_the_list_with_status_and_reason_but_no_new_deployment_form(assistant, charlie):
    html = login(charlie).get(reverse("deployments:list")).content.decode()
    row = re.search(r'<tr data-deployment="assistant">.*?</tr>', html, re.S).group(0)
    assert 'href="/deployments/assistant/"' in row and 'href="/models/chatbot/"' in row
    assert '<span class="tag alias">production</span>' in row
    assert "v2" in row and "Text generation" in row
    assert 'data-deployment-status="assistant">pending</span>' in row
    assert "Waiting for a worker" in row and "--deployments assistant" in row
    assert "0/2" in row
    assert 'id="deployment-form"' not in html and "New deployment" not in html
    assert 'href="/deployments/" class="active">Deployments</a>' in html


def test_a_user_sees_the_detail_page_without_the_change_form_or_the_actions(assistant, charlie):
    html = login(charlie).get(reverse("deployments:detail", args=["assistant"])).content.decode()
    assert 'data-deployment-status="assistant">pending</span>' in html
    assert "Waiting for a worker" in html
    assert "&quot;max_num_seqs&quot;: 32" in html  # the normalized config
    for marker in ('id="deployment-form"', 'id="deployment-actions"', 'id="stop-button"', 'id="delete-button"'):
        assert marker not in html


def test_a_maintainer_gets_the_new_deployment_form_with_each_models_aliases_and_ready_versions(chatbot, bob):
    make_model(name="empty-model", owner=bob)
    html = login(bob).get(reverse("deployments:list")).content.decode()
    assert 'id="deployment-form"' in html and 'data-api-url="/api/deployments/"' in html
    assert '<option value="chatbot">chatbot (text generation)</option>' in html
    targets = json.loads(re.search(r'<script id="deployment-targets" type="application/json">(.*?)</script>',
                                   html, re.S).group(1))
    assert [o["value"] for o in targets["chatbot"]["options"]] == [
        "alias:production", "alias:staging", "version:2", "version:1"]  # v3 failed: not offered
    assert targets["chatbot"]["options"][0]["label"] == "follow 'production' (now v2)"
    assert targets["empty-model"]["options"] == []
    for name in ("name", "replicas", "quantization", "max_num_seqs", "max_queue", "max_tokens", "timeout_s"):
        assert f'name="{name}"' in html, name
    assert '<option value="w8a8">' in html
    assert 'name="max_tokens" min="1" max="32768" step="1" value="512"' in html


def test_a_maintainer_gets_the_change_form_and_the_stop_and_delete_buttons(assistant, bob):
    html = login(bob).get(reverse("deployments:detail", args=["assistant"])).content.decode()
    assert 'id="deployment-form"' in html and 'data-method="PATCH"' in html
    assert '<option value="alias:production" selected>' in html
    assert 'name="replicas" min="1" max="64" step="1" value="2"' in html
    assert re.search(r'id="stop-button" data-action="stop" disabled>', html)
    assert re.search(r'id="start-button" class="primary" data-action="start" disabled hidden>', html)
    assert 'id="delete-button"' in html


def test_a_stopped_deployment_offers_start_instead_of_stop(assistant, bob):
    assistant.change(bob, stopped=True)
    html = login(bob).get(reverse("deployments:detail", args=["assistant"])).content.decode()
    assert re.search(r'id="stop-button" data-action="stop" disabled hidden>', html)
    assert re.search(r'id="start-button" class="primary" data-action="start" disabled>', html)
    assert 'data-deployment-status="assistant">stopped</span>' in html


def test_a_pinned_deployment_shows_its_version_and_keeps_a_removed_alias_selectable(chatbot, bob):
    Deployment.create(bob, name="pinned", model=chatbot, version=chatbot.versions.get(number=1))
    follower = Deployment.create(bob, name="follower", model=chatbot, alias="staging")
    list_page = login(bob).get(reverse("deployments:list")).content.decode()
    assert '<span class="tag">pinned v1</span>' in list_page
    chatbot.aliases.get(name="staging").remove(bob)
    html = login(bob).get(reverse("deployments:detail", args=[follower.name])).content.decode()
    assert '<option value="alias:staging" selected>follow &#x27;staging&#x27; (points nowhere)</option>' in html
    assert 'data-deployment-status="follower">failed</span>' in html


# --- the detail page's content -----------------------------------------------------------------------

def test_the_replica_table_shows_each_replicas_figures_and_a_silent_one_as_lost(assistant, charlie):
    replica(assistant, 0, stats={"running": 3, "waiting": 0, "kv_cache_usage": 0.4321, "tokens_per_s": 57.5})
    replica(assistant, 1, beat_ago_s=120)
    html = login(charlie).get(reverse("deployments:detail", args=["assistant"])).content.decode()
    rows = re.findall(r"<tr data-replica=.*?</tr>", html, re.S)
    assert len(rows) == 2
    first = re.sub(r"\s+", " ", rows[0])
    assert "serve-0@host" in first and "4000" in first and "v2" in first
    assert 'status-ready" data-replica-state>ready' in first
    assert '<td class="num">3</td> <td class="num">0</td> <td class="num">43%</td> <td class="num">57.5</td>' in first
    second = re.sub(r"\s+", " ", rows[1])
    assert 'status-lost" data-replica-state>lost' in second and re.search(r">12\d s ago<", second)  # 120 s, +render time
    assert second.count("—") == 4  # no figures from the engine yet
    assert "1/2" in html and "1 of 2 replicas ready; 1 lost." in html


def test_the_page_shows_how_to_call_the_deployment_for_its_task(assistant, bob, charlie):
    html = login(charlie).get(reverse("deployments:detail", args=["assistant"])).content.decode()
    assert "curl http://testserver/v1/chat/completions" in html
    assert 'base_url="http://testserver/v1"' in html and 'model="assistant"' in html
    assert '"model": "assistant", "messages"' in html
    embedder = Deployment.create(bob, name="embedder", model=served_model(bob, "minilm", "embeddings"))
    html = login(charlie).get(reverse("deployments:detail", args=[embedder.name])).content.decode()
    assert "curl http://testserver/v1/embeddings" in html and "client.embeddings.create" in html
    sorter = Deployment.create(bob, name="sorter", model=served_model(bob, "classifier", "text-classification"))
    html = login(charlie).get(reverse("deployments:detail", args=[sorter.name])).content.decode()
    assert "curl http://testserver/api/deployments/sorter/predict" in html and "OpenAI(" not in html


def test_the_detail_page_loads_plotly_from_this_server(assistant, charlie):
    html = login(charlie).get(reverse("deployments:detail", args=["assistant"])).content.decode()
    script = re.search(r'<script src="(/deployments/plotly\.min\.js\?v=[0-9.]+)" id="plotly-js" async></script>', html)
    assert script and 'data-figures-url="/api/deployments/assistant/figures"' in html
    assert "cdn" not in html.lower()


def test_plotly_js_is_served_from_the_package_gzipped_and_cached_for_good(charlie):
    client = login(charlie)
    packed = client.get(reverse("deployments:plotly-js"), HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert packed.status_code == 200 and packed["Content-Encoding"] == "gzip"
    assert packed["Content-Type"].startswith("text/javascript")
    assert "max-age=31536000" in packed["Cache-Control"] and "Accept-Encoding" in packed["Vary"]
    source = gzip.decompress(packed.content)
    assert b"plotly" in source[:2000].lower() and len(source) > 1_000_000
    plain = client.get(reverse("deployments:plotly-js"))
    assert "Content-Encoding" not in plain and plain.content == source


def test_an_unknown_deployment_is_a_404_page(charlie):
    assert login(charlie).get(reverse("deployments:detail", args=["nothing-here"])).status_code == 404


# --- in the browser --------------------------------------------------------------------------------

def api_json(browser, url: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """What the page's own session gets from the API (the deployment as the browser sees it)."""
    return browser.evaluate("async (url) => (await fetch(url, {headers: {Accept: 'application/json'}})).json()", url)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_a_maintainer_creates_edits_stops_and_deletes_a_deployment_in_the_browser(page, bob):
    from playwright.sync_api import expect

    served_model(bob)
    log_in(page, "bob")
    page.click("nav.mainnav >> text=Deployments")
    expect(page.locator("#deployment-table")).to_contain_text("No deployments yet")
    form = page.locator("#deployment-form")
    expect(form.locator("select[name=target]")).to_have_value("alias:production")

    # every field's problem at once, next to the field, in the form's words (nothing is sent)
    form.locator("input[name=name]").fill("assistant")
    form.locator("input[name=max_num_seqs]").fill("0")
    form.locator("button[type=submit]").click()
    expect(form.locator(".form-error")).to_have_text("Check the marked fields.")
    expect(form.locator("input[name=max_num_seqs]")).to_have_class(re.compile(r"\binvalid\b"))
    expect(form.locator("label:has(input[name=max_num_seqs]) .field-error")).to_have_text("At least 1.")
    assert not Deployment.objects.exists()

    # created with its engine settings: the page moves to the deployment, pending until a worker serves it
    form.locator("input[name=max_num_seqs]").fill("8")
    form.locator("select[name=quantization]").select_option("int8")
    form.locator("input[name=max_tokens]").fill("256")
    form.locator("button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/deployments/assistant/\?created=1$"))
    expect(page.locator(".messages")).to_contain_text("Created deployment 'assistant'")
    expect(page.locator("h1 [data-deployment-status]")).to_have_text("pending")
    expect(page.locator("#status-reason")).to_contain_text("Waiting for a worker")
    expect(page.locator("#config-json")).to_contain_text('"quantization": "int8"')
    expect(page.locator("#usage-python")).to_contain_text(f'base_url="{page.url.split("/deployments/")[0]}/v1"')
    deployment = Deployment.objects.get(name="assistant")
    assert deployment.alias == "production" and deployment.created_by == bob
    assert deployment.config["engine"]["max_num_seqs"] == 8 and deployment.config["max_tokens"] == 256
    page.screenshot(path="/tmp/tauon-deployment-created.png", full_page=True)

    # listed with its status and reason
    page.click("nav.mainnav >> text=Deployments")
    row = page.locator("tr[data-deployment=assistant]")
    expect(row.locator("[data-deployment-status]")).to_have_text("pending")
    expect(row.locator("[data-status-reason]")).to_contain_text("celery -A workers worker --deployments assistant")
    expect(row.locator("[data-replica-count]")).to_have_text("0/1")
    page.screenshot(path="/tmp/tauon-deployments.png", full_page=True)

    # more replicas, pinned to v1: saved through PATCH, the page follows without a reload
    row.locator("a", has_text="assistant").click()
    edit = page.locator("#deployment-form")
    edit.locator("input[name=replicas]").fill("3")
    edit.locator("select[name=target]").select_option("version:1")
    edit.locator("button[type=submit]").click()
    expect(edit.locator(".form-saved")).to_have_text("Saved.")
    expect(page.locator("#overview [data-replica-count]")).to_have_text("0/3")
    expect(page.locator("#overview [data-follows]")).to_have_text("pinned v1")
    expect(page.locator("#overview [data-serving-version]")).to_have_text("v1")
    deployment.refresh_from_db()
    assert deployment.replicas == 3 and deployment.version.number == 1 and deployment.alias == ""
    assert deployment.config["engine"]["max_num_seqs"] == 8  # the settings left alone stay

    # stop (after confirming), then start again
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#stop-button")
    expect(page.locator("#stop-button")).to_be_visible()
    assert not Deployment.objects.get(name="assistant").stopped  # dismissed: nothing happened
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#stop-button")
    expect(page.locator("h1 [data-deployment-status]")).to_have_text("stopped")
    expect(page.locator("#status-reason")).to_have_text("Stopped; start it to serve again.")
    expect(page.locator("#start-button")).to_be_visible()
    expect(page.locator("#stop-button")).to_be_hidden()
    assert Deployment.objects.get(name="assistant").stopped
    page.click("#start-button")
    expect(page.locator("h1 [data-deployment-status]")).to_have_text("pending")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#stop-button")
    expect(page.locator("h1 [data-deployment-status]")).to_have_text("stopped")

    # delete after confirming: back on the list, which is empty again
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-button")
    expect(page).to_have_url(re.compile(r"/deployments/\?deleted=assistant$"))
    expect(page.locator(".messages")).to_contain_text("Deleted deployment 'assistant'.")
    expect(page.locator("#deployment-table")).to_contain_text("No deployments yet")
    assert not Deployment.objects.filter(name="assistant").exists()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_the_detail_page_follows_replicas_and_charts_their_figures_live(page, bob, charlie):
    from playwright.sync_api import expect

    name = f"live-{uuid.uuid4().hex[:8]}"  # the figures live in the session's Redis
    deployment = Deployment.create(bob, name=name, model=served_model(bob), alias="production", replicas=2)
    log_in(page, "charlie")
    page.goto(f"/deployments/{name}/")
    expect(page.locator("h1 [data-deployment-status]")).to_have_text("pending")
    expect(page.locator("#figures-empty")).to_be_visible()
    expect(page.locator("#charts")).to_be_hidden()

    # a worker picks it up: two replicas beat and push figures; the page shows them within a poll or two
    now = time.time()
    stats = {"running": 2, "waiting": 1, "kv_cache_usage": 0.25, "tokens_per_s": 40.0}
    first = replica(deployment, 0, stats=stats, beat_ago_s=-60)  # its beat stays fresh for the whole test
    second = replica(deployment, 1, stats={"running": 1, "waiting": 0, "kv_cache_usage": 0.1, "tokens_per_s": 12.5},
                     beat_ago_s=-60)
    samples = [{"t": now - 4 + i, "replica": r.key, "slot": r.slot, "running": 1 + i, "waiting": i % 2,
                "batch_size": 1 + i, "kv_cache_usage": 0.05 * i, "tokens_per_s": 10.0 * i, "generated_tokens": 5 * i}
               for i in range(4) for r in (first, second)]
    redis = live.client()
    try:
        for sample in samples:
            redis.lpush(live.figures_key(name), json.dumps(sample))
        expect(page.locator("h1 [data-deployment-status]")).to_have_text("ready", timeout=10_000)
        expect(page.locator("#status-reason")).to_have_text("2 of 2 replicas ready.")
        expect(page.locator("#replica-table tbody tr")).to_have_count(2)
        expect(page.locator(f"tr[data-replica='{first.key}']")).to_contain_text("40")
        expect(page.locator(f"tr[data-replica='{first.key}']")).to_contain_text("25%")
        expect(page.locator("#charts")).to_have_attribute("data-samples", "8", timeout=10_000)
        expect(page.locator("#figures-empty")).to_be_hidden()
        traces = page.evaluate("['chart-tokens', 'chart-queue', 'chart-kv'].map("
                               "(id) => document.getElementById(id).data.length)")
        assert traces == [2, 4, 2]  # one line per replica; running and waiting each
        expect(page.locator("#chart-tokens .scatterlayer .trace")).to_have_count(2)

        # later samples are fetched with ?since= and appended, not fetched again
        redis.lpush(live.figures_key(name), json.dumps({**samples[-1], "t": now + 1, "tokens_per_s": 99.0}))
        expect(page.locator("#charts")).to_have_attribute("data-samples", "9", timeout=10_000)
        page.wait_for_function("document.getElementById('chart-tokens').layout.yaxis.range[1] >= 99")
        page.screenshot(path="/tmp/tauon-deployment-live.png", full_page=True)

        # a replica whose worker went silent shows as lost
        Replica.objects.filter(pk=second.pk).update(heartbeat_at=timezone.now() - timedelta(minutes=5))
        expect(page.locator(f"tr[data-replica='{second.key}'] [data-replica-state]")).to_have_text("lost",
                                                                                                   timeout=10_000)
        expect(page.locator("#status-reason")).to_have_text("1 of 2 replicas ready; 1 lost.")
        assert api_json(page, f"/api/deployments/{name}/")["status"] == "ready"
    finally:
        redis.delete(live.figures_key(name))
