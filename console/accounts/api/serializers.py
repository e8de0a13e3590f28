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
                  "own_limits", "requests_per_minute", "tokens_per_minute"]
        read_only_fields = fields


class ApiKeyLimitsSerializer(serializers.Serializer):
    """Admins only: give a key a budget of its own, or (own_limits false) make it share its user's again."""

    own_limits = serializers.BooleanField(
        required=False, help_text="True: the key has its own requests/tokens per minute instead of sharing its "
                                  "user's budget (true when limits are given).")
    requests_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=0,
        help_text="Inference requests per minute of the key's own budget; 0 is unlimited, absent is the site default.")
    tokens_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=0,
        help_text="Prompt + completion tokens per minute of the key's own budget; 0 is unlimited, absent is the "
                  "site default.")

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        request = self.context.get("request")
        given = [f for f in ("own_limits", "requests_per_minute", "tokens_per_minute")
                 if attrs.get(f) is not None and attrs.get(f) is not False]
        if given and not (request and request.user.is_admin):
            raise serializers.ValidationError({given[0]: "Only admins give a key limits of its own; your keys share "
                                                         "your account's budget."})
        limited = attrs.get("requests_per_minute") is not None or attrs.get("tokens_per_minute") is not None
        if attrs.get("own_limits") is False and limited:
            raise serializers.ValidationError({"own_limits": "Limits are a key's own budget; leave them out when "
                                                             "own_limits is false."})
        attrs["own_limits"] = bool(attrs.get("own_limits")) or limited
        return attrs


class ApiKeyCreateSerializer(ApiKeyLimitsSerializer):
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
