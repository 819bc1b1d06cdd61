#!/usr/bin/env bash
# Run a command with a throw-away PostgreSQL server on a free loopback port.
# Exports VBANK_TEST_DATABASE_URL (an admin URL; tests create one database each).
# Needs Debian's postgresql package (scripts/system-deps.sh installs it).
set -euo pipefail
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$PG_BIN" ] || [ ! -x "$PG_BIN/initdb" ]; then
  echo "with-postgres: PostgreSQL server binaries not found (apt-get install postgresql)" >&2
  exit 3
fi
RUN_AS=()
if [ "$(id -u)" = "0" ]; then
  id postgres >/dev/null 2>&1 || { echo "with-postgres: no 'postgres' user to run the server as" >&2; exit 3; }
  RUN_AS=(runuser -u postgres --)
fi
dir="$(mktemp -d /tmp/vbank-pg.XXXXXX)"
[ "${#RUN_AS[@]}" -gt 0 ] && chown postgres "$dir"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
cleanup() {
  "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
"${RUN_AS[@]}" "$PG_BIN/initdb" -D "$dir/data" -U vbank --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
  || { cat "$dir/initdb.log" >&2; exit 3; }
"${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" start >/dev/null \
  || { cat "$dir/server.log" >&2; exit 3; }
export VBANK_TEST_DATABASE_URL="postgresql+psycopg://vbank@127.0.0.1:$port/postgres"
echo "with-postgres: PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port" >&2
set +e
"$@"
status=$?
set -e
exit $status
