#!/usr/bin/env bash
# The sync engine against the Graph emulator: a 100,000-event mailbox (initial sync, events/s), the
# incremental sync of 10 changes at 1,000 vs 100,000 events, and requests per no-op sync. Release build.
# CALBRIDGE_BENCH_GRAPH_SIZES=1000,100000 (the default) picks the sizes. Figures go to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
nice cargo run --release --locked -p calbridge-engine --example graph_scale
