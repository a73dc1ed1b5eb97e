#!/usr/bin/env bash
# iCalendar parse and write throughput: calbridge beside python `icalendar`, on the same generated
# multi-MB calendar, in the same run (best of ROUNDS each). Prints MB/s and the ratio.
#
# usage: scripts/bench-ical.sh [SERIES]    (default 5000 series, about 8.4 MB; ROUNDS=3)
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${CALBRIDGE_PYTHON:-$PWD/.venv/bin/python}"
if [ ! -x "$PY" ]; then
  scripts/setup-peers.sh
  PY="$PWD/.venv/bin/python"
fi
SERIES="${1:-5000}"
ROUNDS="${ROUNDS:-3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

python3 scripts/bench/gen-ical.py "$tmp/bench.ics" "$SERIES"
cargo bench -q -p calbridge-model --bench ical -- "$tmp/bench.ics" "$ROUNDS" > "$tmp/rust.txt"
"$PY" scripts/bench/icalendar-peer.py "$tmp/bench.ics" "$ROUNDS" > "$tmp/py.txt"

get() { sed -n "s/^$2=//p" "$1"; }
icalendar_version="$("$PY" -c 'import icalendar; print(icalendar.__version__)')"
echo "input: $(get "$tmp/rust.txt" file_bytes) bytes, $(get "$tmp/rust.txt" series) series; rounds: $ROUNDS; python icalendar $icalendar_version"
awk -v rp="$(get "$tmp/rust.txt" parse_mb_s)" -v rw="$(get "$tmp/rust.txt" write_serialize_mb_s)" \
    -v ru="$(get "$tmp/rust.txt" write_untouched_mb_s)" -v rh="$(get "$tmp/rust.txt" hash_series_per_s)" \
    -v pp="$(get "$tmp/py.txt" parse_mb_s)" -v pw="$(get "$tmp/py.txt" write_mb_s)" 'BEGIN {
  printf "| operation | calbridge | python icalendar | ratio |\n|---|---|---|---|\n"
  printf "| parse (to the typed model) | %.1f MB/s | %.2f MB/s | %.0fx |\n", rp, pp, rp / pp
  printf "| write (serialize every event) | %.1f MB/s | %.2f MB/s | %.0fx |\n", rw, pw, rw / pw
  printf "| write (untouched, original bytes) | %.0f MB/s | n/a | |\n", ru
  printf "| normalized hash | %.0f series/s | n/a | |\n", rh
}'
