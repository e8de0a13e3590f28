from django.urls import path

from console.evaluation.api.views import DatasetViewSet, EvaluationResultViewSet, PromotionGateViewSet

urlpatterns = [
    path("datasets/", DatasetViewSet.as_view({"get": "list", "post": "create"}), name="api-dataset-list"),
    path("datasets/<slug:name>/", DatasetViewSet.as_view({"get": "retrieve"}), name="api-dataset-detail"),
    path("evaluations/", EvaluationResultViewSet.as_view({"get": "list"}), name="api-evaluation-list"),
    path("evaluations/<int:pk>/", EvaluationResultViewSet.as_view({"get": "retrieve"}), name="api-evaluation-detail"),
    path("gates/", PromotionGateViewSet.as_view({"get": "list", "post": "create"}), name="api-gate-list"),
    path("gates/<int:pk>/", PromotionGateViewSet.as_view({"get": "retrieve", "delete": "destroy"}),
         name="api-gate-detail"),
]
