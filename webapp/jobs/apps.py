from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "webapp.jobs"
    label = "jobs"
    verbose_name = "Training jobs"

    def ready(self) -> None:
        # Registers its kind of work with webapp.dispatch, for the sweep to walk.
        import webapp.jobs.actions  # noqa: F401
        import webapp.jobs.storage  # noqa: F401  (files follow deleted rows)
