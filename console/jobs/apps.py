from importlib import import_module

from django.apps import AppConfig
from django.conf import settings


class JobsConfig(AppConfig):
    name = "console.jobs"
    label = "jobs"

    def ready(self) -> None:
        from console.jobs import checks  # noqa: F401 - registers the start-up checks

        # Extra modules that register job kinds (the test suite registers its own this way).
        for module in settings.TAUON_JOB_KIND_MODULES:
            import_module(module)
