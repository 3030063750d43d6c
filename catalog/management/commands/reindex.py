from django.core.management.base import BaseCommand, CommandError

from catalog import selectors, services
from catalog.models import CatalogImage


class Command(BaseCommand):
    help = "Queue catalog images for (re)indexing by the worker."

    def add_arguments(self, parser):
        parser.add_argument("--pending", action="store_true", help="images still pending")
        parser.add_argument("--failed", action="store_true", help="images whose indexing failed")
        parser.add_argument("--all", action="store_true", help="every image")

    def handle(self, *args, pending, failed, all, **options):
        Status = CatalogImage.Status
        if all:
            statuses = Status.values
        else:
            statuses = [
                s for s, wanted in ((Status.PENDING, pending), (Status.FAILED, failed)) if wanted
            ]
        if not statuses:
            raise CommandError("Say which images: --pending, --failed or --all.")
        images = list(selectors.images_needing_index(statuses=statuses))
        count = services.images_retry(images=images)
        self.stdout.write(f"Queued {count} image(s) for indexing.")
