"""User management lives in Django's admin at /admin/: admins create users, set roles, deactivate
them, and see (and revoke) API keys. The raw key is never shown here; hashes are not listed."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from console.accounts.models import ApiKey, User
from console.audit.models import record


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    list_display = ("username", "email", "role", "is_active", "last_login", "date_joined")
    list_filter = ("role", "is_active")
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Role", {"fields": ("role", "is_active"),
                  "description": "admin ⊃ maintainer ⊃ user. Admins manage users here; maintainers upload, promote "
                                 "and deploy; users read the registry and use the playground and the inference API."}),
        ("Inference limits", {"fields": ("requests_per_minute", "tokens_per_minute"),
                              "description": "Per minute, shared by all the user's API keys (but those given "
                                             "limits of their own) and their browser session. Empty: the site "
                                             "default (TAUON_USER_REQUESTS_PER_MINUTE / _TOKENS_); 0: none."}),
        ("Personal info", {"fields": ("first_name", "last_name", "email")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("username", "role", "password1", "password2")}),)
    readonly_fields = ("last_login", "date_joined")

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        before = User.objects.filter(pk=obj.pk).values("role", "is_active").first() if change else None
        super().save_model(request, obj, form, change)
        after = {"role": obj.role, "is_active": obj.is_active}
        if before != after:
            record(request.user, "user.update" if change else "user.create", obj, username=obj.username,
                   before=before, after=after)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "own_limits", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at", "own_limits")
    search_fields = ("name", "prefix", "user__username")
    fields = ("name", "user", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at",
              "own_limits", "requests_per_minute", "tokens_per_minute")
    readonly_fields = fields[:7]
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # keys are created by their owners (API keys page, /api/keys/, create_api_key)

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        """Admins give a key a budget of its own (its limits, empty = the site default) or take it back."""
        obj.set_limits(request.user, own_limits=obj.own_limits, requests_per_minute=obj.requests_per_minute,
                       tokens_per_minute=obj.tokens_per_minute)

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = sum(key.revoke(actor=request.user) for key in queryset)
        messages.success(request, f"Revoked {revoked} key(s).")
