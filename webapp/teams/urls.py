from django.urls import path

from webapp.teams import views

urlpatterns = [
    path("", views.home, name="home"),
    path("profile/", views.profile, name="profile"),
    path("profile/tokens/<int:token_id>/revoke/", views.revoke_token, name="revoke-token"),
    path("teams/<slug:slug>/members/", views.members, name="team-members"),
    path("teams/<slug:slug>/usage/", views.usage, name="team-usage"),
    path(
        "teams/<slug:slug>/members/<int:user_id>/remove/",
        views.remove_member,
        name="team-member-remove",
    ),
]
