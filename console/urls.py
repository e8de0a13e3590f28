from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from console.core import views as core_views

api_patterns = [
    path("", include("console.registry.api.urls")),
    path("", include("console.jobs.api.urls")),
    path("", include("console.audit.api.urls")),
    path("", include("console.accounts.api.urls")),
    path("", include("console.deployments.api.urls")),
    path("", include("console.inference.api.urls")),  # /api/deployments/{name}/predict
    path("", include("console.evaluation.api.urls")),
    path("", include("console.playground.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
]

urlpatterns = [
    path("healthz", core_views.healthz, name="healthz"),
    path("readyz", core_views.readyz, name="readyz"),
    path("i18n/setlang/", core_views.set_language, name="set_language"),  # also stores it on the user
    path("i18n/", include("django.conf.urls.i18n")),  # set_language: the language switcher posts here
    path("api/", include(api_patterns)),
    path("", include("console.batches.urls")),
    path("", include("console.inference.urls")),
    path("admin/", admin.site.urls),
    path("", include("console.accounts.urls")),
    path("jobs/", include("console.jobs.urls")),
    path("audit/", include("console.audit.urls")),
    path("deployments/", include("console.deployments.urls")),
    path("playground/", include("console.playground.urls")),
    path("", include("console.evaluation.urls")),
    path("", include("console.registry.urls")),
]

handler404 = "console.core.views.not_found"
handler500 = "console.core.views.server_error"
