"""Role checks for the browser pages; they mirror the API's permission classes."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse

from console.accounts.choices import Role

View = Callable[..., HttpResponse]


def role_required(role: str) -> Callable[[View], View]:
    """Anonymous users go to the login page; signed-in users below `role` get a 403 page saying why."""

    def decorator(view: View) -> View:
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_role(role):  # type: ignore[union-attr]
                raise PermissionDenied(f"This needs the '{Role(role).value}' role or above; "
                                       f"you are signed in as '{request.user.effective_role}'.")  # type: ignore[union-attr]
            return view(request, *args, **kwargs)

        return login_required(wrapped)

    return decorator


def require_maintainer(request: HttpRequest, what: str) -> None:
    """Refuse a change to a user below maintainer, naming the action."""
    if not request.user.has_role(Role.MAINTAINER):  # type: ignore[union-attr]
        raise PermissionDenied(f"{what} needs the 'maintainer' role or above; "
                               f"you are signed in as '{request.user.effective_role}'.")  # type: ignore[union-attr]
