#!/usr/bin/env bash
# Make sure PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) are up, starting
# them if they are installed but stopped. Stops with a clear message otherwise.
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ]; }

if ! pg_up; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "services: starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
  pg_up || { echo "services: PostgreSQL is not running on 127.0.0.1:5432 and could not be started; install it (apt-get install postgresql) or set DATABASE_URL." >&2; exit 1; }
fi

if ! redis_up; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "services: starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 1 30); do redis_up && break; sleep 0.5; done
  fi
  redis_up || { echo "services: Redis is not running on 127.0.0.1:6379 and could not be started; install it (apt-get install redis-server) or set CELERY_BROKER_URL." >&2; exit 1; }
fi

# The development database; the test runner makes its own test_gad beside it.
if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='gad'" | grep -q 1; then
  createdb -h 127.0.0.1 -U postgres gad
fi
echo "services: PostgreSQL and Redis are up"
