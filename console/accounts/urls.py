from django.contrib.auth import views as auth_views
from django.urls import path

from console.accounts import views

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("keys/", views.key_list, name="key-list"),
    path("keys/<int:pk>/revoke/", views.key_revoke, name="key-revoke"),
    path("users/", views.user_list, name="user-list"),
    path("users/<int:pk>/", views.user_detail, name="user-detail"),
]
