"""The Celery app; configuration comes from Django settings prefixed CELERY_."""

import os

from celery import Celery
from celery.signals import worker_process_init

# Importing it connects the per-task log line of LOG_FORMAT=json.
import visualsearch.observability  # noqa: F401
from visualsearch.pool_queue import make_pool_queue_kill_safe

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "visualsearch.settings")

app = Celery("visualsearch")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
make_pool_queue_kill_safe()  # a pool process killed while idle must not stall the worker


@worker_process_init.connect
def warm_up_model(**kwargs):
    """Divide the cores between the pool's processes, and build the model in each as it
    starts (after the fork), so the first indexing task does not pay for loading it. In
    the background: the pool gives a new process only a few seconds to report ready."""
    from search.embedding import share_cores, warm_up_in_background

    share_cores(app.conf.worker_concurrency or 1)
    warm_up_in_background()
