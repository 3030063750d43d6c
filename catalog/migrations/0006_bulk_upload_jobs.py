# Bulk uploads run as background jobs, with their progress and refusals (issue #16).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0005_periodic_task_runs"),
    ]

    operations = [
        migrations.CreateModel(
            name="BulkUploadJob",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "state",
                    models.CharField(
                        choices=[("queued", "Queued"), ("running", "Running"), ("done", "Done")],
                        db_index=True,
                        default="queued",
                        max_length=10,
                    ),
                ),
                ("files", models.JSONField(default=list)),
                (
                    "tags",
                    models.JSONField(blank=True, default=list, help_text="Added to every image."),
                ),
                (
                    "total",
                    models.PositiveIntegerField(
                        default=0, help_text="Pictures found in the files."
                    ),
                ),
                ("read", models.PositiveIntegerField(default=0)),
                ("created", models.PositiveIntegerField(default=0)),
                ("duplicates", models.PositiveIntegerField(default=0)),
                ("failed", models.PositiveIntegerField(default=0)),
                ("attempts", models.PositiveSmallIntegerField(default=0, editable=False)),
                ("created_by", models.CharField(blank=True, max_length=150)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                ("files_removed_at", models.DateTimeField(blank=True, null=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "ordering": ["-created_at", "-id"],
            },
        ),
        migrations.CreateModel(
            name="BulkUploadFailure",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("position", models.PositiveIntegerField()),
                ("name", models.TextField()),
                ("reason", models.TextField()),
                (
                    "job",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="failures",
                        to="catalog.bulkuploadjob",
                    ),
                ),
            ],
            options={
                "ordering": ["job", "position"],
                "constraints": [
                    models.UniqueConstraint(
                        fields=("job", "position"), name="one_failure_per_picture"
                    )
                ],
            },
        ),
    ]
