#!/usr/bin/env bash
# calbridge against vdirsyncer 0.21 on the same Radicale calendar (1,000 and 10,000 events): initial
# import, no-op sync, incremental sync after 10 edits + 5 deletions on the server, with Radicale's own
# time to answer the sync-collection REPORT measured beside them in the same run. Release build.
# CALBRIDGE_BENCH_SIZES=1000,10000 (the default) picks the sizes. Figures go to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${CALBRIDGE_PYTHON:-}" ] || scripts/setup-peers.sh
export CALBRIDGE_PYTHON="${CALBRIDGE_PYTHON:-$PWD/.venv/bin/python}"
nice cargo build --release --locked -p calbridge --bin calbridge --example bench_vdirsyncer
target_dir="${CARGO_TARGET_DIR:-target}"
"$target_dir/release/examples/bench_vdirsyncer"
