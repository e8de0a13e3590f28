"""Deployments (what should be served) and replicas (engines that workers run for them).

A deployment's status is derived from its replicas' rows, which the workers keep fresh with a
heartbeat; a replica whose heartbeat stopped is shown as lost."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from console.audit.models import record
from console.deployments import config as deployment_config
from console.deployments.choices import ACTIVE_REPLICA, DeploymentStatus, ReplicaStatus
from console.registry.choices import VersionStatus
from console.registry.models import Alias, Model, ModelVersion


class PublicDeployments(models.Manager["Deployment"]):
    """Deployments people see and call: all but a tune's transient trial deployments."""

    def get_queryset(self) -> models.QuerySet[Deployment]:
        return super().get_queryset().filter(tune_job__isnull=True)


TRIAL_PREFIX = "tune-"  # a trial deployment is named tune-<job>-<trial>; that pattern is reserved


class Deployment(models.Model):
    name = models.SlugField(max_length=64, unique=True)  # the `model` field of the OpenAI API
    model = models.ForeignKey(Model, on_delete=models.PROTECT, related_name="deployments")
    alias = models.CharField(max_length=32, blank=True)  # follow this alias…
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT,
                                related_name="deployments")  # …or serve this pinned version
    config = models.JSONField(default=dict)  # deployments.config.normalize
    replicas = models.PositiveSmallIntegerField(default=1)
    stopped = models.BooleanField(default=False)  # the wanted state; replicas follow within seconds
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Set on a `tune` job's transient trial deployment (workers/tune_trials.py): internal, so it is hidden
    # from people (`objects` leaves it out: pages, /api, /v1) and only the job's own calls reach it; it is
    # deleted with its job at the latest.
    tune_job = models.ForeignKey("jobs.Job", null=True, blank=True, on_delete=models.CASCADE, related_name="+")

    objects = PublicDeployments()
    everything = models.Manager()  # trial deployments too: the serving workers and the tune job

    class Meta:
        ordering = ["name"]
        base_manager_name = "everything"

    def __str__(self) -> str:
        return self.name

    @property
    def internal(self) -> bool:
        return self.tune_job_id is not None

    @staticmethod
    def trial_name(job: int, trial: int) -> str:
        return f"{TRIAL_PREFIX}{job}-{trial}"

    @staticmethod
    def is_trial_name(name: str) -> bool:
        head, _, rest = name.partition(TRIAL_PREFIX)
        job, _, trial = rest.partition("-")
        return head == "" and job.isdigit() and trial.isdigit()

    @property
    def queue(self) -> str:
        """The Celery queue its inference tasks travel on."""
        return f"deploy.{self.name}"

    @property
    def task(self) -> str:
        return self.model.task

    def target_version(self) -> ModelVersion | None:
        """The version replicas should serve now: the pinned one, or where the alias points."""
        if self.version_id:
            return self.version
        alias = Alias.objects.filter(model_id=self.model_id, name=self.alias).select_related("version").first()
        return alias.version if alias else None

    def live_replicas(self) -> list[Replica]:
        return [r for r in self.replica_set.all() if r.state in ACTIVE_REPLICA]

    def status_and_reason(self) -> tuple[str, str]:
        """The status and a sentence for people, in the request's language (English for API clients)."""
        if self.stopped:
            return DeploymentStatus.STOPPED, _("Stopped; start it to serve again.")
        target = self.target_version()
        if target is None:
            return DeploymentStatus.FAILED, _("Alias '%(alias)s' of %(model)s points to no version; promote a version "
                                              "to '%(alias)s'.") % {"alias": self.alias, "model": self.model.name}
        if target.status != VersionStatus.READY:
            return DeploymentStatus.FAILED, _("Version %(n)s is %(status)s, not ready to serve.") % {
                "n": target.number, "status": target.status}
        replicas = list(self.replica_set.all())
        ready = [r for r in replicas if r.state == ReplicaStatus.READY]
        lost = [r for r in replicas if r.state == "lost"]
        tail = _("; %(n)s lost") % {"n": len(lost)} if lost else ""
        if ready:
            return DeploymentStatus.READY, _("%(ready)s of %(wanted)s replicas ready%(lost)s.") % {
                "ready": len(ready), "wanted": self.replicas, "lost": tail}
        if any(r.state == ReplicaStatus.LOADING for r in replicas):
            return DeploymentStatus.LOADING, _("Loading version %(n)s%(lost)s.") % {"n": target.number, "lost": tail}
        failed = [r for r in replicas if r.state == ReplicaStatus.FAILED]
        if failed:
            return DeploymentStatus.FAILED, failed[0].status_reason or _("A replica failed to load.")
        workers = self.serving_workers()
        if workers:
            return DeploymentStatus.PENDING, ngettext(
                "Waiting for a worker to start a replica%(lost)s: %(n)s running worker will pick it up within seconds.",
                "Waiting for a worker to start a replica%(lost)s: %(n)s running workers will pick it up within seconds.",
                workers) % {"n": workers, "lost": tail}
        return DeploymentStatus.PENDING, _("Waiting for a worker%(lost)s: none is running; start one with "
                                           "`%(command)s` (or `all`).") % {
            "lost": tail, "command": f"celery -A workers worker --deployments {self.name}"}

    def serving_workers(self) -> int:
        """Serving worker processes alive now that take this deployment (0 when Redis cannot say)."""
        import redis

        from console.deployments import live

        try:
            return live.workers_for(self.name)
        except redis.RedisError:
            return 0

    @property
    def status(self) -> str:
        return self.status_and_reason()[0]

    # -- changes (each audited) --
    @classmethod
    def create(cls, actor: Any, **fields: Any) -> Deployment:
        fields["config"] = cls.starting_config(fields.get("config", {}), fields["model"], fields.get("version"),
                                               fields.get("alias"))
        with transaction.atomic():
            deployment = cls.objects.create(created_by=actor, **fields)
            record(actor, "deployment.create", deployment, model=deployment.model.name,
                   alias=deployment.alias, version=deployment.version.number if deployment.version else None,
                   replicas=deployment.replicas)
        return deployment

    @staticmethod
    def starting_config(config: Any, model: Model, version: ModelVersion | None, alias: str | None) -> dict[str, Any]:
        """A new deployment's config, normalized: its sampling defaults start from its version's `sampling`
        (the pinned version, else the one its alias points at); what its own config says wins."""
        if version is None and alias:
            moved = Alias.objects.filter(model=model, name=alias).select_related("version").first()
            version = moved.version if moved else None
        defaults = {k: v for k, v in ((version.config if version else None) or {}).get("sampling", {}).items()
                    if k in deployment_config.SAMPLING}
        return deployment_config.normalize(config, previous={"sampling": defaults})

    def change(self, actor: Any, **fields: Any) -> None:
        fields.pop("model", None)  # never changes (a PUT/PATCH may name the current one)
        if "config" in fields:
            fields["config"] = deployment_config.normalize(fields["config"], previous=self.config)
        with transaction.atomic():
            for name, value in fields.items():
                setattr(self, name, value)
            self.save()
            changes = {k: (v.number if isinstance(v, ModelVersion) else v) for k, v in fields.items()}
            record(actor, "deployment.change", self, **changes)

    def remove(self, actor: Any) -> None:
        with transaction.atomic():
            record(actor, "deployment.delete", self, model=self.model.name)
            self.delete()


