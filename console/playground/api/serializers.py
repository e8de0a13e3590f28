from __future__ import annotations

import json
from typing import Any

from rest_framework import serializers

from console.core.api import JSONObjectField
from console.playground.models import Session

MAX_DATA_BYTES = 4 * 1024 * 1024


class SessionSerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    data = JSONObjectField(required=False, help_text="What the page keeps: params, system prompt, turns "
                                                           "with their answers, timings and explanations.")
    shared = serializers.SerializerMethodField()
    share_url = serializers.SerializerMethodField()

    class Meta:
        model = Session
        fields = ["id", "title", "mode", "deployment", "compare_with", "data", "owner", "shared", "share_url",
                  "created_at", "updated_at"]
        read_only_fields = ["id", "owner", "shared", "share_url", "created_at", "updated_at"]

    def get_shared(self, obj: Session) -> bool:
        return bool(obj.share_token)

    def get_share_url(self, obj: Session) -> str | None:
        if not obj.share_token:
            return None
        request = self.context.get("request")
        path = f"/playground/shared/{obj.share_token}/"
        return request.build_absolute_uri(path) if request else path

    def validate_data(self, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise serializers.ValidationError("must be a JSON object.")
        if len(json.dumps(value)) > MAX_DATA_BYTES:
            raise serializers.ValidationError(f"is larger than {MAX_DATA_BYTES // 1024 // 1024} MiB; start a new "
                                              "session.")
        return value


class SessionListSerializer(SessionSerializer):
    class Meta(SessionSerializer.Meta):
        fields = ["id", "title", "mode", "deployment", "compare_with", "owner", "shared", "created_at", "updated_at"]
