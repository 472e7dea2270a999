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
        stored = [
            (TeacherEndpoint, "api_key_encrypted", lambda e: f"#{e.pk} {e.name!r} (team {e.team.slug})"),
            (TrackerAccount, "wandb_api_key_encrypted", lambda a: f"W&B key of team {a.team.slug}"),
            (TrackerAccount, "mlflow_token_encrypted", lambda a: f"MLflow token of team {a.team.slug}"),
        ]  # fmt: skip
        for model, field, name in stored:
            rows = model._default_manager
            for row in rows.exclude(**{field: ""}).order_by("pk"):
                secret = getattr(row, field)
                try:
                    token = crypto.reencrypt(secret)
                except crypto.KeyUnreadable:
                    unreadable.append(name(row))
                    continue
                with transaction.atomic():  # unless the row changed meanwhile
                    done += rows.filter(pk=row.pk, **{field: secret}).update(**{field: token})
        self.stdout.write(f"re-encrypted {done} API key(s) with the current GAD_FIELD_KEY")
        if unreadable:
            raise CommandError(
                f"{len(unreadable)} key(s) decrypt with none of GAD_FIELD_KEY and "
                f"GAD_FIELD_KEY_PREVIOUS; add the key they were written with to "
                f"GAD_FIELD_KEY_PREVIOUS, or have their teams enter them again: "
                + ", ".join(unreadable)
            )
