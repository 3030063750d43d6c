"""gunicorn settings for make run and the container (`gunicorn -c docker/gunicorn.conf.py`)."""

import os
import threading

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = "gthread"
timeout = 120  # the first search in a process may wait for the model to load
accesslog = "-"


def post_worker_init(worker):
    """Build the model in the background once this worker process exists (after the fork),
    so the first search does not pay for loading it."""

    def warm_up():
        from search.embedding import get_encoder

        try:
            get_encoder()
        except Exception:  # the search API reports the same error to callers, with what to do
            worker.log.exception("Could not load the embedding model")

    threading.Thread(target=warm_up, name="warm-up-model", daemon=True).start()
