from django.apps import AppConfig
from django.conf import settings


class EvaluationConfig(AppConfig):
    name = "console.evaluation"
    label = "evaluation"
    verbose_name = "Evaluation"

    def ready(self) -> None:
        from console.evaluation.compress import validate_params as validate_compress
        from console.evaluation.config import validate_params
        from console.evaluation.gates import check_promotion
        from console.jobs import kinds
        from console.registry import models as registry
        from console.registry.importing import fail_unimported

        # Idempotent (results are stored only at the end, in one transaction): a redelivery after a
        # dead worker runs it again. Long: its own queue (TAUON_EVALUATION_QUEUE, default `jobs`).
        kinds.register(kinds.JobKind(
            name="evaluate", handler="workers.evaluation.evaluate", validate=validate_params,
            queue=lambda params: settings.TAUON_EVALUATION_QUEUE, user_creatable=True, retry_on_worker_lost=True,
            soft_time_limit=settings.TAUON_EVALUATION_SOFT_LIMIT_S, time_limit=settings.TAUON_EVALUATION_HARD_LIMIT_S))
        # A compression creates a child version, so it is not re-run after a lost worker; failing, it fails
        # a child it stored but never imported.
        kinds.register(kinds.JobKind(
            name="compress", handler="workers.compression.compress", validate=validate_compress,
            on_failed=fail_unimported,
            queue=lambda params: settings.TAUON_EVALUATION_QUEUE, user_creatable=True,
            soft_time_limit=settings.TAUON_EVALUATION_SOFT_LIMIT_S, time_limit=settings.TAUON_EVALUATION_HARD_LIMIT_S))
        if check_promotion not in registry.PROMOTION_CHECKS:
            registry.PROMOTION_CHECKS.append(check_promotion)
