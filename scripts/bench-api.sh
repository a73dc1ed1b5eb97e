#!/usr/bin/env bash
# API benchmark: GET /v1/calendar/events over 100,000 event series (a fifth of them recurring: weekly,
# bi-weekly, weekdays, monthly, yearly, some endless, some with EXDATEs and moved overrides; seven zones,
# four calendars), one-month windows of 2026 (first page of 100, in Europe/Berlin), 16 connections, wrk on
# loopback, against the release binary on SQLite and on PostgreSQL. Beside each figure, in the same run:
# /healthz on the same server, the floor of the HTTP stack (routing, middleware, no key, no database).
#
# The store is filled by `calbridge bench-seed` (hidden subcommand: the API's own preparation of each
# series, written through the store in transactions of 1000 series), not through HTTP.
#
# usage: scripts/bench-api.sh [EVENTS] [DURATION]     (defaults 100000, 20s)
#   BACKENDS="sqlite postgres"  which backends, in order
#   ROUNDS=1                    events/healthz pairs per backend (alternating, to see the noise)
#   KEY_CACHE_TTL=5s            server.api_key_cache_ttl ("0s": a database lookup per request)
# needs: wrk, python3, PostgreSQL at CALBRIDGE_TEST_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres)
set -euo pipefail
cd "$(dirname "$0")/.."
events="${1:-100000}"
duration="${2:-20s}"
rounds="${ROUNDS:-1}"
pg_admin="${CALBRIDGE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

if [ -z "${BENCH_BIN:-}" ]; then
  nice cargo build --quiet --release --locked -p calbridge
fi
bin="${BENCH_BIN:-${CARGO_TARGET_DIR:-target}/release/calbridge}"
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
load() { cut -d' ' -f1-3 /proc/loadavg; }
summary() { # wrk output → "req/s p50 p90 p99"
  awk '/Requests\/sec/ {rps=$2} /^ +50%/ {p50=$2} /^ +90%/ {p90=$2} /^ +99%/ {p99=$2} END {print rps, p50, p90, p99}' "$1"
}

run_backend() {
  local name="$1" url="$2" port token seeded
  echo "== $name: seeding $events events (load $(load))"
  seeded="$("$bin" bench-seed --database-url "$url" --events "$events")"
  echo "   $seeded" | sed 's/"token":"[^"]*"/"token":"…"/'
  token="$(printf '%s' "$seeded" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')"
  # What autovacuum does shortly after a bulk load (statistics, visibility map); SQLite's connections ran
  # `PRAGMA optimize` on close already.
  if [ "$name" = postgres ]; then psql "$url" -qc "VACUUM ANALYZE" >/dev/null; fi
  port="$(free_port)"
  CALBRIDGE_RATE_LIMIT__ENABLED=false CALBRIDGE_LOG__LEVEL=warn CALBRIDGE_SECRETS__MASTER_KEY="$(printf '%064d' 7)" \
    CALBRIDGE_SERVER__API_KEY_CACHE_TTL="${KEY_CACHE_TTL:-5s}" \
    "$bin" serve --listen "127.0.0.1:$port" --database-url "$url" >"$work/$name.out" 2>"$work/$name.err" &
  server_pid=$!
  for _ in $(seq 1 300); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  local base="http://127.0.0.1:$port"
  curl -fsS -H "authorization: Bearer $token" \
    "$base/v1/calendar/events?start=2026-03-01T00:00:00Z&end=2026-04-01T00:00:00Z&tz=Europe/Berlin" \
    | python3 -c 'import json,sys; p=json.load(sys.stdin); print("   first page of March:", len(p["items"]), "items,", "more" if p.get("next_cursor") else "last page")'
  # Warm up (page cache, prepared statements, pools), then measure.
  wrk -t2 -c16 -d3s -s scripts/bench/window.lua -H "Authorization: Bearer $token" "$base" >/dev/null
  for round in $(seq 1 "$rounds"); do
    local before after
    before="$(load)"
    wrk -t2 -c16 -d"$duration" --latency -s scripts/bench/window.lua -H "Authorization: Bearer $token" "$base" >"$work/$name.events.$round"
    wrk -t2 -c16 -d"$duration" --latency "$base/healthz" >"$work/$name.health.$round"
    after="$(load)"
    echo "-- $name round $round (load average before: $before, after: $after)"
    echo "   GET /v1/calendar/events (req/s p50 p90 p99): $(summary "$work/$name.events.$round")"
    echo "   GET /healthz            (req/s p50 p90 p99): $(summary "$work/$name.health.$round")"
    grep -E 'Non-2xx|Socket errors' "$work/$name.events.$round" "$work/$name.health.$round" || true
  done
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
}

for backend in ${BACKENDS:-sqlite postgres}; do
  case "$backend" in
    sqlite) run_backend sqlite "sqlite://$work/bench.db" ;;
    postgres)
      pg_db="calbridge_bench_$$"
      psql "$pg_admin" -qc "CREATE DATABASE $pg_db" >/dev/null
      run_backend postgres "${pg_admin%/*}/$pg_db"
      psql "$pg_admin" -qc "DROP DATABASE IF EXISTS $pg_db WITH (FORCE)" >/dev/null; pg_db="" ;;
  esac
done
