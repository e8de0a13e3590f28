from django.urls import path

from console.jobs.api.views import JobViewSet

urlpatterns = [
    path("jobs/", JobViewSet.as_view({"get": "list", "post": "create"}), name="api-job-list"),
    path("jobs/<int:pk>/", JobViewSet.as_view({"get": "retrieve"}), name="api-job-detail"),
    path("jobs/<int:pk>/cancel", JobViewSet.as_view({"post": "cancel"}), name="api-job-cancel"),
    path("jobs/<int:pk>/rerun", JobViewSet.as_view({"post": "rerun"}), name="api-job-rerun"),
]
