from django.urls import path

from console.evaluation import views

app_name = "evaluation"
urlpatterns = [
    path("datasets/", views.dataset_list, name="dataset-list"),
    path("datasets/<slug:name>/", views.dataset_detail, name="dataset-detail"),
    path("models/<slug:name>/evaluation/", views.model_evaluation, name="model"),
    path("models/<slug:name>/evaluation/gates/", views.gate_add, name="gate-add"),
    path("models/<slug:name>/evaluation/gates/<int:pk>/remove/", views.gate_remove, name="gate-remove"),
]
