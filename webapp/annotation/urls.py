from django.urls import path

from webapp.annotation import views

urlpatterns = [
    path(
        "teams/<slug:slug>/evaluations/<int:pk>/campaigns/new/",
        views.campaign_create,
        name="campaign-create",
    ),
    path("teams/<slug:slug>/campaigns/<int:pk>/", views.campaign_results, name="campaign"),
    path(
        "teams/<slug:slug>/campaigns/<int:pk>/close/",
        views.campaign_close,
        name="campaign-close",
    ),
    path(
        "teams/<slug:slug>/campaigns/<int:pk>/export/",
        views.campaign_export,
        name="campaign-export",
    ),
    # Annotation: items are addressed by the assignment's opaque key only.
    path("teams/<slug:slug>/annotate/", views.annotate_home, name="annotate"),
    path("teams/<slug:slug>/annotate/<int:pk>/", views.annotate_campaign, name="annotate-campaign"),
    path("teams/<slug:slug>/annotate/<int:pk>/undo/", views.annotate_undo, name="annotate-undo"),
    path("teams/<slug:slug>/annotate/items/<str:key>/", views.annotate_item, name="annotate-item"),
    path(
        "teams/<slug:slug>/annotate/items/<str:key>/vote/",
        views.annotate_vote,
        name="annotate-vote",
    ),
    path(
        "teams/<slug:slug>/annotate/items/<str:key>/skip/",
        views.annotate_skip,
        name="annotate-skip",
    ),
]
