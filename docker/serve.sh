#!/usr/bin/env bash
# Runs the web server (gunicorn) and one Celery worker together, for `make run` and for a
# single-container deployment. Ctrl-C, or either process exiting, stops both.
set -euo pipefail

# -B runs celery beat (periodic reconcile and requeue) inside this one worker; with
# several workers, run beat once, on its own (ROLE=beat in docker/entrypoint.sh).
# Both processes size their inference pool to every core they may use (EMBEDDING_THREADS=0)
# and their idle pools sleep, so whichever is busy gets the whole machine. When both are
# busy, the worker runs at a lower priority (nice 10): a search waits for no indexing.
nice -n 10 celery -A visualsearch worker -B --concurrency="${WORKER_CONCURRENCY:-1}" --loglevel=INFO &
worker=$!
gunicorn visualsearch.wsgi -c docker/gunicorn.conf.py &
web=$!

trap 'kill "$worker" "$web" 2>/dev/null || true' INT TERM
wait -n "$worker" "$web" || true
kill "$worker" "$web" 2>/dev/null || true
wait
