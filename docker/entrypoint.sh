#!/usr/bin/env bash
# Container start. The role comes from the first argument or ROLE (default: all):
#   migrate  migrate, ensure an admin login, load the demo catalog if LOAD_DEMO=true; exit.
#            Run once per deploy (compose's `migrate` service, Railway's pre-deploy command),
#            not in every replica.
#   web      gunicorn            worker   a Celery worker       beat   celery beat (run one)
#   all      migrate, then web + worker + beat in one container (`docker run` of the image)
# Worker processes: WORKER_CONCURRENCY, read by the settings (no --concurrency here).
set -euo pipefail

role="${1:-${ROLE:-all}}"
export ROLE="$role"

migrate() {
  python manage.py migrate --noinput
  python manage.py ensure_admin
  if [[ "${LOAD_DEMO:-false}" == "true" ]]; then
    python manage.py load_demo_catalog --if-empty
  fi
}

# The image bakes its exported models into /opt/models; link them into the model cache
# (EMBEDDING_CACHE_DIR, a volume that may predate this image) so no process needs torch.
link_baked_models() {
  local cache="${EMBEDDING_CACHE_DIR:-}" model
  [[ -n "$cache" && -d /opt/models ]] || return 0
  mkdir -p "$cache"
  for model in /opt/models/*.onnx; do
    [[ -e "$model" ]] && ln -sfn "$model" "$cache/$(basename "$model")"
  done
  return 0
}

case "$role" in
  migrate) migrate ;;
  web) link_baked_models; exec gunicorn visualsearch.wsgi -c docker/gunicorn.conf.py ;;
  worker) link_baked_models; exec celery -A visualsearch worker --loglevel=INFO ;;
  beat) exec celery -A visualsearch beat --loglevel=INFO ;;
  all) migrate; link_baked_models; exec docker/serve.sh ;;
  *)
    echo "Unknown role '$role': use migrate, web, worker, beat or all." >&2
    exit 64
    ;;
esac
