from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "console.core"
    label = "core"

    def ready(self) -> None:
        from console.core.api import read_strings_strictly

        read_strings_strictly()
