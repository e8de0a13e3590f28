from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from console.accounts.choices import Role


def _has(request: Request, role: str) -> bool:
    user = request.user
    return bool(user and user.is_authenticated and user.has_role(role))


class IsUser(BasePermission):
    message = "Authentication with role 'user' or above is required."

    def has_permission(self, request: Request, view: Any) -> bool:
        return _has(request, Role.USER)


class IsMaintainer(BasePermission):
    message = "This action needs the 'maintainer' role or above."

    def has_permission(self, request: Request, view: Any) -> bool:
        return _has(request, Role.MAINTAINER)


class IsAdmin(BasePermission):
    message = "This action needs the 'admin' role."

    def has_permission(self, request: Request, view: Any) -> bool:
        return _has(request, Role.ADMIN)


class ReadUserWriteMaintainer(BasePermission):
    """Anyone with a role may read; changes need maintainer or above."""

    message = "Changing this needs the 'maintainer' role or above."

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method in SAFE_METHODS:
            return _has(request, Role.USER)
        return _has(request, Role.MAINTAINER)
