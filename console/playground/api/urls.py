from django.urls import path

from console.playground.api.views import ExplainCancelView, ExplainView, SessionViewSet, SharedSessionView

item = {"get": "retrieve", "patch": "partial_update", "put": "update", "delete": "destroy"}

urlpatterns = [
    path("deployments/<slug:name>/explain", ExplainView.as_view(), name="api-deployment-explain"),
    path("deployments/<slug:name>/explain/<int:job>/cancel", ExplainCancelView.as_view(),
         name="api-deployment-explain-cancel"),
    path("playground/sessions/", SessionViewSet.as_view({"get": "list", "post": "create"}),
         name="api-playground-session-list"),
    path("playground/sessions/<int:pk>/", SessionViewSet.as_view(item), name="api-playground-session-detail"),
    path("playground/sessions/<int:pk>/share", SessionViewSet.as_view({"post": "share", "delete": "unshare"}),
         name="api-playground-session-share"),
    path("playground/shared/<str:token>/", SharedSessionView.as_view(), name="api-playground-shared"),
]
