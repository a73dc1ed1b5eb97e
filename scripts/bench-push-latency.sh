#!/usr/bin/env bash
# Propagation latency of provider push: an edit in the Graph emulator → notification → sync → WebSocket
# message, one edit at a time over loopback (release build). CALBRIDGE_BENCH_EDITS sets the count.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
CALBRIDGE_BENCH_EDITS="${CALBRIDGE_BENCH_EDITS:-1000}" \
  cargo bench -p calbridge-server --bench push_latency
