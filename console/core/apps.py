from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "console.core"
    label = "core"

    def ready(self) -> None:
        from django.db import models
        from rest_framework import serializers

        from console.core.api import StrictCharField

        # Model serializers read strings strictly, as the schema says (see StrictCharField).
        serializers.ModelSerializer.serializer_field_mapping[models.CharField] = StrictCharField
        serializers.ModelSerializer.serializer_field_mapping[models.TextField] = StrictCharField
