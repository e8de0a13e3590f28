from __future__ import annotations

from typing import Any

from rest_framework import serializers

from console.evaluation.choices import GATE_METRICS, DatasetKind
from console.evaluation.config import normalize
from console.evaluation.models import Dataset, DatasetVersion, EvaluationResult, PromotionGate
from console.registry.models import Model


class DatasetVersionSerializer(serializers.ModelSerializer):
    dataset = serializers.SlugRelatedField(slug_field="name", read_only=True)
    kind = serializers.CharField(source="dataset.kind", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = DatasetVersion
        fields = ["dataset", "kind", "number", "format", "file_name", "sha256", "size", "examples", "stats",
                  "created_by", "created_at"]
        read_only_fields = fields


class DatasetSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    versions = DatasetVersionSerializer(many=True, read_only=True, help_text="Newest first.")

    class Meta:
        model = Dataset
        fields = ["name", "kind", "description", "builtin", "created_by", "created_at", "versions"]
        read_only_fields = fields


class DatasetUploadSerializer(serializers.Serializer):
    """multipart/form-data: a new version of dataset `name` (registered on its first version)."""

    name = serializers.SlugField(max_length=100, help_text="The dataset's name; an existing name adds a version.")
    kind = serializers.ChoiceField(choices=DatasetKind.choices, error_messages={
        "invalid_choice": f"'{{input}}' is not a dataset kind; choose one of: {', '.join(DatasetKind.values)}."})
    file = serializers.FileField(help_text="text: .txt; classification: .jsonl or .csv (text,label); "
                                           "qa: .jsonl (prompt, answer); ner: .jsonl (tokens, tags).")
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class EvaluationResultSerializer(serializers.ModelSerializer):
    model = serializers.CharField(source="version.model.name", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    dataset = serializers.CharField(source="dataset_version.dataset.name", read_only=True)
    dataset_version = serializers.IntegerField(source="dataset_version.number", read_only=True)
    job = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)

    class Meta:
        model = EvaluationResult
        fields = ["id", "model", "version", "dataset", "dataset_version", "config_key", "config", "metrics",
                  "runtime", "job", "updated_at"]
        read_only_fields = fields


class PromotionGateSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", queryset=Model.objects.all())
    dataset = serializers.SlugRelatedField(slug_field="name", queryset=Dataset.objects.all())
    metric = serializers.ChoiceField(choices=GATE_METRICS)
    max_regression_pct = serializers.FloatField(min_value=0, max_value=1000, default=2.0,
                                                help_text="How much worse than the alias's version, in percent.")
    config = serializers.JSONField(required=False, default=dict,
                                   help_text="The evaluation config whose results are compared (defaults filled).")
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    rule = serializers.CharField(source="__str__", read_only=True)

    class Meta:
        model = PromotionGate
        fields = ["id", "model", "alias", "dataset", "metric", "max_regression_pct", "config", "config_key", "rule",
                  "created_by", "created_at"]
        read_only_fields = ["id", "config_key", "rule", "created_by", "created_at"]
        extra_kwargs = {"alias": {"required": True}}
        validators: list[Any] = []  # the same model, alias, dataset and metric changes the gate (PromotionGate.put)

    def validate_config(self, value: Any) -> dict[str, Any]:
        try:
            return normalize(value)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(next(iter(exc.detail.values()))) from exc  # type: ignore[union-attr]
