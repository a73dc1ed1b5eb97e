#!/usr/bin/env bash
# Differential test: `calbridge ics expand` against python-dateutil on ≥2,000 random recurring series
# (fixed seed; all FREQs and BYxxx parts, COUNT/UNTIL, EXDATE/RDATE, overrides incl. THISANDFUTURE;
# Europe/Berlin, America/New_York, Australia/Lord_Howe, Pacific/Apia, UTC, floating, all-day).
# Fails on any difference not listed in scripts/differential-dateutil-allowed.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."

py="${CALBRIDGE_PYTHON:-}"
if [ -z "$py" ] || ! "$py" -c 'import dateutil' 2>/dev/null; then
  if [ "${CALBRIDGE_REQUIRE_PEERS:-0}" = 1 ]; then
    echo "differential-dateutil: FAIL: CALBRIDGE_PYTHON with python-dateutil is required" >&2
    exit 1
  fi
  echo "differential-dateutil: skipped (set CALBRIDGE_PYTHON to a python with python-dateutil)" >&2
  exit 0
fi

# scripts/test.sh hands over the binary its `cargo test` already built (a separate `cargo build -p`
# resolves other dependency features and would rebuild much of the tree).
bin="${CALBRIDGE_BIN:-}"
if [ -z "$bin" ]; then
  cargo build -p calbridge --locked --quiet
  bin="${CARGO_TARGET_DIR:-target}/debug/calbridge"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$py" scripts/differential_dateutil.py generate "$work" \
  --seed "${CALBRIDGE_DIFF_SEED:-20261121}" --count "${CALBRIDGE_DIFF_COUNT:-2000}"
# shellcheck disable=SC2046
"$bin" ics expand "$work/cases.ics" $(cat "$work/args") > "$work/actual.tsv"
"$py" scripts/differential_dateutil.py compare "$work/expected.tsv" "$work/actual.tsv"
