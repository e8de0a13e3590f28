"""Login throttling (django-axes, issue 15): a username + address is locked after a few wrong passwords
for a while, the login page says so, the lockout is audited; other addresses, other users and API keys
are unaffected."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.test import Client

from console.accounts.models import ApiKey
from console.audit.models import AuditEvent

pytestmark = pytest.mark.django_db
RIGHT = "charlie-Pass-123!"


def log_in(client: Client, password: str, username: str = "charlie"):  # type: ignore[no-untyped-def]
    return client.post("/login/", {"username": username, "password": password})


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def test_five_wrong_passwords_lock_the_username_from_that_address_and_the_page_says_so(charlie, settings):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(4):
        assert log_in(client, "wrong").status_code == 200  # the form again, with its usual error
    locked = log_in(client, "wrong")
    assert locked.status_code == 429 and "Too many failed logins" in locked.content.decode()
    again = log_in(client, RIGHT)  # even the right password, for a while
    assert again.status_code == 429 and 'id="locked-out"' in again.content.decode()
    assert "try again in 15 minutes" in again.content.decode() and not logged_in(client)
    event = AuditEvent.objects.get(action="login.locked_out")
    assert event.data == {"username": "charlie", "ip_address": "203.0.113.7"} and event.target_id == str(charlie.pk)


def test_a_lock_holds_one_username_at_one_address_only(charlie, bob):
    attacker = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(5):
        log_in(attacker, "wrong")
    assert log_in(attacker, "bob-Pass-123!", username="bob").status_code == 302  # another user, same address
    elsewhere = Client(REMOTE_ADDR="198.51.100.2")
    assert log_in(elsewhere, RIGHT).status_code == 302 and logged_in(elsewhere)  # same user, another address


def test_a_spoofed_forwarded_for_header_does_not_escape_the_lock(charlie):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(5):
        log_in(client, "wrong")
    response = client.post("/login/", {"username": "charlie", "password": RIGHT}, HTTP_X_FORWARDED_FOR="192.0.2.99")
    assert response.status_code == 429


def test_api_keys_keep_working_while_the_login_is_locked(charlie):
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(5):
        log_in(client, "wrong")
    raw = ApiKey.issue(charlie, name="ci")[1]
    api = Client(REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/models/").status_code == 200
    assert api.get("/v1/models").status_code == 200


def test_the_lock_lifts_after_the_cool_off_and_a_success_resets_the_count(charlie, settings):
    settings.AXES_COOLOFF_TIME = timedelta(seconds=1)
    client = Client(REMOTE_ADDR="203.0.113.7")
    for _ in range(5):
        log_in(client, "wrong")
    assert log_in(client, RIGHT).status_code == 429
    time.sleep(1.2)
    assert log_in(client, RIGHT).status_code == 302 and logged_in(client)
    client.logout()
    for _ in range(4):
        log_in(client, "wrong")
    assert log_in(client, RIGHT).status_code == 302  # 4 failures, then a success: the count starts again
    client.logout()
    for _ in range(4):
        log_in(client, "wrong")
    assert log_in(client, RIGHT).status_code == 302
