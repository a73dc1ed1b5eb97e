#!/usr/bin/env bash
# API benchmark: GET /v1/calendar/events over 100,000 events (a fifth of them weekly series of 26), one-month
# windows (first page of 100, in Europe/Berlin), 16 concurrent connections, with wrk on loopback, against the
# release binary on SQLite and on PostgreSQL. Beside each figure: /healthz on the same server, the floor
# of the HTTP stack (routing, middleware, no authentication, no database).
#
# usage: scripts/bench-api.sh [EVENTS] [DURATION]     (defaults 100000, 20s; BACKENDS="sqlite postgres")
# needs: wrk, python3, PostgreSQL at CALBRIDGE_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-100000}"
duration="${2:-20s}"
pg_admin="${CALBRIDGE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

nice cargo build --quiet --release --locked -p calbridge
bin="${CARGO_TARGET_DIR:-target}/release/calbridge"
work="$(mktemp -d)"
server_pid=""
pg_db=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "$pg_db" ]; then psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

run_backend() {
  local name="$1" url="$2" port key cal
  port="$(free_port)"
  CALBRIDGE_RATE_LIMIT__ENABLED=false CALBRIDGE_LOG__LEVEL=warn CALBRIDGE_SECRETS__MASTER_KEY="$(printf '%064d' 7)" \
    "$bin" serve --listen "127.0.0.1:$port" --database-url "$url" >"$work/$name.out" 2>"$work/$name.err" &
  server_pid=$!
  for _ in $(seq 1 200); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  key="$(grep -o 'cbk_[0-9a-f]\{16\}_[A-Za-z0-9_-]\{43\}' "$work/$name.out" | head -n1)"
  cal="$(curl -fsS -X POST "http://127.0.0.1:$port/v1/calendar/calendars" -H "authorization: Bearer $key" \
    -H 'content-type: application/json' -d '{"name":"bench","time_zone":"Europe/Berlin"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
  local seed_start seed_end
  seed_start=$(date +%s.%N)
  python3 scripts/bench/seed_events.py "http://127.0.0.1:$port" "$key" "$cal" "$events" 8
  seed_end=$(date +%s.%N)
  echo "== $name: seeded $events events in $(python3 -c "print(round($seed_end-$seed_start,1))") s"
  # Warm up, then measure.
  wrk -t2 -c16 -d3s -s scripts/bench/window.lua -H "Authorization: Bearer $key" "http://127.0.0.1:$port" >/dev/null
  echo "-- $name: GET /v1/calendar/events (one-month window, first page of 100, tz=Europe/Berlin)"
  wrk -t2 -c16 -d"$duration" --latency -s scripts/bench/window.lua -H "Authorization: Bearer $key" "http://127.0.0.1:$port" | tee "$work/$name.wrk"
  echo "-- $name: GET /healthz (HTTP stack floor)"
  wrk -t2 -c16 -d"$duration" --latency "http://127.0.0.1:$port/healthz" | tee "$work/$name.health"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
}

for backend in ${BACKENDS:-sqlite postgres}; do
  case "$backend" in
    sqlite) run_backend sqlite "sqlite://$work/bench.db" ;;
    postgres)
      pg_db="calbridge_bench_$$"
      psql "$pg_admin" -qc "CREATE DATABASE $pg_db" >/dev/null
      run_backend postgres "${pg_admin%/*}/$pg_db" ;;
  esac
done
