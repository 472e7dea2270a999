from django.urls import path

from webapp.teachers import views

urlpatterns = [
    path("teams/<slug:slug>/teachers/", views.teachers, name="teachers"),
    path("teams/<slug:slug>/trackers/", views.trackers, name="trackers"),
    path("teams/<slug:slug>/teachers/new/", views.teacher_create, name="teacher-create"),
    path("teams/<slug:slug>/teachers/<int:pk>/", views.teacher_detail, name="teacher"),
    path(
        "teams/<slug:slug>/teachers/<int:pk>/delete/", views.teacher_delete, name="teacher-delete"
    ),
    path("teams/<slug:slug>/teachers/<int:pk>/test/", views.teacher_test, name="teacher-test"),
    path(
        "teams/<slug:slug>/teachers/<int:pk>/status/", views.teacher_status, name="teacher-status"
    ),
]
