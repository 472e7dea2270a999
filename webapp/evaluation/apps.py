from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "webapp.evaluation"
    label = "evaluation"
    verbose_name = "Evaluation"

    def ready(self) -> None:
        # Registers its kind of work with webapp.dispatch, for the sweep to walk.
        import webapp.evaluation.actions  # noqa: F401
