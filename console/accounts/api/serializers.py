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
        fields = ["id", "name", "prefix", "user", "status", "created_at", "expires_at", "last_used_at", "revoked_at",
                  "requests_per_minute", "tokens_per_minute"]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, help_text="What the key is for, e.g. 'ci' or 'laptop'.")
    expires_at = serializers.DateTimeField(required=False, allow_null=True, help_text="When it stops working; "
                                           "never when absent.")
    requests_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=0,
        help_text="Inference requests per minute (admins only); 0 is unlimited, absent is the site default.")
    tokens_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=0,
        help_text="Prompt + completion tokens per minute (admins only); 0 is unlimited, absent is the site default.")

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        request = self.context.get("request")
        limited = [f for f in ("requests_per_minute", "tokens_per_minute") if attrs.get(f) is not None]
        if limited and not (request and request.user.is_admin):
            raise serializers.ValidationError({limited[0]: "Only admins set a key's rate limits."})
        return attrs

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
