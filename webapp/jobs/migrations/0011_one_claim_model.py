"""A job is held by a worker's claim like every other kind of work (webapp.claims): the
worker's name and heartbeat become ``claimed_by`` and ``claimed_until``, the heartbeat
time plus the staleness allowed (GAD_HEARTBEAT_STALE_S), which is when the sweep now
hands a silent job on."""

from datetime import timedelta

from django.conf import settings
from django.db import migrations, models
from django.db.models import F


def heartbeat_to_deadline(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    stale = timedelta(seconds=settings.GAD_HEARTBEAT_STALE_S)
    Job.objects.filter(claimed_until__isnull=False).update(claimed_until=F("claimed_until") + stale)


def deadline_to_heartbeat(apps, schema_editor):
    Job = apps.get_model("jobs", "Job")
    stale = timedelta(seconds=settings.GAD_HEARTBEAT_STALE_S)
    Job.objects.filter(claimed_until__isnull=False).update(claimed_until=F("claimed_until") - stale)


class Migration(migrations.Migration):

    dependencies = [
        ("jobs", "0010_task_sent_at"),
    ]

    operations = [
        migrations.RenameField(model_name="job", old_name="worker", new_name="claimed_by"),
        migrations.RenameField(model_name="job", old_name="heartbeat_at", new_name="claimed_until"),
        migrations.RunPython(heartbeat_to_deadline, deadline_to_heartbeat),
        migrations.AlterField(
            model_name="job",
            name="claimed_by",
            field=models.CharField(
                blank=True, help_text="The worker holding it (node:pid:thread).", max_length=200
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="claimed_until",
            field=models.DateTimeField(
                blank=True, help_text="The claim lapses then unless its worker renews it.", null=True
            ),
        ),
        migrations.AlterField(
            model_name="job",
            name="guard",
            field=models.CharField(
                choices=[("off", "Off"), ("pause", "Pause the job"), ("stop", "Stop the job")],
                default="off",
                help_text="What to do when a health alarm fires (the health guard).",
                max_length=10,
            ),
        ),
    ]
