from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from catalog.pipeline.index_maintenance import index_compact, index_recall_check
from search.vectorstores import VectorStoreError, get_vector_store


class Command(BaseCommand):
    help = (
        "Build or merge the local vector store's approximate index now (what the worker "
        "otherwise does in the background; LOCAL_STORE_INDEX), and print what was done. "
        "With --precision, first rewrite the store's vector file in that precision; with "
        "--check, then measure the index's recall on the store's own vectors."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--rebuild",
            action="store_true",
            help="Build the index again from every vector instead of merging recent writes.",
        )
        parser.add_argument(
            "--precision",
            choices=["float32", "float16"],
            help="Convert the local store's vectors to this precision first (float16: half "
            "the vector file); set LOCAL_STORE_PRECISION to match.",
        )
        parser.add_argument(
            "--check",
            action="store_true",
            help="Then search a sample of the store's own vectors through the index and by "
            "the exact scan, and print recall@10 (a damaged or poor index shows here).",
        )
        parser.add_argument(
            "--sample",
            type=int,
            default=200,
            help="Vectors searched by --check (default 200).",
        )

    def handle(self, *args, **options):
        if options["sample"] < 1:
            raise CommandError("--sample must be at least 1.")
        try:
            if options["precision"]:
                self._convert(options["precision"])
            message = index_compact(rebuild=options["rebuild"])
        except VectorStoreError as exc:
            raise CommandError(f"The vector store could not be compacted: {exc}") from exc
        self.stdout.write(self.style.SUCCESS(message))
        if options["check"]:
            self.stdout.write(index_recall_check(sample=options["sample"]))

    def _convert(self, precision: str) -> None:
        from search.vectorstores.local import LocalVectorStore

        store = get_vector_store()
        if not isinstance(store, LocalVectorStore):
            raise CommandError(f"--precision applies to the local vector store, not {store.name}.")
        self.stdout.write(store.convert_precision(precision).message)
        if precision != settings.LOCAL_STORE_PRECISION:
            self.stdout.write(
                self.style.WARNING(
                    f"LOCAL_STORE_PRECISION is {settings.LOCAL_STORE_PRECISION}: set it to "
                    f"{precision}, or every process warns that the store differs from it."
                )
            )
