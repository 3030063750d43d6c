#!/usr/bin/env bash
# Runs the web server (gunicorn) and one Celery worker together, for `make run` and for a
# single-container deployment. Ctrl-C, or either process exiting, stops both.
set -euo pipefail

# -B runs celery beat (periodic reconcile and requeue) inside this one worker; with
# several workers, run beat once, on its own (ROLE=beat in docker/entrypoint.sh).
# Threads (EMBEDDING_THREADS=0): the web process's inference pool uses every core, for the
# shortest searches; the worker's WORKER_CONCURRENCY pool processes divide the cores, for
# the most images per second. Idle pools sleep, so whichever side is busy gets the
# machine; when both are, the worker runs at a lower priority (nice 10), so a search
# waits for no indexing.
nice -n 10 celery -A visualsearch worker -B --loglevel=INFO &
worker=$!
gunicorn visualsearch.wsgi -c docker/gunicorn.conf.py &
web=$!

trap 'kill "$worker" "$web" 2>/dev/null || true' INT TERM
wait -n "$worker" "$web" || true
kill "$worker" "$web" 2>/dev/null || true
wait
