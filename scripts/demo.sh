#!/usr/bin/env bash
# `make demo`: migrate, create the demo team and user, serve the site on 127.0.0.1:8000.
# Runs in development mode with no configuration; Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."

export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
PY=.venv/bin/python
HOST="${GAD_DEMO_HOST:-127.0.0.1}"
PORT="${GAD_DEMO_PORT:-8000}"

$PY manage.py migrate --noinput -v0
login=$($PY manage.py demo_setup)

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

$PY manage.py runserver "$HOST:$PORT" --noreload &
pids+=($!)

for _ in $(seq 1 60); do
  curl -fsS -o /dev/null "http://$HOST:$PORT/accounts/login/" 2>/dev/null && break
  sleep 0.5
done
cat <<MSG

  GAD Studio is running at http://$HOST:$PORT/
  Demo $login

  Press Ctrl-C to stop.
MSG
wait
