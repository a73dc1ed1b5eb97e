#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: formatting, lints, and every test against the real peers
# (PostgreSQL on 127.0.0.1:5432, Radicale, python-dateutil, schemathesis), which this script installs.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup-peers.sh

# Tests that need a peer read where it is from these variables, and fail (never skip) when it is missing
# and CALBRIDGE_REQUIRE_PEERS=1.
export CALBRIDGE_PYTHON="$PWD/.venv/bin/python"
export CALBRIDGE_TEST_POSTGRES_URL="${CALBRIDGE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
export CALBRIDGE_REQUIRE_PEERS=1
export PROPTEST_CASES="${PROPTEST_CASES:-256}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
mkdir -p target
cargo test --workspace --locked 2>&1 | tee target/cargo-test.log
# The binary the CLI tests were built against; the suites below drive it.
target_dir="${CARGO_TARGET_DIR:-target}"
case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
export CALBRIDGE_BIN="$target_dir/debug/calbridge"
test -x "$CALBRIDGE_BIN"

# Suites that drive the built binary from outside (differential oracles, schemathesis, ...). Each one
# exits non-zero on any failure, which stops this script.
suites=0
for suite in scripts/suites/*.sh; do
  [ -e "$suite" ] || continue
  echo "== $suite"
  bash "$suite"
  suites=$((suites + 1))
done

# One closing line for the whole run: every cargo test plus every suite (each suite counts once).
read -r passed failed < <(awk '/^test result: /{for(i=2;i<=NF;i++){if($i=="passed;")p+=$(i-1); if($i=="failed;")f+=$(i-1)}} END{print p+0, f+0}' target/cargo-test.log)
echo "calbridge: $((passed + suites)) passed, ${failed} failed"
