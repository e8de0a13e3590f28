from django.urls import path

from console.registry import views

app_name = "registry"
urlpatterns = [
    path("", views.model_list, name="model-list"),
    path("models/<slug:name>/", views.model_detail, name="model-detail"),
    path("models/<slug:name>/delete/", views.model_delete, name="model-delete"),
    path("models/<slug:name>/promote/", views.promote, name="promote"),
    path("models/<slug:name>/aliases/<slug:alias>/rollback/", views.rollback, name="rollback"),
    path("models/<slug:name>/aliases/<slug:alias>/remove/", views.remove_alias, name="remove-alias"),
    path("models/<slug:name>/versions/<int:number>/", views.version_detail, name="version-detail"),
    path("models/<slug:name>/versions/<int:number>/finetune/", views.version_finetune, name="version-finetune"),
    path("models/<slug:name>/versions/<int:number>/compress/", views.version_compress, name="version-compress"),
]
