from django.urls import path

from webapp.promptsets import views

urlpatterns = [
    path("teams/<slug:slug>/prompt-sets/", views.prompt_sets, name="prompt-sets"),
    path("teams/<slug:slug>/prompt-sets/<int:pk>/", views.prompt_set_detail, name="prompt-set"),
    path(
        "teams/<slug:slug>/prompt-sets/<int:pk>/split/",
        views.prompt_set_split,
        name="prompt-set-split",
    ),
    path(
        "teams/<slug:slug>/prompt-sets/<int:pk>/download/",
        views.prompt_set_download,
        name="prompt-set-download",
    ),
    path(
        "teams/<slug:slug>/prompt-sets/<int:pk>/delete/",
        views.prompt_set_delete,
        name="prompt-set-delete",
    ),
    path(
        "teams/<slug:slug>/prompt-sets/uploads/<int:pk>/",
        views.upload_detail,
        name="prompt-set-upload",
    ),
    path(
        "teams/<slug:slug>/prompt-sets/uploads/<int:pk>/status/",
        views.upload_status,
        name="prompt-set-upload-status",
    ),
]
