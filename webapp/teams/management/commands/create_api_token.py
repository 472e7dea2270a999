from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.teams.actions import create_api_token


class Command(BaseCommand):
    help = "Create a personal API token for USER and print it once (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="What the token is for.")

    def handle(self, username, name, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}; create it first (createsuperuser).")
        _, plain = create_api_token(user, name)
        self.stdout.write(plain)
