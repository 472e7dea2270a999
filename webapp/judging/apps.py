from django.apps import AppConfig


class JudgingConfig(AppConfig):
    name = "webapp.judging"
    label = "judging"
    verbose_name = "Judging"

    def ready(self) -> None:
        from webapp.evaluation import panels
        from webapp.judging.panels import PANEL

        panels.register(PANEL)
