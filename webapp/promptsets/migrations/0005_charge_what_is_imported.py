"""A prompt set's size is what its rows hold, not its file's size (a small compressed file
may hold far more): existing sets are charged an estimate from their rows, their
messages twice (the plain text column holds them once more), their teacher answers and
ids, in characters (trainer.data.stored_bytes counts UTF-8 bytes for new imports)."""

from django.db import migrations
from django.db.models import Sum
from django.db.models.functions import Coalesce, Length


def charge_rows(apps, schema_editor):
    PromptSet = apps.get_model("promptsets", "PromptSet")
    Prompt = apps.get_model("promptsets", "Prompt")
    for prompt_set in PromptSet.objects.all():
        sums = Prompt.objects.filter(prompt_set=prompt_set).aggregate(
            text=Coalesce(Sum(Length("text")), 0),
            teacher=Coalesce(Sum(Length("teacher_response")), 0),
            ids=Coalesce(Sum(Length("external_id")), 0),
        )
        size = 2 * sums["text"] + sums["teacher"] + sums["ids"]
        PromptSet.objects.filter(pk=prompt_set.pk).update(size_bytes=size)


class Migration(migrations.Migration):
    dependencies = [
        ("promptsets", "0004_upload_claim"),
    ]

    operations = [
        migrations.RunPython(charge_rows, migrations.RunPython.noop),
    ]
