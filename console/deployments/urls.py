from django.urls import path

from console.deployments import views

app_name = "deployments"

urlpatterns = [
    path("", views.deployment_list, name="list"),
    path("plotly.min.js", views.plotly_js, name="plotly-js"),
    path("<slug:name>/", views.deployment_detail, name="detail"),
]
