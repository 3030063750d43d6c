"""Container health check for every role: `python docker/healthcheck.py [ROLE]`.

Exit 0 when healthy, 1 when not (what Docker's HEALTHCHECK and compose expect).
- web, all: GET /api/health/live/ (liveness) on this container's port must answer 200. It
  is sent to 127.0.0.1 with `Host: localhost`, so `localhost` must be in ALLOWED_HOSTS.
  Liveness, not readiness: a Redis or Pinecone outage is no reason to mark this container
  unhealthy (and have it restarted, or a deploy held back); readiness at /api/health/ready/
  says what is down.
- worker: this container's Celery worker answers a ping through the broker.
- beat: celery beat rewrites its schedule file at least every few minutes while it runs.
- migrate: a one-shot role; nothing to check.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.request
from pathlib import Path

BEAT_STALE_AFTER_SECONDS = 10 * 60  # beat syncs its schedule every 3 to 5 minutes
LIVENESS = "/api/health/live/"


def web_is_healthy() -> bool:
    port = os.environ.get("PORT", "8000")
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{LIVENESS}", headers={"Host": "localhost"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status == 200
    except OSError as error:  # URLError and HTTPError are OSErrors
        print(f"{LIVENESS}: {error}", file=sys.stderr)
        return False


def worker_is_healthy() -> bool:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "visualsearch.settings")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import django

    django.setup()
    from visualsearch.celery import app

    # The worker's default node name is celery@<hostname>, the container's host name.
    node = f"celery@{socket.gethostname()}"
    replies = app.control.ping(destination=[node], timeout=5)
    if not replies:
        print(f"{node} did not answer a ping", file=sys.stderr)
    return bool(replies)


def beat_is_healthy() -> bool:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "visualsearch.settings")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from django.conf import settings

    schedule = Path(settings.CELERY_BEAT_SCHEDULE_FILENAME)
    # shelve adds a suffix (.db, .dat, ...) depending on the dbm module Python has
    files = [schedule, *schedule.parent.glob(schedule.name + ".*")]
    newest = max((f.stat().st_mtime for f in files if f.exists()), default=0.0)
    if time.time() - newest > BEAT_STALE_AFTER_SECONDS:
        print(f"{schedule} not written for {BEAT_STALE_AFTER_SECONDS} s", file=sys.stderr)
        return False
    return True


CHECKS = {
    "web": web_is_healthy,
    "all": web_is_healthy,
    "worker": worker_is_healthy,
    "beat": beat_is_healthy,
    "migrate": lambda: True,
}


if __name__ == "__main__":
    role = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ROLE", "all")
    sys.exit(0 if CHECKS[role]() else 1)
