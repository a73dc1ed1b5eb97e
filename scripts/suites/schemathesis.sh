#!/usr/bin/env bash
# schemathesis against the real binary: starts `calbridge serve` on a free loopback port with a fresh
# SQLite database, takes the bootstrap admin key it prints, and runs schemathesis over /v1/openapi.json
# checking that no request gets a 5xx and that every answer matches the documented schema.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -n "${CALBRIDGE_PYTHON:-}" ]; then
  ST=("$CALBRIDGE_PYTHON" -m schemathesis.cli)
elif [ -x .venv/bin/schemathesis ]; then
  ST=("$PWD/.venv/bin/schemathesis")
else
  echo "schemathesis suite: no CALBRIDGE_PYTHON and no .venv; run scripts/setup-peers.sh" >&2
  exit 1
fi

# scripts/test.sh hands over the binary its `cargo test` already built (a separate `cargo build -p`
# resolves other dependency features and would rebuild much of the tree).
bin="${CALBRIDGE_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --quiet --locked -p calbridge
  target_dir="${CARGO_TARGET_DIR:-target}"
  bin="$(cd "$target_dir" && pwd)/debug/calbridge"
fi

work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')"
CALBRIDGE_RATE_LIMIT__ENABLED=false CALBRIDGE_LOG__LEVEL=warn \
  "$bin" serve --listen "127.0.0.1:$port" --database-url "sqlite://$work/calbridge.db" >"$work/stdout" 2>"$work/stderr" &
server_pid=$!

for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then cat "$work/stderr" >&2; exit 1; fi
  sleep 0.1
done
key="$(grep -o 'cbk_[0-9a-f]\{16\}_[A-Za-z0-9_-]\{43\}' "$work/stdout" | head -n1)"
if [ -z "$key" ]; then echo "schemathesis suite: no bootstrap key printed" >&2; cat "$work/stdout" >&2; exit 1; fi

# A calendar to aim at, so generated events and window queries reach real data too.
curl -fsS -X POST "http://127.0.0.1:$port/v1/calendar/calendars" -H "authorization: Bearer $key" \
  -H 'content-type: application/json' -d '{"name":"fuzz","time_zone":"Europe/Berlin"}' >/dev/null

# Run from the scratch directory: schemathesis keeps a cache in its working directory.
(cd "$work" && "${ST[@]}" run "http://127.0.0.1:$port/v1/openapi.json" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-60}" \
  --seed "${SCHEMATHESIS_SEED:-20261121}" \
  --generation-database none \
  --workers 2 \
  --request-timeout 10 \
  --no-color \
  --report-dir "$work/report")

# The server must still be up after all that.
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null
echo "schemathesis suite: passed"
