#!/bin/sh
# The roles of the Tauon image. `web` migrates first, as `make up` does.
set -eu

case "${1:-web}" in
  web)
    python manage.py migrate --noinput
    python manage.py ensure_admin
    # Queued for the worker; idempotent, so a restart finds them ready and does nothing.
    python manage.py import_bundled || echo "WARNING: could not queue the bundled models; retry with: docker compose exec web python manage.py import_bundled" >&2
    exec uvicorn console.asgi:application --host 0.0.0.0 --port 8000 --lifespan off \
      --proxy-headers --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-*}"
    ;;
  worker)
    exec celery -A workers worker -Q "${WORKER_QUEUES:-default,jobs}" --concurrency "${WORKER_CONCURRENCY:-2}" \
      -n "worker@%h" -l "${LOG_LEVEL:-INFO}"
    ;;
  beat)
    # Exactly one beat per installation: it schedules the stale-job reaper.
    exec celery -A workers beat --schedule /tmp/celerybeat-schedule -l "${LOG_LEVEL:-INFO}"
    ;;
  *)
    exec "$@"
    ;;
esac
