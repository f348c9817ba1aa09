#!/usr/bin/env bash
# Lint and type checks, run by `make test` before pytest (and by pre-commit): any finding fails.
# The rule set and the mypy settings live in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

"$BIN/ruff" check --no-fix .
"$BIN/ruff" format --check .
# What mypy checks is pyproject.toml's [tool.mypy] `files`: every first-party package (strict) and
# tests/ (every test body checked; a test or fixture need not annotate its signature).
"$BIN/mypy"
echo "lint: ruff and mypy clean"
