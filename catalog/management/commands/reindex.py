import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog import selectors, services
from catalog.models import CatalogImage, ReindexJob
from catalog.pipeline import jobs
from catalog.pipeline.index_maintenance import index_rebuild_from_cache
from search.vectorstores import VectorStoreError


class Command(BaseCommand):
    help = (
        "Reindex in the background: --all, --stale (embedded with other weights) or --failed "
        "start a job the worker runs in batches, shown here as a progress bar. --from-cache "
        "rebuilds the vector store now from cached embeddings; --pending queues pending images."
    )

    def add_arguments(self, parser):
        scope = parser.add_mutually_exclusive_group()
        for flag, text in (
            ("--all", "every active image"),
            ("--stale", "images not embedded with the current weights"),
            ("--failed", "images whose indexing failed"),
            ("--from-cache", "upsert cached embeddings into the store now"),
            ("--pending", "queue images still pending"),
        ):
            scope.add_argument(flag, action="store_true", help=text)
        scope.add_argument("--cancel", type=int, metavar="JOB_ID", help="cancel a running job")
        parser.add_argument("--no-wait", action="store_true", help="start the job and return")

    def handle(self, *args, **options):
        if options["from_cache"]:
            return self._from_cache()
        if options["pending"]:
            images = selectors.images_needing_index(statuses=[CatalogImage.Status.PENDING])
            count = services.images_retry(images=list(images))
            return self.stdout.write(f"Queued {count} image(s) for indexing.")
        if options["cancel"]:
            return self._cancel(options["cancel"])
        scope = next((s for s in ("all", "stale", "failed") if options[s]), None)
        if scope is None:
            raise CommandError("Say what: --all, --stale, --failed, --from-cache or --pending.")
        job = jobs.reindex_job_start(scope=scope, created_by="manage.py reindex")
        self.stdout.write(f"Started {job} over {job.total} image(s).")
        if not options["no_wait"]:
            self._follow(job)

    def _follow(self, job: ReindexJob) -> None:
        try:
            with tqdm(total=job.total, desc=str(job), unit="img", disable=None) as bar:
                while not job.is_finished:
                    time.sleep(0.5)
                    job.refresh_from_db()
                    bar.update(job.done + job.failed - bar.n)
        except KeyboardInterrupt:
            self.stdout.write(
                f"\nThe job goes on in the background; stop it with: reindex --cancel {job.pk}"
            )
            return
        self.stdout.write(f"{job.get_state_display()}: {job.done} indexed, {job.failed} failed.")

    def _cancel(self, job_id: int) -> None:
        job = ReindexJob.objects.filter(pk=job_id).first()
        if job is None:
            raise CommandError(f"No reindexing job has id {job_id}.")
        jobs.reindex_job_cancel(job=job)
        self.stdout.write(f"Cancelling {job}; it stops after the batch in progress.")

    def _from_cache(self):
        bar = tqdm(desc="Upserting", unit="vec", disable=None)
        try:
            report = index_rebuild_from_cache(
                on_start=lambda total: bar.reset(total=total), on_progress=bar.update
            )
        except VectorStoreError as exc:
            raise CommandError(f"{exc}. Nothing was lost; run the command again.") from exc
        finally:
            bar.close()
        self.stdout.write(
            f"{report.upserted} vector(s) upserted from cache, "
            f"{report.stale_removed} stale vector(s) removed."
        )
        if report.without_cache:
            self.stdout.write(
                f"{len(report.without_cache)} image(s) had no embedding for the current model; "
                "queued for the worker."
            )
