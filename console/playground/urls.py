from django.urls import path

from console.playground import views

app_name = "playground"

urlpatterns = [
    path("", views.playground, name="page"),
    path("<int:pk>/", views.session_page, name="session"),
    path("shared/<str:token>/", views.shared_page, name="shared"),
]
