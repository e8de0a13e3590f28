from django.urls import path

from console.registry.api.views import AliasViewSet, ModelViewSet, VersionViewSet

ALIAS = "models/<slug:name>/aliases/<slug:alias>"

urlpatterns = [
    path("models/", ModelViewSet.as_view({"get": "list", "post": "create"}), name="api-model-list"),
    path("models/<slug:name>/", ModelViewSet.as_view({"get": "retrieve", "patch": "partial_update", "delete": "destroy"}),
         name="api-model-detail"),
    path("models/<slug:name>/versions/", VersionViewSet.as_view({"get": "list", "post": "create"}),
         name="api-version-list"),
    path("models/<slug:name>/versions/<int:number>/",
         VersionViewSet.as_view({"get": "retrieve", "patch": "partial_update"}), name="api-version-detail"),
    path("models/<slug:name>/aliases/", AliasViewSet.as_view({"get": "list"}), name="api-alias-list"),
    path(ALIAS, AliasViewSet.as_view({"get": "retrieve", "put": "update", "delete": "destroy"}), name="api-alias-detail"),
    path(f"{ALIAS}/history", AliasViewSet.as_view({"get": "history"}), name="api-alias-history"),
    path(f"{ALIAS}/rollback", AliasViewSet.as_view({"post": "rollback"}), name="api-alias-rollback"),
]
