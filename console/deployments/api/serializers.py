from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from console.deployments import config as deployment_config
from console.deployments.models import TRIAL_PREFIX, Deployment, Replica
from console.registry.choices import VersionStatus
from console.registry.models import Model


class ReplicaSerializer(serializers.ModelSerializer):
    version = serializers.IntegerField(source="version.number", read_only=True, allow_null=True)
    state = serializers.CharField(read_only=True, help_text="loading, ready, draining, stopped, failed or lost")

    class Meta:
        model = Replica
        fields = ["key", "worker", "pid", "slot", "version", "state", "status_reason", "stats", "started_at",
                  "heartbeat_at"]
        read_only_fields = fields


@extend_schema_field(deployment_config.SCHEMA)
class DeploymentConfigField(serializers.JSONField):
    pass


class DeploymentSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", queryset=Model.objects.all(),
                                         help_text="The registered model to serve (fixed once created).")
    alias = serializers.CharField(required=False, allow_blank=True, max_length=32,
                                  help_text="Follow this alias (default 'production' unless a version is pinned).")
    version = serializers.IntegerField(required=False, allow_null=True, min_value=1, source="version.number",
                                       help_text="Pin this version number instead of following an alias.")
    config = DeploymentConfigField(required=False, help_text="engine (device, dtype, quantization, max_num_seqs, "
                                   "max_queue, kv_cache_bytes…), max_tokens, max_n, max_input_items, timeout_s, "
                                   "ttft_target_ms (adaptive admission's p99 TTFT target, 0: off), "
                                   "sampling defaults (temperature, top_p, max_tokens).")
    replicas = serializers.IntegerField(required=False, min_value=1, max_value=64)
    status = serializers.SerializerMethodField()
    status_reason = serializers.SerializerMethodField()
    serving_version = serializers.SerializerMethodField(help_text="The version replicas should serve now.")
    task = serializers.CharField(source="model.task", read_only=True)
    replica_set = ReplicaSerializer(many=True, read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = Deployment
        fields = ["id", "name", "model", "task", "alias", "version", "serving_version", "config", "replicas",
                  "stopped", "status", "status_reason", "replica_set", "created_by", "created_at", "updated_at"]
        read_only_fields = ["id", "stopped", "created_by", "created_at", "updated_at"]

    def get_status(self, obj: Deployment) -> str:
        return obj.status_and_reason()[0]

    def get_status_reason(self, obj: Deployment) -> str:
        return obj.status_and_reason()[1]

    def get_serving_version(self, obj: Deployment) -> int | None:
        target = obj.target_version()
        return target.number if target else None

    def validate_name(self, value: str) -> str:
        if self.instance is not None and value != self.instance.name:
            raise serializers.ValidationError("A deployment's name cannot change (clients use it); create a new one.")
        if self.instance is None and Deployment.is_trial_name(value):
            raise serializers.ValidationError(f"Names like '{value}' ({TRIAL_PREFIX}<job>-<trial>) are reserved for "
                                              "tuning trials; choose another name.")
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        instance: Deployment | None = self.instance
        model = attrs.get("model", instance.model if instance else None)
        if instance is not None and model != instance.model:
            raise serializers.ValidationError({"model": "A deployment's model cannot change; create a new one."})
        number = attrs.pop("version", {}).get("number") if "version" in attrs else None
        alias = attrs.get("alias")
        if "version" in self.initial_data and number is not None and alias:
            raise serializers.ValidationError({"alias": "Give an alias to follow or a version to pin, not both."})
        if number is not None:
            version = model.versions.filter(number=number).first()
            if version is None:
                raise serializers.ValidationError({"version": f"{model.name} has no version {number}."},
                                                  code="does_not_exist")
            if version.status != VersionStatus.READY:
                raise serializers.ValidationError({"version": f"Version {number} is {version.status}; only a "
                                                              "ready version can be deployed."})
            attrs["version"], attrs["alias"] = version, ""
        elif alias:
            attrs["version"] = None
            if not model.aliases.filter(name=alias).exists():
                raise serializers.ValidationError({"alias": f"{model.name} has no alias '{alias}'; promote a version "
                                                            f"to it first, or pin a version."}, code="does_not_exist")
        elif instance is None or ("version" in self.initial_data and self.initial_data["version"] is None):
            attrs["version"], attrs["alias"] = None, "production"
            if not model.aliases.filter(name="production").exists():
                raise serializers.ValidationError({"alias": f"{model.name} has no 'production' alias; promote a "
                                                            "version, name another alias, or pin a version."}, code="does_not_exist")
        if "config" in attrs and instance is not None:
            attrs["config"] = deployment_config.normalize(attrs["config"], previous=instance.config)
        elif "config" in attrs:
            attrs["config"] = Deployment.starting_config(attrs["config"], model, attrs.get("version"),
                                                         attrs.get("alias"))
        config = attrs.get("config", instance.config if instance else None)
        if config:
            deployment_config.check_runtime(config, self._target(attrs, model, instance), model.task)
        return attrs

    @staticmethod
    def _target(attrs: dict[str, Any], model: Any, instance: Deployment | None) -> Any:
        if attrs.get("version") is not None:
            return attrs["version"]
        if attrs.get("alias"):
            alias = model.aliases.filter(name=attrs["alias"]).select_related("version").first()
            return alias.version if alias else None
        return instance.target_version() if instance else None


class PredictSerializer(serializers.Serializer):
    input = serializers.JSONField(help_text="A text or a list of texts.")
    top_k = serializers.IntegerField(required=False, min_value=1, help_text="Labels per text (classification).")


class PredictDatasetSerializer(serializers.Serializer):
    dataset = serializers.CharField(help_text="A registered dataset: `classification` for a text-classification "
                                              "deployment, `ner` for a token-classification one.")
    version = serializers.IntegerField(required=False, min_value=1, help_text="Its version number; the latest "
                                                                              "if left out.")


class ApplyTuneSerializer(serializers.Serializer):
    job = serializers.IntegerField(min_value=1, help_text="The id of a succeeded `tune` job of this deployment's model.")
