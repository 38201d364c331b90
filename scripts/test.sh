#!/usr/bin/env bash
# The whole test suite: set-up, lint and types, unit tests, then integration tests on
# a real local Kafka broker that the tests start and stop themselves.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
scripts/setup.sh --browser

echo "== ruff" >&2
.venv/bin/ruff check .
echo "== mypy" >&2
.venv/bin/mypy
echo "== pytest" >&2
exec .venv/bin/python -m pytest -ra "$@"
