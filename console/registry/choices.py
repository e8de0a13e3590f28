from django.db import models
from django.utils.translation import gettext_lazy as _


class Task(models.TextChoices):
    TEXT_GENERATION = "text-generation", _("Text generation")
    TEXT_CLASSIFICATION = "text-classification", _("Text classification")
    TOKEN_CLASSIFICATION = "token-classification", _("Token classification")
    EMBEDDINGS = "embeddings", _("Embeddings")


class VersionStatus(models.TextChoices):
    IMPORTING = "importing", _("Importing")
    READY = "ready", _("Ready")
    FAILED = "failed", _("Failed")


class VersionSource(models.TextChoices):
    UPLOAD = "upload", _("Upload")
    BUNDLED = "bundled", _("Bundled")
    HUB = "hub", _("Hugging Face hub")
    JOB = "job", _("Produced by a job")


class VersionFormat(models.TextChoices):
    SAFETENSORS = "safetensors", "safetensors"  # a file format's name, the same in every language
    GGUF = "gguf", _("GGUF (converted to safetensors)")


class AliasAction(models.TextChoices):
    SET = "set", _("Set")
    ROLLBACK = "rollback", _("Rollback")
    DELETE = "delete", _("Delete")
