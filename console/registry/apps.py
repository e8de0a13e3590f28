from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "console.registry"
    label = "registry"

    def ready(self) -> None:
        from django.conf import settings

        from console.jobs import kinds
        from console.registry.finetuning import finetune_failed, validate_params
        from console.registry.importing import import_failed

        kinds.register(kinds.JobKind(name="import", handler="workers.importing.run_import", on_failed=import_failed))
        # Long, on the evaluation queue. A redelivery after a dead worker resumes from the last checkpoint.
        kinds.register(kinds.JobKind(
            name="finetune", handler="workers.finetuning.finetune", validate=validate_params, on_failed=finetune_failed,
            queue=lambda params: settings.TAUON_EVALUATION_QUEUE, user_creatable=True, retry_on_worker_lost=True,
            series_axes=("optimizer step", "loss"),
            soft_time_limit=settings.TAUON_FINETUNE_SOFT_LIMIT_S, time_limit=settings.TAUON_FINETUNE_HARD_LIMIT_S))
