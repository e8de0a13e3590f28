from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from console.core.api import JSONObjectField
from console.jobs import kinds
from console.jobs.models import Job


class JobSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    log = serializers.ListField(child=serializers.CharField(), read_only=True)
    result = serializers.JSONField(read_only=True, allow_null=True)
    eta_s = serializers.FloatField(read_only=True, allow_null=True,
                                   help_text="Seconds left at the pace so far (running jobs only).")
    series = serializers.DictField(
        child=serializers.ListField(child=serializers.ListField(child=serializers.FloatField(allow_null=True),
                                                                min_length=2, max_length=2)),
        read_only=True,
        help_text="Live figures while the job runs, by name: [x, y] points in x order, e.g. a fine-tuning's "
                  "train_loss per optimizer step and eval_loss before (step 0) and after training. A resumed "
                  "job continues its curves; long series are thinned to at most 1000 points.")

    class Meta:
        model = Job
        fields = ["id", "kind", "params", "status", "progress", "progress_message", "log", "result", "error",
                  "cancel_requested", "created_by", "created_at", "started_at", "finished_at", "worker",
                  "deliveries", "eta_s", "series"]
        read_only_fields = fields


def creatable_kinds() -> list[str]:
    return sorted(name for name, kind in kinds.KINDS.items() if kind.user_creatable)


class KindField(serializers.ChoiceField):
    """A creatable job kind; the schema lists them (kinds register at start-up, so the choices are read late)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=creatable_kinds(), **kwargs)

    def to_internal_value(self, data: Any) -> str:
        value = str(data)
        if value not in self.choices:
            listed = ", ".join(self.choices) if self.choices else "none yet"
            raise serializers.ValidationError(f"Unknown job kind '{value}'; known kinds: {listed}.",
                                              code="unknown_kind")
        return value


class JobCreateSerializer(serializers.Serializer):
    params = JSONObjectField(required=False, default=dict, help_text="The kind's parameters (a JSON object).")

    def get_fields(self) -> dict[str, serializers.Field]:
        return {"kind": KindField(), **super().get_fields()}

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        params = attrs["params"]
        if not isinstance(params, dict):
            raise serializers.ValidationError({"params": "params must be a JSON object."})
        validate = kinds.get(attrs["kind"]).validate
        if validate is not None:
            try:
                params = validate(params, self.context["request"].user)
            except DjangoValidationError as exc:
                detail = exc.message_dict if hasattr(exc, "error_dict") else exc.messages
                raise serializers.ValidationError({"params": detail}) from exc
            except serializers.ValidationError as exc:
                raise serializers.ValidationError({"params": exc.detail}) from exc
        return {**attrs, "params": params}
