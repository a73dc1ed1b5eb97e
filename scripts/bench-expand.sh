#!/usr/bin/env bash
# Expansion throughput: `calbridge ics expand` (release build) beside python-dateutil on the same series
# (the differential suite's generator, fixed seed), in the same run. Prints occurrences/s for both and
# the ratio. Usage: scripts/bench-expand.sh [COUNT]   (default 2000 series)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${CALBRIDGE_PYTHON:-$PWD/.venv/bin/python}"
count="${1:-2000}"
cargo build --release -p calbridge --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/calbridge"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$py" scripts/differential_dateutil.py generate "$work" --seed 20261121 --count "$count" --bench 2>/dev/null
best=""
for _ in 1 2 3; do
  start=$(date +%s.%N)
  # shellcheck disable=SC2046
  "$bin" ics expand "$work/cases.ics" $(cat "$work/args") > "$work/out.tsv"
  end=$(date +%s.%N)
  t=$(echo "$end - $start" | bc -l)
  if [ -z "$best" ] || [ "$(echo "$t < $best" | bc -l)" = 1 ]; then best=$t; fi
done
occ=$(wc -l < "$work/out.tsv")
"$py" - "$work/dateutil-bench.json" "$occ" "$best" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
occ, secs = int(sys.argv[2]), float(sys.argv[3])
ours = occ / secs
theirs = d["occurrences"] / d["seconds"]
print(f"series: {d['series']}")
print(f"calbridge ics expand (whole process: parse, expand, sort, print): {occ} occurrences in {secs:.3f} s = {ours:,.0f} occ/s")
print(f"python-dateutil rruleset (expansion + UTC conversion only):      {d['occurrences']} occurrences in {d['seconds']:.3f} s = {theirs:,.0f} occ/s")
print(f"ratio calbridge/dateutil: {ours / theirs:.1f}x")
PY
