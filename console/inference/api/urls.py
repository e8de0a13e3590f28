from django.urls import path

from console.inference.api.views import PredictDatasetViewSet, PredictViewSet

urlpatterns = [
    path("deployments/<slug:name>/predict", PredictViewSet.as_view({"post": "predict"}),
         name="api-deployment-predict"),
    path("deployments/<slug:name>/predict-dataset", PredictDatasetViewSet.as_view({"post": "create"}),
         name="api-deployment-predict-dataset"),
]