class Replica(models.Model):
    """One engine in one worker process serving one deployment. Workers create and update these rows;
    `key` names its heartbeat in Redis too."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="replica_set")
    key = models.CharField(max_length=32, unique=True)
    worker = models.CharField(max_length=255)  # Celery node name
    pid = models.PositiveIntegerField()
    slot = models.PositiveSmallIntegerField()
    version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=16, choices=ReplicaStatus.choices, default=ReplicaStatus.LOADING)
    status_reason = models.TextField(blank=True)
    stats = models.JSONField(default=dict, blank=True)  # the engine's latest figures
    started_at = models.DateTimeField(default=timezone.now)
    heartbeat_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slot", "-started_at"]

    def __str__(self) -> str:
        return f"{self.deployment.name}#{self.slot} on {self.worker}"

    @property
    def lost(self) -> bool:
        stale = timezone.now() - self.heartbeat_at > timedelta(seconds=settings.TAUON_REPLICA_LOST_S)
        return self.status in ACTIVE_REPLICA and stale

    @property
    def state(self) -> str:
        """The status, or `lost` when the worker stopped beating without saying goodbye."""
        return "lost" if self.lost else self.status

    @classmethod
    def prune(cls, older_than: timedelta = timedelta(hours=1)) -> int:
        """Forget replicas that stopped, failed or were lost more than an hour ago."""
        return cls.objects.filter(heartbeat_at__lt=timezone.now() - older_than).delete()[0]
