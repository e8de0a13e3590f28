from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models, transaction
from django.utils import timezone

from console.accounts.choices import RANK, Role
from console.accounts.revocation import keys_changed
from console.audit.models import record

KEY_PREFIX = "tau"


class User(AbstractUser):
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.USER)
    # The user's inference budget per minute, shared by their keys and browser session (set by admins);
    # empty means the site default (TAUON_USER_REQUESTS_PER_MINUTE / _TOKENS_), 0 means none.
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    # The console's language chosen with the switcher (a code of settings.LANGUAGES); empty: Accept-Language.
    language = models.CharField(max_length=16, blank=True, default="", choices=settings.LANGUAGES)

    @property
    def effective_role(self) -> str:
        return Role.ADMIN if self.is_superuser else self.role

    def has_role(self, role: str) -> bool:
        """True when this user's role is `role` or above (admin ⊃ maintainer ⊃ user)."""
        return self.is_active and RANK[Role(self.effective_role)] >= RANK[Role(role)]

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.is_staff = self.is_superuser or self.role == Role.ADMIN  # admins may open /admin/
        super().save(*args, **kwargs)

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return self.has_role(Role.ADMIN) or super().has_perm(perm, obj)

    def has_module_perms(self, app_label: str) -> bool:
        return self.has_role(Role.ADMIN) or super().has_module_perms(app_label)

    @property
    def is_maintainer(self) -> bool:
        return self.has_role(Role.MAINTAINER)

    @property
    def is_admin(self) -> bool:
        return self.has_role(Role.ADMIN)


def user_limits(user: Any) -> tuple[int, int]:
    """(requests, tokens) per minute of a user's inference budget, which all their keys (but those with
    limits of their own) and their browser session share; 0 is unlimited."""
    rpm, tpm = getattr(user, "requests_per_minute", None), getattr(user, "tokens_per_minute", None)
    return (settings.TAUON_USER_REQUESTS_PER_MINUTE if rpm is None else rpm,
            settings.TAUON_USER_TOKENS_PER_MINUTE if tpm is None else tpm)


def hash_key(raw: str) -> str:
    # Keys are 256-bit random secrets, so one SHA-256 is the right hash (no stretching needed).
    return hashlib.sha256(raw.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def usable(self) -> ApiKeyQuerySet:
        now = timezone.now()
        return self.filter(revoked_at__isnull=True, user__is_active=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiKey(models.Model):
    """An API key. Only its SHA-256 is stored; the raw key is shown once, at creation."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Inference rate limits. Without own_limits the key shares its user's budget (and these are unused); with
    # own_limits (set by admins only) it has a budget of its own: these, or when empty the site default
    # (TAUON_USER_REQUESTS_PER_MINUTE / _TOKENS_); 0 means none.
    own_limits = models.BooleanField(default=False)
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @classmethod
    def issue(cls, user: User, name: str, expires_at: datetime | None = None, *, actor: Any = None,
              requests_per_minute: int | None = None, tokens_per_minute: int | None = None,
              own_limits: bool | None = None) -> tuple[ApiKey, str]:
        """Create a key; return it with the raw secret, which is never stored. Limits given make the key's
        budget its own (`own_limits`); callers check that only admins give them.

        With `actor` (every user-facing path passes one) the creation lands in the audit log."""
        prefix = secrets.token_hex(4)
        raw = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        with transaction.atomic():
            key = cls.objects.create(user=user, name=name, prefix=prefix, hashed_key=hash_key(raw), expires_at=expires_at,
                                     requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
                                     own_limits=bool(own_limits) or requests_per_minute is not None
                                     or tokens_per_minute is not None)
            if actor is not None:
                record(actor, "apikey.create", key, user=user.username, name=name, prefix=prefix,
                       expires_at=expires_at.isoformat() if expires_at else None)
        return key, raw

    @classmethod
    def authenticate(cls, raw: str) -> ApiKey | None:
        key = cls.objects.usable().select_related("user").filter(hashed_key=hash_key(raw)).first()
        if key is None:
            return None
        now = timezone.now()
        # Touch last_used_at at most once a minute to keep writes off the hot path.
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
            cls.objects.filter(pk=key.pk).update(last_used_at=now)
            key.last_used_at = now
        return key

    def limits(self) -> tuple[int, int]:
        """(requests, tokens) per minute of this key's own budget; 0 is unlimited."""
        rpm = self.requests_per_minute
        tpm = self.tokens_per_minute
        return (settings.TAUON_USER_REQUESTS_PER_MINUTE if rpm is None else rpm,
                settings.TAUON_USER_TOKENS_PER_MINUTE if tpm is None else tpm)

    def set_limits(self, actor: Any, *, own_limits: bool, requests_per_minute: int | None = None,
                   tokens_per_minute: int | None = None) -> None:
        """An admin gives the key its own budget (or takes it back: it shares its user's again); audited."""
        with transaction.atomic():
            self.own_limits = own_limits
            self.requests_per_minute = requests_per_minute if own_limits else None
            self.tokens_per_minute = tokens_per_minute if own_limits else None
            self.save(update_fields=["own_limits", "requests_per_minute", "tokens_per_minute"])
            record(actor, "apikey.limits", self, user=self.user.username, name=self.name, own_limits=own_limits,
                   requests_per_minute=self.requests_per_minute, tokens_per_minute=self.tokens_per_minute)

    @property
    def status(self) -> str:
        if self.revoked_at:
            return "revoked"
        if self.expires_at and self.expires_at <= timezone.now():
            return "expired"
        return "active"

    def revoke(self, actor: Any = None) -> bool:
        """Revoke once; True when this call revoked it (and, with `actor`, audited it)."""
        with transaction.atomic():
            done = ApiKey.objects.filter(pk=self.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
            if done:
                keys_changed()  # web processes drop their cached keys (an update() sends no signal)
            if done and actor is not None:
                record(actor, "apikey.revoke", self, user=self.user.username, name=self.name, prefix=self.prefix)
        self.refresh_from_db(fields=["revoked_at"])
        return bool(done)
