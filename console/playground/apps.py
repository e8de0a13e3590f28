from django.apps import AppConfig


def explain_queue(params: dict) -> str:
    """An explain job runs on a worker that hosts the deployment: it travels on the deployment's queue."""
    return f"deploy.{params['deployment']}"


class PlaygroundConfig(AppConfig):
    name = "console.playground"
    label = "playground"
    verbose_name = "Playground"

    def ready(self) -> None:
        from console.jobs.kinds import JobKind, register

        register(JobKind(name="explain", handler="workers.explain.explain", queue=explain_queue, private=True))
