from django.http import HttpRequest

from webapp.teams.access import user_teams


def teams(request: HttpRequest) -> dict:
    """The header's team switcher: the user's teams and the one they are looking at."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    mine = list(user_teams(request.user))
    slug = request.resolver_match.kwargs.get("slug") if request.resolver_match else None
    slug = slug or request.session.get("team")
    current = next((t for t in mine if t.slug == slug), None)
    return {"my_teams": mine, "current_team": current}
