#!/usr/bin/env bash
# Lint and type checks, run by `make test` before pytest (and by pre-commit): any finding fails.
# The rule set and the mypy settings live in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

# Packages mypy checks: every first-party package (pyproject.toml's [tool.mypy] `files`).
TYPED=(
  agent_contracts agent_registry evaluation scripted_upstream streaming_gateway action_bus function_app
  observability local_stack sample_backend bench
)

"$BIN/ruff" check --no-fix .
"$BIN/ruff" format --check .
"$BIN/mypy" "${TYPED[@]}"
echo "lint: ruff and mypy clean (${TYPED[*]})"
