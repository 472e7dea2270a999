from django.apps import AppConfig


class DemoConfig(AppConfig):
    """The demo's management commands (``make demo``): they set up a team and launch
    work through every other app, and no app imports them."""

    name = "webapp.demo"
    label = "demo"
    verbose_name = "Demo"
