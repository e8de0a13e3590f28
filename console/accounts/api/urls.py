from django.urls import path

from console.accounts.api.views import ApiKeyViewSet

urlpatterns = [
    path("keys/", ApiKeyViewSet.as_view({"get": "list", "post": "create"}), name="api-key-list"),
    path("keys/<int:pk>/", ApiKeyViewSet.as_view({"get": "retrieve", "patch": "partial_update",
                                                     "delete": "destroy"}), name="api-key-detail"),
    path("keys/<int:pk>/revoke", ApiKeyViewSet.as_view({"post": "revoke"}), name="api-key-revoke"),
]
