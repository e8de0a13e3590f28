"""Who may call /v1: an API key, or the browser session with its CSRF token (the playground)."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:  # type: ignore[no-untyped-def]
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def test_the_browser_session_lists_models_without_a_key(charlie):
    response = logged_in(charlie).get("/v1/models")
    assert response.status_code == 200 and response.json() == {"object": "list", "data": []}


def test_a_session_post_without_the_csrf_token_is_refused(charlie):
    response = logged_in(charlie).post("/v1/chat/completions", {"model": "x", "messages": []},
                                       content_type="application/json")
    assert response.status_code == 403 and response.json()["error"]["code"] == "csrf_failed"


def test_a_session_post_with_the_csrf_token_gets_past_authentication(charlie):
    client = logged_in(charlie)
    client.get("/deployments/")  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    response = client.post("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]},
                           content_type="application/json", headers={"X-CSRFToken": token})
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_anonymous_callers_need_a_key():
    anonymous = Client().get("/v1/models")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "authentication_error"
