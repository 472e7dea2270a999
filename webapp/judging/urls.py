from django.urls import path

from webapp.judging import views

urlpatterns = [
    path(
        "teams/<slug:slug>/evaluations/<int:pk>/judge/",
        views.evaluation_judge,
        name="evaluation-judge",
    ),
    path(
        "teams/<slug:slug>/evaluations/<int:pk>/judge/<int:run_id>/continue/",
        views.judge_run_continue,
        name="judge-run-continue",
    ),
    path("teams/<slug:slug>/jobs/<int:pk>/sweep/", views.job_sweep, name="job-sweep"),
]
