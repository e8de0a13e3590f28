from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from console.accounts.models import User
from console.jobs.models import Job
from console.registry.choices import Task
from console.registry.config_schema import OPENAPI_CONFIG_SCHEMA, validate_config
from console.registry.models import Alias, AliasEvent, Model, ModelVersion

TASKS = ", ".join(Task.values)


def check_config(config: Any) -> dict[str, Any]:
    """Validate a version config against the schema; DRF error with the path of the first problem."""
    try:
        validate_config(config)
    except DjangoValidationError as exc:
        raise serializers.ValidationError(exc.message_dict["config"]) from exc
    return config


def version_or_error(model: Model, number: int) -> ModelVersion:
    version = model.versions.filter(number=number).first()
    if version is None:
        raise serializers.ValidationError(
            f"Model '{model.name}' has no version {number}; version numbers count per model "
            f"(see /api/models/{model.name}/versions/).", code="does_not_exist")
    return version


class NamedOrNull(serializers.SlugRelatedField):
    """A name or null; an empty string is neither (DRF's related fields would read it as null)."""

    def run_validation(self, data: Any = serializers.empty) -> Any:
        if data == "":
            raise serializers.ValidationError("Give a username, or null for none.", code="blank")
        return super().run_validation(data)


@extend_schema_field(OPENAPI_CONFIG_SCHEMA)
class VersionConfigField(serializers.JSONField):
    pass


# --- models --------------------------------------------------------------------------------------
class ModelSerializer(serializers.ModelSerializer):
    task = serializers.ChoiceField(choices=Task.choices, error_messages={
        "invalid_choice": f"'{{input}}' is not a task; choose one of: {TASKS}."})
    owner = NamedOrNull(
        slug_field="username", queryset=User.objects.filter(is_active=True), required=False, allow_null=True,
        help_text="Username of the owner; defaults to the user who creates the model.")
    versions = serializers.SerializerMethodField(help_text="How many versions the model has.")
    aliases = serializers.SerializerMethodField(help_text="Alias name → version number.")

    class Meta:
        model = Model
        fields = ["name", "task", "description", "owner", "created_at", "updated_at", "versions", "aliases"]
        extra_kwargs: dict[str, Any] = {"name": {"validators": []}}  # duplicates get our own message below

    def validate_name(self, value: str) -> str:
        if Model.objects.filter(name=value).exists():
            raise serializers.ValidationError(f"A model named '{value}' already exists; choose another name.",
                                              code="duplicate")
        return value

    def get_versions(self, obj: Model) -> int:
        count = getattr(obj, "version_count", None)
        return obj.versions.count() if count is None else count

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField()))
    def get_aliases(self, obj: Model) -> dict[str, int]:
        return {alias.name: alias.version.number for alias in obj.aliases.all()}


class ModelUpdateSerializer(ModelSerializer):
    """PATCH: only the description and the owner change; name and task are fixed."""

    task = serializers.ChoiceField(choices=Task.choices, read_only=True)

    class Meta(ModelSerializer.Meta):
        read_only_fields = ["name", "task"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        fixed = sorted(set(self.initial_data) & {"name", "task"})
        if fixed:
            raise serializers.ValidationError(
                {fixed[0]: f"A model's {' and '.join(fixed)} cannot be changed; only description and owner can."})
        return attrs


# --- versions ------------------------------------------------------------------------------------
class VersionFileSerializer(serializers.Serializer):
    path = serializers.CharField()
    size = serializers.IntegerField()
    sha256 = serializers.CharField()


class JobSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = ["id", "status", "progress", "progress_message", "error"]


class ModelVersionSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    files = VersionFileSerializer(many=True, read_only=True)
    parent = serializers.SlugRelatedField(slug_field="number", read_only=True, allow_null=True,
                                          help_text="Parent version number (null for an import).")
    produced_by = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True,
                                                     help_text="Id of the job that produced it (null for an upload).")
    import_job = JobSummarySerializer(read_only=True, allow_null=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)
    aliases = serializers.SerializerMethodField(help_text="Names of the aliases pointing at this version.")

    class Meta:
        model = ModelVersion
        fields = ["model", "number", "status", "status_reason", "source", "source_ref", "format", "files",
                  "total_size", "architecture", "parameter_count", "dtype", "has_tokenizer", "chat_template",
                  "config", "parent", "produced_by", "import_job", "created_by", "created_at", "aliases"]
        read_only_fields = fields

    def get_aliases(self, obj: ModelVersion) -> list[str]:
        return [alias.name for alias in obj.aliases.all()]


class VersionUploadSerializer(serializers.Serializer):
    """multipart/form-data: a .zip / .tar.gz of a Hugging Face model folder, or one .gguf file."""

    file = serializers.FileField(help_text="A .zip or .tar.gz of a model folder, or a .gguf file.")
    config = serializers.CharField(required=False, help_text='The version config as a JSON object string, '
                                   'e.g. {"sampling": {"temperature": 0.7}}.')
    parent = serializers.IntegerField(required=False, min_value=1, help_text="Number of the parent version.")

    def validate_config(self, value: str) -> dict[str, Any]:
        try:
            config = json.loads(value)
        except json.JSONDecodeError as exc:
            raise serializers.ValidationError(f"config is not valid JSON ({exc.msg} at position {exc.pos}); "
                                              'send a JSON object such as {"sampling": {"max_tokens": 64}}.') from exc
        return check_config(config)

    def validate_parent(self, value: int) -> ModelVersion:
        return version_or_error(self.context["model"], value)


class VersionFromHubSerializer(serializers.Serializer):
    """application/json: import from the Hugging Face hub."""

    hub_id = serializers.CharField(max_length=200, help_text="A hub repository id, e.g. 'HuggingFaceTB/SmolLM2-135M'.")
    revision = serializers.CharField(max_length=100, required=False, allow_null=True,
                                     help_text="A branch, tag or commit; the default branch when absent.")
    config = VersionConfigField(required=False, help_text="The version config.")

    def validate_config(self, value: Any) -> dict[str, Any]:
        return check_config(value)


class VersionConfigSerializer(serializers.Serializer):
    config = VersionConfigField(help_text="The whole new config; validated against the config schema.")

    def validate_config(self, value: Any) -> dict[str, Any]:
        return check_config(value)


# --- aliases -------------------------------------------------------------------------------------
class AliasSerializer(serializers.ModelSerializer):
    model = serializers.SlugRelatedField(slug_field="name", read_only=True)
    version = serializers.SlugRelatedField(slug_field="number", read_only=True)

    class Meta:
        model = Alias
        fields = ["model", "name", "version", "updated_at"]
        read_only_fields = fields


class AliasMoveSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, help_text="The version number to point the alias at.")
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)
    override_reason = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=2000,
        help_text="Admins only: promote although the model's promotion gate refuses; the reason is recorded.")

    def validate_version(self, value: int) -> ModelVersion:
        return version_or_error(self.context["model"], value)


class AliasRollbackSerializer(serializers.Serializer):
    comment = serializers.CharField(required=False, allow_blank=True, default="", max_length=2000)


class AliasEventSerializer(serializers.ModelSerializer):
    alias = serializers.CharField(source="alias_name", read_only=True)
    from_version = serializers.SlugRelatedField(slug_field="number", read_only=True, allow_null=True)
    to_version = serializers.SlugRelatedField(slug_field="number", read_only=True, allow_null=True)
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True, allow_null=True)

    class Meta:
        model = AliasEvent
        fields = ["id", "alias", "action", "from_version", "to_version", "actor", "comment", "created_at"]
        read_only_fields = fields
