from django.apps import AppConfig


class TeachersConfig(AppConfig):
    name = "webapp.teachers"
    label = "teachers"
