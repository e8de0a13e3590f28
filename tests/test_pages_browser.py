"""The connected console in headless Chromium, on a desktop (1400 px) and a phone (390 px): a compress job's
page leads to its child, the version page to the deployment serving it, Deploy and the playground;
rolling back production and deleting a model ask first; an admin manages a user from the Users page."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from console.accounts.models import User
from console.deployments.models import Deployment
from console.jobs.models import Job
from console.registry.models import Alias, Model
from tests.api_rows import make_model, make_version
from tests.conftest import browser_page, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
WIDTHS = [1400, 390]


@pytest.fixture(params=WIDTHS, ids=lambda w: f"{w}px")
def screen(request, live_server, monkeypatch) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    with browser_page(live_server.url, monkeypatch, viewport=(request.param, 900)) as page:
        page.width = request.param
        yield page


def fits(page: Any) -> None:
    """Nothing of the page's own content reaches past the screen's right edge (tables scroll inside their card)."""
    overflow = page.evaluate("""() => [...document.querySelectorAll('main .card, main .heading')]
        .filter(el => el.getBoundingClientRect().right > window.innerWidth + 1)
        .map(el => el.id || el.className)""")
    assert overflow == [], f"wider than {page.width} px: {overflow}"


def chatbot(owner: User) -> Model:
    model = make_model("chatbot", owner=owner)
    parent = make_version(model, 1, parameter_count=135_000_000, total_size=538_000_000)
    child = make_version(model, 2, parent=parent, parameter_count=135_000_000, total_size=160_000_000)
    job = Job.objects.create(kind="compress", created_by=owner, status="succeeded",
                             params={"model": "chatbot", "version": 1, "method": "int8"},
                             result={"model": "chatbot", "parent": 1, "child": 2, "method": "int8",
                                     "comparison": {"size_bytes": {"parent": 538_000_000, "child": 160_000_000,
                                                                   "ratio": 0.2974}}})
    child.produced_by = job
    child.save(update_fields=["produced_by"])
    Alias.move(model, "production", parent, owner)
    Alias.move(model, "production", child, owner)
    Deployment.create(owner, name="assistant", model=model, alias="production")
    return model


def test_a_maintainer_follows_a_compress_job_to_its_child_its_deployment_and_the_playground(screen, bob) -> None:
    from playwright.sync_api import expect

    page = screen
    chatbot(bob)
    log_in(page, "bob")
    page.goto("/jobs/")
    row = page.locator("#job-table tbody tr").first
    expect(row.locator("[data-job-model]")).to_have_text("chatbot")
    expect(row.locator("[data-job-produced]")).to_have_text("chatbot v2")
    fits(page)
    row.locator("a", has_text="#").click()

    expect(page.locator("#comparison-table")).to_contain_text("0.297×")
    expect(page.locator("#job-result")).not_to_be_visible()  # raw JSON only behind Details
    page.locator("#job-details summary").click()
    expect(page.locator("#job-result")).to_be_visible()
    fits(page)
    page.screenshot(path=f"/tmp/tauon-compress-job-{page.width}.png", full_page=True)

    page.click("#child-link")
    expect(page).to_have_url(re.compile(r"/models/chatbot/versions/2/$"))
    deployments = page.locator("#deployments")
    expect(deployments.locator("[data-deployment=assistant]")).to_contain_text("production")
    expect(deployments.locator("[data-playground=assistant]")).to_have_attribute("href", "/playground/?deployment=assistant")
    expect(page.locator("#deploy-link")).to_have_attribute("href", "/deployments/?model=chatbot&version=2")
    fits(page)
    page.screenshot(path=f"/tmp/tauon-version-deployments-{page.width}.png", full_page=True)

    # rolling production back asks first: dismissed, nothing moves; accepted, it goes back to v1
    page.goto("/models/chatbot/")
    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.click("[data-rollback=production]")
    assert asked and "back from v2 to v1" in asked[0]
    expect(page.locator("tr[data-alias=production] .alias-version")).to_have_text("v2")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-rollback=production]")
    expect(page.locator(".messages")).to_contain_text("Rolled 'production' back to v1.")
    fits(page)


def test_an_admin_creates_and_deactivates_a_user_and_cannot_delete_a_served_model(screen, alice, bob) -> None:
    from playwright.sync_api import expect

    page = screen
    chatbot(bob)
    log_in(page, "alice")
    page.goto("/models/chatbot/")
    expect(page.locator("#delete-refusal")).to_contain_text("assistant")  # a deployment serves it: no button
    expect(page.locator("#delete-model-form")).to_have_count(0)

    page.goto("/")
    if page.locator(".navtoggle").is_visible():  # on a phone the nav folds behind Menu
        page.click(".navtoggle")
    page.click("#nav-users")
    page.fill("#id_username", "dora")
    page.select_option("#id_role", "maintainer")
    page.fill("#id_password1", "Dora-Pass-9876!")
    page.fill("#id_password2", "Dora-Pass-9876!")
    page.click("#user-form button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("Created user 'dora'")
    fits(page)
    page.uncheck("#id_is_active")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#access-form button[type=submit]")
    expect(page.locator(".messages")).to_contain_text("deactivated")
    dora = User.objects.get(username="dora")
    assert dora.role == "maintainer" and not dora.is_active
    page.goto("/users/")
    expect(page.locator("tr[data-user=dora]")).to_contain_text("deactivated")
    fits(page)
    page.screenshot(path=f"/tmp/tauon-users-{page.width}.png", full_page=True)
