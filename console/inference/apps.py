from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "console.inference"
    label = "inference"
    verbose_name = "Inference API"
