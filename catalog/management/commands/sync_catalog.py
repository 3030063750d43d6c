import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from catalog.feeds import FORMATS, FeedUnreadable
from catalog.sync import FAILED, RowResult, SyncReport, catalog_sync

# Without a terminal (cron, CI logs) a progress line this often instead of a bar.
PROGRESS_LINE_SECONDS = 30
_DRY_VERBS = {"created": "create", "updated": "update", "unchanged": "leave"}


class Command(BaseCommand):
    help = (
        "Make the catalog match a feed of an outside catalog: a CSV or JSON Lines file, or "
        "an http(s) URL of one (docs/catalog-sync.md). Exits 1 when a row failed, 2 when "
        "the feed could not be read."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", help="the feed: a .csv or .jsonl file, or an http(s) URL")
        parser.add_argument(
            "--format",
            choices=FORMATS,
            help="the feed's format, when its name does not end in .csv or .jsonl",
        )
        parser.add_argument(
            "--prune",
            action="store_true",
            help="deactivate (never delete) items the feed no longer lists",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="print what would change; write nothing"
        )

    def handle(self, *args, source, format, prune, dry_run, verbosity, **options):
        progress = _Progress(self.stderr)

        def show(row: RowResult) -> None:
            progress.advance()
            if row.outcome == FAILED:
                named = f", {row.external_id}" if row.external_id else ""
                progress.say(self.stderr, f"line {row.line}{named}: {row.code}: {row.detail}")
            elif dry_run:
                changed = f" ({', '.join(row.changed)})" if row.changed else ""
                progress.say(self.stdout, f"{_DRY_VERBS[row.outcome]} {row.external_id}{changed}")
            elif verbosity >= 2:
                changed = f" ({', '.join(row.changed)})" if row.changed else ""
                progress.say(self.stdout, f"{row.outcome} {row.external_id}{changed}")

        try:
            report = catalog_sync(
                source=source,
                format=format,
                prune=prune,
                dry_run=dry_run,
                on_start=progress.start,
                on_row=show,
            )
        except FeedUnreadable as exc:
            raise CommandError(f"{exc.detail} ({exc.code})", returncode=2) from exc
        finally:
            progress.close()
        self._summarize(report, verbosity)
        if report.failed:
            raise CommandError(
                f"{report.failed} row(s) failed; each is listed above with its line.",
                returncode=1,
            )
        if report.prune_refused:
            raise CommandError("--prune deactivated nothing; see above.", returncode=1)

    def _summarize(self, report: SyncReport, verbosity: int) -> None:
        write = self.stdout.write
        if report.dry_run or verbosity >= 2:
            verb = "deactivate" if report.dry_run else "deactivated"
            for external_id, pictures in report.deactivated.items():
                write(f"{verb} {external_id} ({pictures} picture(s))")
        if report.dry_run:
            write("Dry run: nothing was written; this is what a sync would do.")
        write(
            f"{report.rows} rows in {report.feed} ({_size(report.feed_bytes)}): "
            f"created {report.created}, updated {report.updated}, "
            f"unchanged {report.unchanged}, deactivated {len(report.deactivated)}, "
            f"failed {report.failed}."
        )
        write(
            f"{report.new_pictures} new picture(s) "
            f"{'to embed' if report.dry_run else 'queued for embedding'}, "
            f"{_size(report.downloaded_bytes)} of pictures downloaded, {report.seconds:.1f} s."
        )
        if report.prune_refused:
            write(f"Pruning refused: {report.prune_refused}.")
        elif report.unlisted:
            write(
                f"{report.unlisted} item(s) in the catalog are no longer in the feed and stay "
                "active; --prune deactivates them."
            )


class _Progress:
    """A bar on a terminal (tqdm, as import_images shows); elsewhere a line every
    PROGRESS_LINE_SECONDS, so a long sync in a log still shows it is moving."""

    def __init__(self, stderr) -> None:
        self.stderr = stderr
        self.bar: tqdm | None = None
        self.done = self.total = 0
        self.last_line = time.monotonic()

    def start(self, feed) -> None:
        self.total = len(feed.rows)
        self.bar = tqdm(total=self.total, desc="Syncing", unit="row", disable=None)
        if feed.ignored_columns:
            ignored = ", ".join(feed.ignored_columns)
            self.say(self.stderr, f"Not read (unknown columns): {ignored}")

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None and not self.bar.disable:
            self.bar.update()
        elif time.monotonic() - self.last_line >= PROGRESS_LINE_SECONDS:
            self.last_line = time.monotonic()
            self.stderr.write(f"{self.done}/{self.total} rows synced")

    def say(self, stream, line: str) -> None:
        if self.bar is not None and not self.bar.disable:
            self.bar.clear()
            stream.write(line)
            self.bar.refresh()
        else:
            stream.write(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    if count < 1_048_576:
        return f"{count / 1024:.1f} KB"
    return f"{count / 1_048_576:.1f} MB"
