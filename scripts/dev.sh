#!/usr/bin/env bash
# The local stack in the foreground: install what is missing, then start everything.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
exec .venv/bin/python -m local_stack.dev
