from django.urls import path

from console.batches import api, views

app_name = "batches"
urlpatterns = [
    path("v1/files", api.files, name="v1-files"),
    path("v1/files/<str:file_id>", api.file, name="v1-file"),
    path("v1/files/<str:file_id>/content", api.file_content, name="v1-file-content"),
    path("v1/batches", api.batches, name="v1-batches"),
    path("v1/batches/<str:batch_id>", api.batch, name="v1-batch"),
    path("v1/batches/<str:batch_id>/cancel", api.cancel, name="v1-batch-cancel"),
    path("batches/", views.batch_list, name="list"),
    path("batches/<str:batch_id>/cancel/", views.batch_cancel, name="cancel"),
    path("batches/files/<str:file_id>/", views.file_download, name="file-download"),
    path("deployments/<slug:name>/predict-dataset/", views.predict_dataset, name="predict-dataset"),
    path("jobs/<int:pk>/predictions.<str:fmt>", views.predictions_download, name="predictions"),
]
