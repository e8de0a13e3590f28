from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "console.registry"
    label = "registry"

    def ready(self) -> None:
        from console.jobs import kinds
        from console.registry.importing import import_failed

        kinds.register(kinds.JobKind(name="import", handler="workers.handlers.import_version", on_failed=import_failed))
