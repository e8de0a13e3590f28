"""The model registry: models, their versions, and the aliases that point at versions.

Every state change is a method here, run in a transaction with the audit record."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import models, transaction

from console.audit.models import record
from console.registry.choices import AliasAction, Task, VersionFormat, VersionSource, VersionStatus


class PromotionRefused(ValidationError):
    """A promotion check (e.g. the evaluation app's gate) refused an alias move; the message has the numbers."""


class ModelInUse(Exception):
    """The model cannot be deleted as it stands; the message says what to do first."""


# Checks an alias move by promotion must pass: fn(model, alias, version, actor, override_reason), raising
# PromotionRefused. Apps register theirs in AppConfig.ready(); rollbacks and deletes skip them.
PROMOTION_CHECKS: list[Callable[..., None]] = []


class Model(models.Model):
    name = models.SlugField(max_length=100, unique=True)
    task = models.CharField(max_length=32, choices=Task.choices)
    description = models.TextField(blank=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="models")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def register(cls, actor: Any, *, name: str, task: str, description: str = "", owner: Any = None) -> Model:
        """A new model (owned by `owner`, else by `actor`) with its audit record. IntegrityError when another
        request took the name meanwhile."""
        owner = owner or actor
        with transaction.atomic():
            model = cls.objects.create(name=name, task=task, description=description, owner=owner)
            record(actor, "model.create", model, model_name=name, task=task, owner=owner.username)
        return model

    def change(self, actor: Any, **fields: Any) -> None:
        """Set the description and/or owner; the audit record lists what changed, from and to."""
        def described() -> dict[str, Any]:
            return {"description": self.description, "owner": self.owner.username if self.owner else None}

        before = described()
        with transaction.atomic():
            for field, value in fields.items():
                setattr(self, field, value)
            self.save()
            after = described()
            changes = {k: {"from": before[k], "to": after[k]} for k in before if before[k] != after[k]}
            record(actor, "model.update", self, model_name=self.name, changes=changes)

    def remove(self, actor: Any) -> None:
        """Delete the model, its versions and (once committed) their files. Refused (ModelInUse) while an alias
        points at one of its versions or a version is still importing."""
        aliases = sorted(self.aliases.values_list("name", flat=True))
        if aliases:
            raise ModelInUse(f"Model '{self.name}' still has aliases ({', '.join(aliases)}); "
                             "delete them first so nothing serving it loses its version.")
        if self.versions.filter(status=VersionStatus.IMPORTING).exists():
            raise ModelInUse(f"Model '{self.name}' has a version still importing; wait for it to finish.")
        paths = [version.path for version in self.versions.all()]

        def remove_files() -> None:
            for path in paths:
                shutil.rmtree(path, ignore_errors=True)

        with transaction.atomic():
            record(actor, "model.delete", self, model_name=self.name, versions=len(paths))
            self.delete()
            transaction.on_commit(remove_files)

    def next_version_number(self) -> int:
        """Call inside a transaction after locking the model row (select_for_update)."""
        last = self.versions.aggregate(n=models.Max("number"))["n"]
        return (last or 0) + 1


class ModelVersion(models.Model):
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=VersionStatus.choices, default=VersionStatus.IMPORTING, db_index=True)
    status_reason = models.TextField(blank=True)
    source = models.CharField(max_length=16, choices=VersionSource.choices)
    source_ref = models.CharField(max_length=300, blank=True)  # original file name, hub id, package name
    storage_key = models.CharField(max_length=64, unique=True, editable=False)  # generated folder name under TAUON_STORAGE
    format = models.CharField(max_length=16, choices=VersionFormat.choices, blank=True)
    files = models.JSONField(default=list, blank=True)  # [{"path", "size", "sha256"}]
    total_size = models.BigIntegerField(default=0)
    architecture = models.CharField(max_length=100, blank=True)
    parameter_count = models.BigIntegerField(null=True, blank=True)
    dtype = models.CharField(max_length=32, blank=True)
    has_tokenizer = models.BooleanField(default=False)
    chat_template = models.TextField(blank=True)
    config = models.JSONField(default=dict, blank=True)  # validated by registry.config_schema
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")
    produced_by = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="produced_versions")
    import_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="imported_versions")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["model__name", "-number"]
        constraints = [models.UniqueConstraint(fields=["model", "number"], name="unique_version_number")]

    def __str__(self) -> str:
        return f"{self.model.name} v{self.number}"

    @property
    def path(self) -> Path:
        """Where this version's files live. The folder name is generated, never client-chosen."""
        return Path(settings.TAUON_STORAGE) / "models" / self.storage_key

    def update_config(self, config: dict[str, Any], actor: Any) -> None:
        from console.registry.config_schema import validate_config

        validate_config(config)
        with transaction.atomic():
            old = self.config
            self.config = config
            self.save(update_fields=["config"])
            record(actor, "version.config", self, model_name=self.model.name, old=old, new=config)


