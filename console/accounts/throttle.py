"""Login throttling with django-axes: after TAUON_LOGIN_FAILURE_LIMIT wrong passwords for one
username from one address, that pair is locked out for TAUON_LOGIN_LOCKOUT_S (a success before
then resets the count). The login page says so (429), and each lockout lands in the audit log.
API keys never pass through `authenticate()`, so they are unaffected."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_cool_off
from django.contrib.auth.forms import AuthenticationForm
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import gettext as _

from console.accounts.models import User
from console.audit.models import AuditEvent, record


class LoginThrottleBackend(AxesStandaloneBackend):
    """axes' gate, for web requests only: management commands and tests that authenticate without a
    request are not throttled (axes would refuse them outright)."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None, password: str | None = None,
                     **kwargs: Any) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def client_ip(request: HttpRequest) -> str | None:
    """The peer address only (uvicorn puts a trusted proxy's X-Forwarded-For there): headers a client
    writes itself must not choose the address it is throttled under."""
    return request.META.get("REMOTE_ADDR")


def lockout_message(request: HttpRequest | None = None) -> str:
    cool_off = get_cool_off(request)
    minutes = max(1, math.ceil(cool_off.total_seconds() / 60)) if cool_off else None
    if minutes is None:
        return _("Too many failed logins for this username from your address; an admin must unlock it.")
    return _("Too many failed logins for this username from your address: try again in %(minutes)d minutes, "
             "or ask an admin to unlock it.") % {"minutes": minutes}


def locked_out(request: HttpRequest, original_response: HttpResponse | None = None,
               credentials: dict[str, Any] | None = None) -> HttpResponse:
    """The login page again, saying why (AXES_LOCKOUT_CALLABLE)."""
    form = AuthenticationForm(request, initial={"username": request.POST.get("username", "")})
    context = {"form": form, "locked_out": lockout_message(request), "next": request.POST.get("next", "")}
    return render(request, "registration/login.html", context, status=429)


def on_locked_out(sender: Any, request: HttpRequest, username: str | None, ip_address: str | None,
                  **kwargs: Any) -> None:
    """Audit the lockout once (axes signals it again for every attempt while it lasts)."""
    username = (username or "")[:150]
    cool_off = get_cool_off(request) or timedelta(days=3650)
    if AuditEvent.objects.filter(action="login.locked_out", data__username=username, data__ip_address=ip_address,
                                 created_at__gte=timezone.now() - cool_off).exists():
        return
    user = User.objects.filter(username=username).first() if username else None
    record(None, "login.locked_out", user, username=username, ip_address=ip_address)
