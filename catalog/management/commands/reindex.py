from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog import selectors, services
from catalog.index_maintenance import index_rebuild_from_cache
from catalog.models import CatalogImage
from search.vectorstores import VectorStoreError


class Command(BaseCommand):
    help = (
        "Rebuild the vector store from the embeddings cached in the database (--from-cache), "
        "or queue images for the worker to (re)index."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--from-cache",
            action="store_true",
            help="upsert cached embeddings into the configured store now, without the model",
        )
        parser.add_argument("--pending", action="store_true", help="queue images still pending")
        parser.add_argument("--failed", action="store_true", help="queue images that failed")
        parser.add_argument("--all", action="store_true", help="queue every image")

    def handle(self, *args, from_cache, pending, failed, all, **options):
        if from_cache:
            return self._from_cache()
        Status = CatalogImage.Status
        if all:
            statuses = Status.values
        else:
            wanted = ((Status.PENDING, pending), (Status.FAILED, failed))
            statuses = [status for status, asked in wanted if asked]
        if not statuses:
            raise CommandError("Say which images: --from-cache, --pending, --failed or --all.")
        images = list(selectors.images_needing_index(statuses=statuses))
        count = services.images_retry(images=images)
        self.stdout.write(f"Queued {count} image(s) for indexing.")

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
