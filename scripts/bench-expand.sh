#!/usr/bin/env bash
# Expansion throughput: calbridge's expander (release build, crates/model/examples/expand_bench.rs) beside
# python-dateutil's rruleset on the same series (the differential suite's generator, fixed seed), in the
# same run. Both sides time expansion + conversion to UTC up to the window's end, best of three runs;
# calbridge's count also includes the overrides it applies. Prints occurrences/s and the ratio.
# Usage: scripts/bench-expand.sh [COUNT]   (default 2000 series)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${CALBRIDGE_PYTHON:-$PWD/.venv/bin/python}"
count="${1:-2000}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cargo build --release -p calbridge-model --example expand_bench --locked --quiet
bin="${CARGO_TARGET_DIR:-target}/release/examples/expand_bench"
"$py" scripts/differential_dateutil.py generate "$work" --seed 20261121 --count "$count" --bench 2>/dev/null
read -r _ from _ to _ tz < "$work/args"
"$bin" "$work/cases.ics" "$from" "$to" "$tz" > "$work/calbridge-bench.json"
"$py" - "$work/calbridge-bench.json" "$work/dateutil-bench.json" <<'PY'
import json, sys
ours = json.load(open(sys.argv[1]))
theirs = json.load(open(sys.argv[2]))
a = ours["occurrences"] / ours["seconds"]
b = theirs["occurrences"] / theirs["seconds"]
print(f"series: {ours['series']}")
print(f"calbridge (jiff):  {ours['occurrences']} occurrences in {ours['seconds']:.3f} s = {a:,.0f} occurrences/s")
print(f"python-dateutil:   {theirs['occurrences']} occurrences in {theirs['seconds']:.3f} s = {b:,.0f} occurrences/s")
print(f"ratio calbridge / dateutil: {a / b:.1f}x")
PY
