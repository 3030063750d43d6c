"""gunicorn settings for make run and the container (`gunicorn -c docker/gunicorn.conf.py`)."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
# Request threads only wait for I/O and preprocess; every forward pass of the process
# runs on its one inference thread (search.embedding.encoder), so more threads here do
# not start more math pools.
threads = int(os.environ.get("WEB_THREADS", "4"))
worker_class = "gthread"
# The app alone decides whom to believe about the client's protocol (TRUSTED_PROXY_NETWORKS,
# visualsearch.middleware): gunicorn's own rule (X-Forwarded-Proto from FORWARDED_ALLOW_IPS,
# often "*") would otherwise reach Django once the middleware has dropped the header.
secure_scheme_headers = {}
timeout = 120  # the first search in a process may wait for the model to load
# With LOG_FORMAT=json the app logs one JSON line per request itself.
accesslog = None if os.environ.get("LOG_FORMAT") == "json" else "-"


def post_worker_init(worker):
    """Build the model in the background once this worker process exists (after the fork),
    so the first search does not pay for loading it."""
    from search.embedding import warm_up_in_background

    warm_up_in_background(worker.log)
