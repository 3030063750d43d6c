"""The project's Celery app, for tests, in which decoding one picture kills the worker.

`celery -A tests.integration.killer_app worker` with KILL_SHA256 set: the pool process
that decodes those bytes dies with SIGKILL, as the kernel's out-of-memory killer would do.
"""

import hashlib
import os
import signal

from celery.signals import worker_process_init

from visualsearch.celery import app

__all__ = ["app"]


@worker_process_init.connect
def _kill_on_one_picture(**kwargs):
    from catalog import services
    from catalog.pipeline import indexing

    decode_upload = indexing.decode_upload

    def decode_or_die(data: bytes, **options):
        if hashlib.sha256(data).hexdigest() == os.environ["KILL_SHA256"]:
            os.kill(os.getpid(), signal.SIGKILL)
        return decode_upload(data, **options)

    indexing.decode_upload = decode_or_die  # indexing
    services.decode_upload = decode_or_die  # reading uploads (a bulk upload's pictures)
