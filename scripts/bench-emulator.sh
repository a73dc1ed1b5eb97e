#!/usr/bin/env bash
# Delta / sync pages served per second by the Graph and Google emulators for a 100,000-event mailbox,
# beside the same page served as static bytes by a bare axum route. Figures go to BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
EMU_BENCH_EVENTS="${EMU_BENCH_EVENTS:-100000}" nice cargo bench -p calbridge-emulators --bench delta
