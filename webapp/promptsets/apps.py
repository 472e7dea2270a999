from django.apps import AppConfig


class PromptsetsConfig(AppConfig):
    name = "webapp.promptsets"
    label = "promptsets"

    def ready(self) -> None:
        # Registers its kind of work with webapp.dispatch, for the sweep to walk.
        import webapp.promptsets.ingest  # noqa: F401
