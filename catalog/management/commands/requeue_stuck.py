from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from catalog import jobs, recovery, services


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
        images = services.images_requeue_stuck(older_than=older_than)
        job_ids = jobs.reindex_jobs_resume_stalled(older_than=older_than)
        unsent = recovery.images_send_unqueued()
        retried = recovery.images_retry_failed()
        self.stdout.write(
            f"Requeued {images} image(s) and {len(job_ids)} job(s); sent {len(unsent)} "
            f"unqueued image(s); retried {len(retried)} failed image(s)."
        )
