from django.urls import path

from console.audit.api.views import AuditEventViewSet

urlpatterns = [
    path("audit/", AuditEventViewSet.as_view({"get": "list"}), name="api-audit-list"),
    path("audit/<int:pk>/", AuditEventViewSet.as_view({"get": "retrieve"}), name="api-audit-detail"),
]