class Alias(models.Model):
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="aliases")
    name = models.SlugField(max_length=50)
    version = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="aliases")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["model__name", "name"]
        constraints = [models.UniqueConstraint(fields=["model", "name"], name="unique_alias_per_model")]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.name}"

    @staticmethod
    def check_target(model: Model, version: ModelVersion) -> None:
        if version.model_id != model.pk:
            raise ValidationError({"version": f"Version {version} belongs to model '{version.model.name}', not '{model.name}'."})
        if version.status != VersionStatus.READY:
            raise ValidationError({"version": f"Version {version.number} is '{version.status}'; only ready versions can be promoted."})

    @classmethod
    def move(cls, model: Model, name: str, version: ModelVersion, actor: Any, comment: str = "",
             action: str = AliasAction.SET, override_reason: str = "") -> AliasEvent:
        """Point alias `name` of `model` at `version`: one atomic step with its history and audit records.
        A promotion (action set) must pass PROMOTION_CHECKS; `override_reason` is for an admin's override."""
        validate_slug(name)
        cls.check_target(model, version)
        with transaction.atomic():
            Model.objects.select_for_update().get(pk=model.pk)  # serialise alias moves per model
            if action == AliasAction.SET:
                for check in PROMOTION_CHECKS:
                    check(model, name, version, actor, override_reason)
            alias = cls.objects.filter(model=model, name=name).select_related("version").first()
            old = alias.version if alias else None
            if alias is None:
                alias = cls.objects.create(model=model, name=name, version=version)
            else:
                alias.version = version
                alias.save(update_fields=["version", "updated_at"])
            event = AliasEvent.objects.create(model=model, alias_name=name, action=action, from_version=old,
                                              to_version=version, actor=actor if actor and actor.is_authenticated else None,
                                              comment=comment)
            record(actor, f"alias.{action}", alias, model_name=model.name, alias=name,
                   from_version=old.number if old else None, to_version=version.number, comment=comment)
        return event

    @classmethod
    def rollback(cls, model: Model, name: str, actor: Any, comment: str = "") -> AliasEvent:
        """Put the alias back on the version it pointed at before its latest move."""
        with transaction.atomic():
            Model.objects.select_for_update().get(pk=model.pk)
            alias = cls.objects.filter(model=model, name=name).first()
            if alias is None:
                raise cls.DoesNotExist(f"Model '{model.name}' has no alias '{name}'.")
            last = AliasEvent.objects.filter(model=model, alias_name=name).exclude(action=AliasAction.DELETE).first()
            previous = last.from_version if last else None
            if previous is None:
                raise ValidationError({"alias": f"Alias '{name}' has no previous version to roll back to."})
            return cls.move(model, name, previous, actor, comment=comment, action=AliasAction.ROLLBACK)

    def remove(self, actor: Any, comment: str = "") -> None:
        with transaction.atomic():
            AliasEvent.objects.create(model=self.model, alias_name=self.name, action=AliasAction.DELETE,
                                      from_version=self.version, to_version=None,
                                      actor=actor if actor and actor.is_authenticated else None, comment=comment)
            record(actor, "alias.delete", self, model_name=self.model.name, alias=self.name,
                   from_version=self.version.number, comment=comment)
            self.delete()


class AliasEvent(models.Model):
    """The history of an alias: who moved it, when, from which version to which."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="alias_events")
    alias_name = models.SlugField(max_length=50)
    action = models.CharField(max_length=16, choices=AliasAction.choices)
    from_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    to_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.model.name}@{self.alias_name} {self.action}"
