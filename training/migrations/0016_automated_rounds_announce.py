"""Rounds automated before ``Round.announce_judgments`` existed: theirs are announced too."""

from django.db import migrations


def announce(apps, schema_editor):
    Automation = apps.get_model("training", "Automation")
    Round = apps.get_model("annotation", "Round")
    automated = Automation.objects.values("round_id")
    Round.objects.filter(pk__in=automated).update(announce_judgments=True)


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0015_run_eval_split"),
        ("annotation", "0013_round_announce_judgments"),
    ]
    operations = [migrations.RunPython(announce, migrations.RunPython.noop)]
