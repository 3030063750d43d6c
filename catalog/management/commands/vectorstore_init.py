from django.core.management.base import BaseCommand, CommandError

from search.vectorstores import DimensionMismatch, VectorStoreError, get_vector_store


class Command(BaseCommand):
    help = (
        "Create the configured vector store's index if it is missing (dimension of the "
        "embedder, cosine metric) and check that an existing one fits."
    )

    def handle(self, *args, **options):
        try:
            description = get_vector_store().prepare()
        except DimensionMismatch as exc:
            raise CommandError(str(exc)) from exc
        except VectorStoreError as exc:
            raise CommandError(f"The vector store could not be prepared: {exc}") from exc
        details = ", ".join(f"{key}={value}" for key, value in description.items())
        self.stdout.write(self.style.SUCCESS(f"Vector store ready: {details}"))
