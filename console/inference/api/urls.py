from django.urls import path

from console.inference.api.views import PredictViewSet

urlpatterns = [
    path("deployments/<slug:name>/predict", PredictViewSet.as_view({"post": "predict"}),
         name="api-deployment-predict"),
]
