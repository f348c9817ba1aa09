#!/usr/bin/env bash
# The whole test suite on a fresh machine: install what is missing, lint and type checks
# (scripts/lint.sh), then pytest. The tests start their own redis-server, Azurite and Cosmos DB
# server on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
scripts/lint.sh
exec .venv/bin/python -m pytest "$@"
