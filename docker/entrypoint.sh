#!/bin/sh
# The roles of the Tauon image. `web` migrates first, as `make up` does.
set -eu

case "${1:-web}" in
  web)
    python manage.py migrate --noinput
    python manage.py ensure_admin
    # Imported here (the first start converts SmolLM2 once, ~30 s) and deployed; idempotent, so a restart
    # finds them ready and does nothing.
    python manage.py import_bundled --sync || echo "WARNING: could not import the bundled models; retry with: docker compose exec web python manage.py import_bundled" >&2
    python manage.py deploy_bundled
    python manage.py import_datasets  # the built-in evaluation datasets; idempotent
    exec uvicorn console.asgi:application --host 0.0.0.0 --port 8000 --lifespan off \
      --proxy-headers --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-*}"
    ;;
  worker)
    exec celery -A workers worker -Q "${WORKER_QUEUES:-default,jobs}" --concurrency "${WORKER_CONCURRENCY:-2}" \
      -n "worker@%h" -l "${LOG_LEVEL:-INFO}"
    ;;
  serve)
    # Hosts engine replicas: threads share each engine's batches. Start more (here or on other machines
    # with the same DATABASE_URL, REDIS_URL and storage) to add replicas up to each deployment's count.
    exec celery -A workers worker --pool threads --concurrency "${SERVE_THREADS:-64}" -Q default \
      -n "serve@%h" -l "${LOG_LEVEL:-INFO}" --deployments "${SERVE_DEPLOYMENTS:-all}"
    ;;
  beat)
    # Exactly one beat per installation: it schedules the stale-job reaper.
    exec celery -A workers beat --schedule /tmp/celerybeat-schedule -l "${LOG_LEVEL:-INFO}"
    ;;
  *)
    exec "$@"
    ;;
esac
