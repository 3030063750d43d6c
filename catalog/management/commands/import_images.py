from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.importing import images_import, wait_until_settled
from catalog.sources import IMAGE_SUFFIXES, find_image_sources
from search.tags import InvalidTags, normalize_tags


class Command(BaseCommand):
    help = "Add pictures to the catalog from files, folders (recursively) and zip files."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", help="image files, folders or .zip files")
        parser.add_argument("--tags", default="", help="comma-separated tags for every image")
        parser.add_argument(
            "--wait", action="store_true", help="block until every image is indexed or failed"
        )
        parser.add_argument(
            "--timeout", type=float, default=3600, help="seconds --wait waits (default 3600)"
        )

    def handle(self, *args, paths, tags, wait, timeout, **options):
        try:
            tags = normalize_tags(tags)
        except InvalidTags as exc:
            raise CommandError(exc.detail) from exc
        try:
            sources = find_image_sources(paths)
        except FileNotFoundError as exc:
            raise CommandError(str(exc)) from exc
        if not sources:
            raise CommandError(
                f"No image files found (looked for {' '.join(sorted(IMAGE_SUFFIXES))} files "
                "and .zip files of them); check the path."
            )

        with tqdm(total=len(sources), desc="Importing", unit="img", disable=None) as bar:
            report = images_import(sources, tags=tags, on_progress=lambda _: bar.update())
        self.stdout.write(
            f"{len(report.created)} added, {len(report.duplicates)} already in the catalog, "
            f"{len(report.rejected)} rejected."
        )
        for name, reason in report.rejected.items():
            self.stderr.write(f"  rejected {name}: {reason}")
        if wait and report.image_ids:
            self._wait(report.image_ids, timeout)

    def _wait(self, image_ids, timeout):
        with tqdm(total=len(image_ids), desc="Indexing", unit="img", disable=None) as bar:

            def show(settled):
                bar.update(settled - bar.n)

            counts = wait_until_settled(image_ids, timeout=timeout, on_progress=show)
        self.stdout.write(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
        unsettled = sum(n for status, n in counts.items() if status not in ("indexed", "failed"))
        if unsettled:
            raise CommandError(
                f"{unsettled} image(s) were not indexed within {timeout:.0f} s; is a worker "
                "running? Start one with: celery -A visualsearch worker"
            )
        if counts.get("failed"):
            raise CommandError(
                f"{counts['failed']} image(s) failed; see their reasons in the admin or at "
                "/api/images/?status=failed, fix the cause, then run: manage.py reindex --failed"
            )
