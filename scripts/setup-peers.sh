#!/usr/bin/env bash
# Installs and starts everything the test suite talks to, on a fresh machine or an old one:
#  - a Python virtualenv in .venv with the oracles and peers of scripts/requirements.txt
#    (python-dateutil, icalendar, Radicale, schemathesis);
#  - the machine's PostgreSQL on 127.0.0.1:5432 (started if it is installed but stopped).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ] || ! cmp -s scripts/requirements.txt .venv/.requirements 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r scripts/requirements.txt
  cp scripts/requirements.txt .venv/.requirements
fi

if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "setup-peers: PostgreSQL is not answering on 127.0.0.1:5432; the PostgreSQL tests will fail" >&2
fi
