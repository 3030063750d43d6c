# When each periodic task last ran, so a stopped celery beat shows in the health report
# (issue #16).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0004_nearest_image"),
    ]

    operations = [
        migrations.CreateModel(
            name="PeriodicTaskRun",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "name",
                    models.CharField(
                        help_text="The Celery task's name.", max_length=200, unique=True
                    ),
                ),
                ("last_run_at", models.DateTimeField()),
            ],
        ),
    ]
