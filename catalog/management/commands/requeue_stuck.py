from datetime import timedelta

from django.conf import settings
from django.core.management.base import BaseCommand

from catalog import jobs, services


class Command(BaseCommand):
    help = (
        "Queue again images left pending or processing, and reindexing jobs without "
        "progress, for longer than STUCK_AFTER_MINUTES (for cron, when celery beat is not run)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--minutes", type=int, default=None, help="override the threshold")

    def handle(self, *args, minutes, **options):
        older_than = timedelta(minutes=minutes or settings.STUCK_AFTER_MINUTES)
        images = services.images_requeue_stuck(older_than=older_than)
        job_ids = jobs.reindex_jobs_resume_stalled(older_than=older_than)
        self.stdout.write(f"Requeued {images} image(s) and {len(job_ids)} job(s).")
