import time
from datetime import UTC, datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from catalog.pipeline.periodic import periodic_tasks_state


class Command(BaseCommand):
    help = (
        "When each periodic task (CELERY_BEAT_SCHEDULE) last ran, and which are late: no run "
        "for HEALTH_BEAT_LATE_INTERVALS of their intervals. --check exits 1 when one is late "
        "(for a monitor, or cron where beat is not run)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--since",
            type=float,
            default=None,
            help="Unix time watching began: a task is not late before a few of its "
            "intervals have passed since (default: a task that never ran is late)",
        )
        parser.add_argument("--check", action="store_true", help="exit 1 when a task is late")

    def handle(self, *args, since, check, **options):
        watching_since = datetime.fromtimestamp(since if since is not None else 0, UTC)
        if since is not None and since > time.time():
            raise CommandError("--since is in the future.")
        states = periodic_tasks_state(
            schedule=settings.CELERY_BEAT_SCHEDULE,
            late_after_intervals=settings.HEALTH_BEAT_LATE_INTERVALS,
            watching_since=watching_since,
        )
        for state in states:
            last = state.last_run_at.isoformat(timespec="seconds") if state.last_run_at else "never"
            mark = "LATE" if state.late else "ok"
            self.stdout.write(
                f"{mark:4}  {state.name}  every {state.every_seconds:g} s, last {last}"
            )
        late = [state.name for state in states if state.late]
        if check and late:
            raise CommandError(f"late: {', '.join(late)}", returncode=1)
