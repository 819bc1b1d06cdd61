#!/bin/sh
# Bring the database schema to the latest revision, then run the command (default: vbank serve).
# `vbank serve` refuses to start on an outdated schema, so migrating here keeps a fresh
# deployment or an upgrade to a single `docker compose up`.
#
# VBANK_SKIP_MIGRATE=true skips it: with several replicas, run `vbank migrate` once as a
# separate job instead of letting every replica race to migrate.
# A few retries cover a database that is still starting (compose waits for its healthcheck,
# other orchestrators may not).
set -eu

if [ "${VBANK_SKIP_MIGRATE:-false}" != "true" ]; then
  attempts="${VBANK_MIGRATE_ATTEMPTS:-5}"
  n=1
  until vbank migrate; do
    if [ "$n" -ge "$attempts" ]; then
      echo "vbank-entrypoint: migration failed after $n attempts" >&2
      exit 1
    fi
    echo "vbank-entrypoint: migration failed (attempt $n/$attempts), retrying in 3s" >&2
    n=$((n + 1))
    sleep 3
  done
fi

# exec: the service becomes the main process and receives SIGTERM directly.
exec "$@"
