from django.urls import path

from webapp.jobs import views

urlpatterns = [
    path("teams/<slug:slug>/", views.dashboard, name="team"),
    path("teams/<slug:slug>/jobs/", views.job_list, name="jobs"),
    path("teams/<slug:slug>/jobs/new/", views.job_launch, name="job-launch"),
    path("teams/<slug:slug>/jobs/<int:pk>/", views.job_detail, name="job"),
    path("teams/<slug:slug>/jobs/<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
    path("teams/<slug:slug>/jobs/<int:pk>/resume/", views.job_resume, name="job-resume"),
    path("teams/<slug:slug>/jobs/<int:pk>/delete/", views.job_delete, name="job-delete"),
    path("teams/<slug:slug>/jobs/<int:pk>/metrics.json", views.job_metrics, name="job-metrics"),
    path("teams/<slug:slug>/jobs/<int:pk>/samples/", views.job_samples, name="job-samples"),
    path(
        "teams/<slug:slug>/jobs/<int:pk>/tensorboard.tar.gz",
        views.job_tensorboard,
        name="job-tensorboard",
    ),
    path("teams/<slug:slug>/compare/", views.jobs_compare, name="jobs-compare"),
    path("teams/<slug:slug>/storage/", views.team_storage, name="team-storage"),
    path(
        "teams/<slug:slug>/checkpoints/<int:pk>/download/",
        views.checkpoint_download,
        name="checkpoint-download",
    ),
    path(
        "teams/<slug:slug>/checkpoints/<int:pk>/final/",
        views.checkpoint_mark_final,
        name="checkpoint-final",
    ),
    path(
        "teams/<slug:slug>/checkpoints/<int:pk>/delete/",
        views.checkpoint_delete,
        name="checkpoint-delete",
    ),
]
