"""Playground sessions: what a user tried against which deployments, with the parameters, the answers
and their explanations, saved per user and shareable by an unguessable link."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models

from console.playground.choices import Mode


class Session(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="playground_sessions")
    title = models.CharField(max_length=200, blank=True)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.CHAT)
    deployment = models.CharField(max_length=64, blank=True)  # by name: a session outlives its deployment
    compare_with = models.CharField(max_length=64, blank=True)  # side by side: the second deployment
    data = models.JSONField(default=dict, blank=True)  # params, system prompt, turns with answers and explanations
    share_token = models.CharField(max_length=64, unique=True, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.title or f"session #{self.pk}"

    def share(self) -> str:
        """Give the session a link other users can open (read-only); the same link on repeat."""
        if not self.share_token:
            self.share_token = secrets.token_urlsafe(24)
            self.save(update_fields=["share_token", "updated_at"])
        return self.share_token

    def unshare(self) -> None:
        self.share_token = None
        self.save(update_fields=["share_token", "updated_at"])
