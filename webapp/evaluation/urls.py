from django.urls import path

from webapp.evaluation import views

urlpatterns = [
    path("teams/<slug:slug>/evaluations/", views.evaluation_list, name="evaluations"),
    path("teams/<slug:slug>/evaluations/new/", views.evaluation_create, name="evaluation-create"),
    path("teams/<slug:slug>/evaluations/<int:pk>/", views.evaluation_detail, name="evaluation"),
    path(
        "teams/<slug:slug>/evaluations/<int:pk>/status/",
        views.evaluation_status,
        name="evaluation-status",
    ),
    path(
        "teams/<slug:slug>/evaluations/<int:pk>/generate/",
        views.evaluation_generate,
        name="evaluation-generate",
    ),
    path(
        "teams/<slug:slug>/evaluations/<int:pk>/delete/",
        views.evaluation_delete,
        name="evaluation-delete",
    ),
]
