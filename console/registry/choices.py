from django.db import models


class Task(models.TextChoices):
    TEXT_GENERATION = "text-generation", "Text generation"
    TEXT_CLASSIFICATION = "text-classification", "Text classification"
    TOKEN_CLASSIFICATION = "token-classification", "Token classification"
    EMBEDDINGS = "embeddings", "Embeddings"


class VersionStatus(models.TextChoices):
    IMPORTING = "importing", "Importing"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


class VersionSource(models.TextChoices):
    UPLOAD = "upload", "Upload"
    BUNDLED = "bundled", "Bundled"
    HUB = "hub", "Hugging Face hub"
    JOB = "job", "Produced by a job"


class VersionFormat(models.TextChoices):
    SAFETENSORS = "safetensors", "safetensors"
    GGUF = "gguf", "GGUF (converted to safetensors)"


class AliasAction(models.TextChoices):
    SET = "set", "Set"
    ROLLBACK = "rollback", "Rollback"
    DELETE = "delete", "Delete"
