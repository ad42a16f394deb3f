#!/usr/bin/env bash
# Run pytest from the locked venv; a selection that collects nothing (exit 5) is an error we
# report plainly rather than a silent green.
set -uo pipefail
cd "$(dirname "$0")/.."
if command -v uv >/dev/null 2>&1; then UV=(uv); else UV=(python3 -m uv); fi
"${UV[@]}" run --frozen pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "pytest collected no tests for: $*" >&2
  exit 1
fi
exit "$rc"
