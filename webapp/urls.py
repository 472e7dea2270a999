from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from webapp.api.api import api, api_not_found
from webapp.health import healthz
from webapp.observability import metrics

admin.site.site_header = "GAD Studio administration"
admin.site.site_title = "GAD Studio admin"

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    # Unknown API paths answer in the API's error shape, not with an HTML page.
    re_path(r"^api/v1/", api_not_found),
    path("healthz", healthz, name="healthz"),
    path("metrics", metrics, name="metrics"),
    path("", include("webapp.teams.urls")),
    path("", include("webapp.promptsets.urls")),
    path("", include("webapp.teachers.urls")),
    path("", include("webapp.jobs.urls")),
    path("", include("webapp.evaluation.urls")),
    path("", include("webapp.judging.urls")),
    path("", include("webapp.annotation.urls")),
]
