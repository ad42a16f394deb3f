#!/usr/bin/env bash
# Run pytest from the locked venv; a selection that collects nothing (exit 5) is an error we
# report plainly rather than a silent green.
set -uo pipefail
cd "$(dirname "$0")/.."
if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=(python3 -m uv); fi
# PYTEST_WORKERS test processes (default 2; 0 runs in this process): tests/conftest.py keeps the
# Airflow-driven modules together on one worker, every other module whole on one worker.
workers=${PYTEST_WORKERS:-2}
xdist=()
if [ "$workers" != 0 ]; then xdist=(-n "$workers" --no-loadscope-reorder); fi
# every test's duration, for finding where a slow run's time went (--durations lists only the slowest)
mkdir -p .local/test-artifacts
"${UV[@]}" run --frozen pytest "${xdist[@]}" --junitxml=.local/test-artifacts/junit.xml "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests for: $*" >&2
  exit 1
fi
exit "$rc"
