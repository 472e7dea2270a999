from django.apps import AppConfig


class PromptsetsConfig(AppConfig):
    name = "webapp.promptsets"
    label = "promptsets"
