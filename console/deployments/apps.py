from django.apps import AppConfig
from django.conf import settings


class DeploymentsConfig(AppConfig):
    name = "console.deployments"
    label = "deployments"
    verbose_name = "Deployments"

    def ready(self) -> None:
        from console.deployments.tuning import remove_trials, validate_params
        from console.jobs import kinds

        # A tune measures trial deployments of its own (never the live replicas), deleted however it ends
        # (on_failed: a cancel or the reaper too); it is idempotent (its result is stored only at the end),
        # so a redelivery simply runs it again.
        kinds.register(kinds.JobKind(
            name="tune", handler="workers.tuning.tune", validate=validate_params, on_failed=remove_trials,
            queue=lambda params: settings.TAUON_EVALUATION_QUEUE, user_creatable=True, retry_on_worker_lost=True,
            soft_time_limit=settings.TAUON_EVALUATION_SOFT_LIMIT_S, time_limit=settings.TAUON_EVALUATION_HARD_LIMIT_S))
