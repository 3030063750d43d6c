#!/usr/bin/env bash
# Container start: migrate, make sure an admin login exists, optionally load the demo
# catalog, then serve web + worker + beat (ROLE=web, worker or beat runs just one).
set -euo pipefail

python manage.py migrate --noinput
python manage.py ensure_admin
if [[ "${LOAD_DEMO:-false}" == "true" ]]; then
  python manage.py load_demo_catalog --if-empty
fi

case "${ROLE:-all}" in
  web) exec gunicorn visualsearch.wsgi -c docker/gunicorn.conf.py ;;
  worker) exec celery -A visualsearch worker --loglevel=INFO ;;
  beat) exec celery -A visualsearch beat --loglevel=INFO ;;
  *) exec docker/serve.sh ;;
esac
