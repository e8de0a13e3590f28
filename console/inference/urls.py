from django.urls import path

from console.inference import views

urlpatterns = [
    path("v1/models", views.models, name="v1-models"),
    path("v1/models/<str:name>", views.model, name="v1-model"),
    path("v1/chat/completions", views.chat_completions, name="v1-chat-completions"),
    path("v1/completions", views.completions, name="v1-completions"),
    path("v1/embeddings", views.embeddings, name="v1-embeddings"),
    path("metrics", views.prometheus, name="metrics"),
]
