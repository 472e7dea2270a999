from django.http import HttpRequest

from webapp.teams.models import Membership


def teams(request: HttpRequest) -> dict:
    """The header: the user's teams (switcher), the one being looked at and their role in it."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    memberships = Membership.objects.filter(user=request.user).select_related("team")
    roles = {m.team.slug: m.role for m in memberships}
    mine = sorted((m.team for m in memberships), key=lambda t: t.name)
    slug = request.resolver_match.kwargs.get("slug") if request.resolver_match else None
    slug = slug or request.session.get("team")
    current = next((t for t in mine if t.slug == slug), None)
    return {
        "my_teams": mine,
        "current_team": current,
        "current_role": roles.get(current.slug) if current else None,
    }
