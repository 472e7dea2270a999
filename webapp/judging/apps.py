from django.apps import AppConfig


class JudgingConfig(AppConfig):
    name = "webapp.judging"
    label = "judging"
    verbose_name = "Judging"

    def ready(self) -> None:
        import webapp.judging.actions  # noqa: F401  (registers its kind of work)
        from webapp.evaluation import panels
        from webapp.judging.panels import PANEL

        panels.register(PANEL)
