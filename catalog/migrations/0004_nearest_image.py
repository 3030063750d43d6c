# Near-duplicates: each image's nearest other image and their similarity (issue #12).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("catalog", "0003_indexing_reliability"),
    ]

    operations = [
        migrations.AddField(
            model_name="catalogimage",
            name="nearest_image",
            field=models.ForeignKey(
                blank=True,
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to="catalog.catalogimage",
            ),
        ),
        migrations.AddField(
            model_name="catalogimage",
            name="nearest_similarity",
            field=models.FloatField(blank=True, db_index=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="catalogimage",
            name="duplicate_checked_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
    ]
