from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from catalog.pipeline import recovery
from catalog.pipeline.periodic import periodic_task_record_run


class Command(BaseCommand):
    help = (
        "Queue again images left pending or processing, and reindexing jobs without "
        "progress, for longer than STUCK_AFTER_MINUTES; send pending images that never reached "
        "the broker; retry transient failures (for cron, when celery beat is not run)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--minutes", type=int, default=None, help="override the threshold")

    def handle(self, *args, minutes, **options):
        older_than = timedelta(minutes=minutes or settings.STUCK_AFTER_MINUTES)
        # Run from cron instead of beat, it stands for both sweeps beat would send (this one
        # sends unqueued images too), so the health report does not call them late.
        for task_name in ("catalog.tasks.requeue_stuck", "catalog.tasks.send_unqueued"):
            periodic_task_record_run(name=task_name)
        swept = recovery.catalog_sweep(older_than=older_than)
        self.stdout.write(
            f"Requeued {swept.requeued} image(s) and {len(swept.resumed_jobs)} job(s); sent "
            f"{len(swept.sent)} unqueued image(s); retried {len(swept.retried)} failed image(s)."
        )
