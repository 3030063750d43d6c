#!/usr/bin/env bash
# Runs the web server (gunicorn), one Celery worker and celery beat together, for `make run`
# and for a single-container deployment (ROLE=all). Ctrl-C stops all three.
#
# Supervision: the worker or the web server exiting stops everything, loudly (exit 1), so
# that make, or the container's restart policy, sees it. celery beat exiting (killed for
# memory, say) is started again at once: without it no periodic task is ever sent again
# (outbox sweep, requeue of stuck images, automatic retries, reconcile), while web and
# worker look healthy. A beat that keeps dying soon after it starts is broken, not
# unlucky: after BEAT_MAX_QUICK_EXITS such exits in a row everything stops, loudly.
# Beat is a process of its own here, not the worker's -B child: a -B beat that dies is
# restarted by no one, and its worker goes on as if nothing happened.
# With several workers, run beat once, on its own (ROLE=beat in docker/entrypoint.sh).
#
# Threads (EMBEDDING_THREADS=0): the web process's inference pool uses every core, for the
# shortest searches; the worker's WORKER_CONCURRENCY pool processes divide the cores, for
# the most images per second. Idle pools sleep, so whichever side is busy gets the
# machine; when both are, the worker runs at a lower priority (nice 10), so a search
# waits for no indexing.
set -euo pipefail

# A beat that exits within this many seconds of starting counts as a quick exit.
BEAT_QUICK_EXIT_SECONDS="${BEAT_QUICK_EXIT_SECONDS:-60}"
BEAT_MAX_QUICK_EXITS="${BEAT_MAX_QUICK_EXITS:-3}"

say() { echo "serve.sh: $*" >&2; }

start_beat() {
  celery -A visualsearch beat --loglevel=INFO &
  beat=$!
  beat_started=$SECONDS
}

stop_all() {
  trap - INT TERM
  kill "$worker" "$web" "$beat" 2>/dev/null || true
  wait || true
  exit "$1"
}

nice -n 10 celery -A visualsearch worker --loglevel=INFO &
worker=$!
gunicorn visualsearch.wsgi -c docker/gunicorn.conf.py &
web=$!
start_beat
trap 'stop_all 0' INT TERM

quick_exits=0
while true; do
  wait -n || true
  if ! kill -0 "$worker" 2>/dev/null; then
    say "the Celery worker exited; stopping the web server and celery beat."
    stop_all 1
  fi
  if ! kill -0 "$web" 2>/dev/null; then
    say "the web server exited; stopping the Celery worker and celery beat."
    stop_all 1
  fi
  if ! kill -0 "$beat" 2>/dev/null; then
    wait "$beat" && status=0 || status=$?
    lived=$((SECONDS - beat_started))
    if ((lived < BEAT_QUICK_EXIT_SECONDS)); then
      quick_exits=$((quick_exits + 1))
    else
      quick_exits=0
    fi
    if ((quick_exits >= BEAT_MAX_QUICK_EXITS)); then
      say "celery beat exited (status $status) $quick_exits times in a row within" \
        "$BEAT_QUICK_EXIT_SECONDS s of starting; no periodic task can run without it," \
        "so everything stops. See beat's log above."
      stop_all 1
    fi
    say "celery beat exited (status $status) after $lived s; starting it again, since" \
      "periodic tasks (outbox sweep, requeue, retries, reconcile) stop without it."
    sleep 1
    start_beat
  fi
done
