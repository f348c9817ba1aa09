#!/usr/bin/env bash
# The whole test suite on a fresh machine: install what is missing, then pytest. The tests start
# their own redis-server, Azurite and Cosmos DB server on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
