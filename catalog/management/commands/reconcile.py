from django.core.management.base import BaseCommand, CommandError

from catalog.pipeline.index_maintenance import index_reconcile
from catalog.pipeline.periodic import periodic_task_record_run
from search.vectorstores import VectorStoreError


class Command(BaseCommand):
    help = (
        "Report catalog images indexed in the database but missing from the vector store, "
        "and vectors with no active catalog image; --fix repairs both."
    )

    def add_arguments(self, parser):
        parser.add_argument("--fix", action="store_true", help="upsert missing, delete orphans")

    def handle(self, *args, fix, **options):
        try:
            report = index_reconcile(fix=fix)
        except VectorStoreError as exc:
            raise CommandError(str(exc)) from exc
        if fix:  # from cron instead of beat: the periodic reconcile ran
            periodic_task_record_run(name="catalog.tasks.reconcile_index")
        self.stdout.write(
            f"{len(report.missing)} missing from the vector store, "
            f"{len(report.orphaned)} orphaned vector(s)."
        )
        if report.missing:
            self.stdout.write(f"  missing: {_preview(report.missing)}")
        if report.orphaned:
            self.stdout.write(f"  orphaned: {_preview(report.orphaned)}")
        if fix and not report.in_sync:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Fixed: upserted {len(report.missing) - len(report.requeued)} from cache, "
                    f"queued {len(report.requeued)} for the worker, "
                    f"deleted {len(report.orphaned)} orphan(s)."
                )
            )
        elif not report.in_sync:
            self.stdout.write("Run with --fix to repair.")


def _preview(items, limit=20) -> str:
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" … and {len(items) - limit} more" if len(items) > limit else "")
