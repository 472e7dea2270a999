"""Re-encrypt every stored teacher API key and team tracker key with the current
GAD_FIELD_KEY.

Rotation: set the new key as GAD_FIELD_KEY and the old one in GAD_FIELD_KEY_PREVIOUS on
every process (web and workers), restart them, run this, then remove
GAD_FIELD_KEY_PREVIOUS and restart again (docs/deployment.md, "Operate it").
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from webapp.lib import crypto
from webapp.teachers.models import TeacherEndpoint, TrackerAccount


class Command(BaseCommand):
    help = "Re-encrypt every stored teacher API key with the current GAD_FIELD_KEY."

    def handle(self, *args, **options) -> None:
        done, unreadable = 0, []
        for endpoint in TeacherEndpoint.objects.exclude(api_key_encrypted="").order_by("pk"):
            try:
                token = crypto.reencrypt(endpoint.api_key_encrypted)
            except crypto.KeyUnreadable:
                unreadable.append(f"#{endpoint.pk} {endpoint.name!r} (team {endpoint.team.slug})")
                continue
            with transaction.atomic():
                updated = TeacherEndpoint.objects.filter(
                    pk=endpoint.pk, api_key_encrypted=endpoint.api_key_encrypted
                ).update(api_key_encrypted=token)
            done += updated
        for account in TrackerAccount.objects.order_by("pk"):
            for field in ("wandb_api_key_encrypted", "mlflow_token_encrypted"):
                stored = getattr(account, field)
                if not stored:
                    continue
                try:
                    token = crypto.reencrypt(stored)
                except crypto.KeyUnreadable:
                    unreadable.append(f"{field[:-10]} of team {account.team.slug}")
                    continue
                done += TrackerAccount.objects.filter(pk=account.pk, **{field: stored}).update(
                    **{field: token}
                )
        self.stdout.write(f"re-encrypted {done} API key(s) with the current GAD_FIELD_KEY")
        if unreadable:
            raise CommandError(
                f"{len(unreadable)} key(s) decrypt with none of GAD_FIELD_KEY and "
                f"GAD_FIELD_KEY_PREVIOUS; add the key they were written with to "
                f"GAD_FIELD_KEY_PREVIOUS, or have their teams enter them again: "
                + ", ".join(unreadable)
            )
