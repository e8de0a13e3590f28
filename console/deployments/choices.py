from django.db import models


class DeploymentStatus(models.TextChoices):
    PENDING = "pending", "Pending"  # no worker has picked it up yet
    LOADING = "loading", "Loading"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"


class ReplicaStatus(models.TextChoices):
    LOADING = "loading", "Loading"
    READY = "ready", "Ready"
    DRAINING = "draining", "Draining"  # finishing its requests before it stops
    STOPPED = "stopped", "Stopped"
    FAILED = "failed", "Failed"


ACTIVE_REPLICA = (ReplicaStatus.LOADING, ReplicaStatus.READY, ReplicaStatus.DRAINING)
