"""The playground page as the server renders it (Django's test client): who may open what."""

from __future__ import annotations

import json

import pytest
from django.test import Client

from console.playground.models import Session
from tests.api_rows import make_model

pytestmark = pytest.mark.django_db


def login(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client()
    client.force_login(user)
    return client


def page_json(html: str, element_id: str):  # type: ignore[no-untyped-def]
    start = html.index(f'id="{element_id}"')
    start = html.index(">", start) + 1
    return json.loads(html[start:html.index("</script>", start)])


def test_anonymous_visitors_are_sent_to_log_in() -> None:
    res = Client().get("/playground/")
    assert res.status_code == 302 and res["Location"].startswith("/login/")


def test_a_user_gets_the_page_with_every_deployment_and_their_own_history(charlie, bob):  # type: ignore[no-untyped-def]
    from console.deployments.models import Deployment

    model = make_model(name="chatty", owner=bob)
    Deployment.create(bob, name="chatty", model=model, alias="production", config={"sampling": {"temperature": 0.2}})
    Session.objects.create(owner=charlie, title="Mine", deployment="chatty")
    Session.objects.create(owner=bob, title="Bob's", deployment="chatty")
    html = login(charlie).get("/playground/").content.decode()
    assert 'href="/playground/" class="active">Playground</a>' in html
    deployments = page_json(html, "pg-deployments")
    assert [(d["name"], d["task"], d["explainable"]) for d in deployments] == [("chatty", "text-generation", True)]
    assert deployments[0]["sampling"]["temperature"] == 0.2 and deployments[0]["status"] == "failed"
    assert "Mine" in html and "Bob&#x27;s" not in html and "Bob's" not in html
    assert page_json(html, "pg-session") is None
    assert "console/playground.js" in html and "plotly.min.js" in html


def test_a_saved_session_opens_for_its_owner_only_and_by_link_read_only(charlie, bob):  # type: ignore[no-untyped-def]
    session = Session.objects.create(owner=charlie, title="Fruit", deployment="chatty",
                                     data={"turns": [{"mode": "chat", "user": "Name a fruit", "answers": []}]})
    opened = login(charlie).get(f"/playground/{session.pk}/")
    assert opened.status_code == 200 and page_json(opened.content.decode(), "pg-session")["data"]["turns"][0]["user"] == "Name a fruit"
    assert login(bob).get(f"/playground/{session.pk}/").status_code == 404
    token = session.share()
    shared = login(bob).get(f"/playground/shared/{token}/").content.decode()
    assert 'data-read-only="true"' in shared and "Shared by charlie (read-only)" in shared
    assert 'id="pg-unshare"' not in shared  # only the owner can stop sharing: no dead control for the others
    own = login(charlie).get(f"/playground/shared/{token}/").content.decode()
    assert 'data-read-only="false"' in own and 'id="pg-unshare"' in own
    session.unshare()
    assert login(bob).get(f"/playground/shared/{token}/").status_code == 404

