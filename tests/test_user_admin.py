"""Admins manage users (create, set roles, deactivate) and revoke keys in /admin/; nobody else can."""

from __future__ import annotations

import pytest

from console.accounts.models import ApiKey, User
from console.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def test_an_admin_creates_a_maintainer_in_the_admin(client, alice):
    client.force_login(alice)
    response = client.post("/admin/accounts/user/add/", {"username": "dora", "role": "maintainer",
                                                         "password1": "Dora-Pass-9876!", "password2": "Dora-Pass-9876!"})
    assert response.status_code == 302, response.content[:2000]
    dora = User.objects.get(username="dora")
    assert dora.role == "maintainer" and dora.check_password("Dora-Pass-9876!") and not dora.is_staff
    event = AuditEvent.objects.get(action="user.create")
    assert event.actor == alice and event.data["after"]["role"] == "maintainer"


def test_an_admin_demotes_and_deactivates_a_user(client, alice, bob):
    client.force_login(alice)
    form = client.get(f"/admin/accounts/user/{bob.pk}/change/")
    assert form.status_code == 200
    response = client.post(f"/admin/accounts/user/{bob.pk}/change/", {
        "username": "bob", "role": "user", "is_active": "", "first_name": "", "last_name": "", "email": "",
        "last_login_0": "", "last_login_1": "", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    assert response.status_code == 302, response.content[:3000]
    bob.refresh_from_db()
    assert bob.role == "user" and not bob.is_active
    assert AuditEvent.objects.get(action="user.update").data["before"] == {"role": "maintainer", "is_active": True}


@pytest.mark.parametrize("who", ["bob", "charlie"])
def test_maintainers_and_users_cannot_open_the_admin(client, request, who):
    client.force_login(request.getfixturevalue(who))
    response = client.get("/admin/accounts/user/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_an_admin_revokes_a_key_from_the_admin_without_seeing_its_hash(client, alice, charlie):
    key, _ = ApiKey.issue(charlie, "laptop")
    client.force_login(alice)
    listing = client.get("/admin/accounts/apikey/")
    assert listing.status_code == 200 and key.prefix in listing.content.decode()
    assert key.hashed_key not in listing.content.decode()
    client.post("/admin/accounts/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.status == "revoked"
    assert AuditEvent.objects.get(action="apikey.revoke").actor == alice


def test_an_admin_sets_a_users_budget_and_gives_one_key_its_own_in_the_admin(client, alice, charlie):
    from console.accounts.models import user_limits

    key, _ = ApiKey.issue(charlie, "batch")
    client.force_login(alice)
    response = client.post(f"/admin/accounts/apikey/{key.pk}/change/", {"own_limits": "on",
                                                                        "requests_per_minute": "",
                                                                        "tokens_per_minute": "5000"})
    assert response.status_code == 302, response.content[:3000]
    key.refresh_from_db()
    assert key.own_limits and (key.requests_per_minute, key.tokens_per_minute) == (None, 5000)
    assert AuditEvent.objects.get(action="apikey.limits").actor == alice
    response = client.post(f"/admin/accounts/user/{charlie.pk}/change/", {
        "username": "charlie", "role": "user", "is_active": "on", "requests_per_minute": "30",
        "tokens_per_minute": "", "first_name": "", "last_name": "", "email": "", "last_login_0": "",
        "last_login_1": "", "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"})
    assert response.status_code == 302, response.content[:3000]
    charlie.refresh_from_db()
    assert user_limits(charlie)[0] == 30
