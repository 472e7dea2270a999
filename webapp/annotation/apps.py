from django.apps import AppConfig


class AnnotationConfig(AppConfig):
    name = "webapp.annotation"
    label = "annotation"
    verbose_name = "Annotation"

    def ready(self) -> None:
        from webapp.annotation.panels import PANEL
        from webapp.evaluation import panels

        panels.register(PANEL)
