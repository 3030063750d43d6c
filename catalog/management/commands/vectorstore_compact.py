from django.core.management.base import BaseCommand, CommandError

from catalog.pipeline.index_maintenance import index_compact
from search.vectorstores import VectorStoreError


class Command(BaseCommand):
    help = (
        "Build or merge the local vector store's approximate index now (what the worker "
        "otherwise does in the background; LOCAL_STORE_INDEX), and print what was done."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--rebuild",
            action="store_true",
            help="Build the index again from every vector instead of merging recent writes.",
        )

    def handle(self, *args, **options):
        try:
            message = index_compact(rebuild=options["rebuild"])
        except VectorStoreError as exc:
            raise CommandError(f"The vector store could not be compacted: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(message))
