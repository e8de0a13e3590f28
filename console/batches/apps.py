from django.apps import AppConfig


class BatchesConfig(AppConfig):
    name = "console.batches"
    label = "batches"
    verbose_name = "Batches"

    def ready(self) -> None:
        from django.conf import settings

        from console.batches.models import fail_with_job
        from console.jobs import kinds

        # Resumable: every answered line is recorded once (unique custom_id per batch, conditional
        # updates), so a run after a dead one (the reaper queues it again; or a redelivery once the dead run's
        # lease expired) runs the body again and it carries on.
        kinds.register(kinds.JobKind(
            name="batch", handler="workers.batch.run", on_failed=fail_with_job,
            queue=lambda params: settings.TAUON_BATCH_QUEUE, retry_on_worker_lost=True, resumable=True,
            private=True))
        # Predict on a dataset (console/batches/predict.py): each answered chunk is kept, so a run after a dead
        # one predicts only the texts not answered yet.
        from console.batches import predict

        kinds.register(kinds.JobKind(
            name="predict", handler="workers.predict.run", validate=predict.validate, on_failed=predict.discard,
            queue=lambda params: settings.TAUON_BATCH_QUEUE, retry_on_worker_lost=True, resumable=True,
            private=True))
