from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction

from webapp.teams.actions import create_team
from webapp.teams.models import Team


class Command(BaseCommand):
    help = "Create (or reset the password of) the demo user and the demo team. Idempotent."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-password")
        parser.add_argument("--team", default="demo")

    @transaction.atomic
    def handle(self, username, password, team, **options):
        User = get_user_model()
        user, _ = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com"}
        )
        user.set_password(password)
        user.is_staff = user.is_superuser = True
        user.save()
        if not Team.objects.filter(slug=team).exists():
            create_team("Demo team", team, owner=user)
        self.stdout.write(f"login: {username} / {password}")
