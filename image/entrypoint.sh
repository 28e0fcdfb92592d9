#!/bin/sh
# The image's entrypoint: the role by its first argument, the rest passed on; anything else runs as given.
#   api [options of `opsctl up`]         the core HTTP API alone: no embedded servers, workers, daemon
#                                        or Prometheus (OPSCTL_DATABASE_URL and OPSCTL_REDIS_URL set)
#   worker [options of core.ingest.worker]   an ingest worker, /metrics on 9100
#   daemon [options of `opsctl daemon`]  the policy daemon, /metrics and /readyz on 9101
#   opsctl …, python …, sh …             as given (e.g. `opsctl backup list`)
set -eu
role=${1:-api}
[ $# -eq 0 ] || shift
case "$role" in
  api) exec opsctl up --workers 0 --no-prometheus --no-daemon --port "${OPSCTL_PORT:-8080}" "$@" ;;
  worker) exec python -m core.ingest.worker --metrics-port 9100 --metrics-host 0.0.0.0 "$@" ;;
  daemon) exec opsctl daemon --metrics-port 9101 "$@" ;;
  *) exec "$role" "$@" ;;
esac
