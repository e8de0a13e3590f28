from django.db import models

# the same names as engine.attribute.METHODS / SPANS (a test keeps them equal; the console never imports torch)
METHODS = ("feature_ablation", "integrated_gradients", "shapley")
SPANS = ("prompt", "user")
GENERATION = "text-generation"
CLASSIFICATION = "text-classification"
EXPLAINABLE = (GENERATION, CLASSIFICATION)


class Mode(models.TextChoices):
    CHAT = "chat", "Chat"
    COMPLETION = "completion", "Completion"
    EMBEDDINGS = "embeddings", "Embeddings"
    CLASSIFY = "classify", "Classification"
