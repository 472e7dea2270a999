from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "webapp.jobs"
    label = "jobs"
    verbose_name = "Training jobs"

    def ready(self) -> None:
        # Registers its kind of work with webapp.dispatch, for the sweep to walk.
        import webapp.jobs.actions  # noqa: F401
