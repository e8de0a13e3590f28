from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from rest_framework import serializers

from console.accounts.models import ApiKey

KEY_STATUSES = ("active", "expired", "revoked")


class ApiKeySerializer(serializers.ModelSerializer):
    """A key as listed: never its hash, and its raw value only once, at creation."""

    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    status = serializers.ChoiceField(choices=KEY_STATUSES, read_only=True)

    class Meta:
        model = ApiKey
        fields = ["id", "name", "prefix", "user", "status", "created_at", "expires_at", "last_used_at", "revoked_at"]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="What the key is for, e.g. 'ci' or 'laptop'.")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, help_text="When it stops working; "
                                           "never when absent.")

    def validate_expires_at(self, value: datetime | None) -> datetime | None:
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("expires_at must be in the future; leave it out for a key that "
                                              "never expires.")
        return value


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(read_only=True, help_text="The raw key. Shown once: store it now.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "key"]
        read_only_fields = fields
