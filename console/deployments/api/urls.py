from django.urls import path

from console.deployments.api.views import DeploymentViewSet

item = {"get": "retrieve", "patch": "partial_update", "put": "update", "delete": "destroy"}

urlpatterns = [
    path("deployments/", DeploymentViewSet.as_view({"get": "list", "post": "create"}), name="api-deployment-list"),
    path("deployments/<slug:name>/", DeploymentViewSet.as_view(item), name="api-deployment-detail"),
    path("deployments/<slug:name>/stop", DeploymentViewSet.as_view({"post": "stop"}), name="api-deployment-stop"),
    path("deployments/<slug:name>/start", DeploymentViewSet.as_view({"post": "start"}), name="api-deployment-start"),
    path("deployments/<slug:name>/figures", DeploymentViewSet.as_view({"get": "figures"}),
         name="api-deployment-figures"),
    path("deployments/<slug:name>/apply-tune", DeploymentViewSet.as_view({"post": "apply_tune"}),
         name="api-deployment-apply-tune"),
]
