#!/usr/bin/env bash
# `make bench`: install the benchmark tools, then run every benchmark (quick sizes unless BENCH_FULL=1).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/pip install --quiet -r bench/requirements.txt 2>&1 | grep -v "is ignored" || true

LITELLM_VENV=.local/bench-litellm
STAMP=$LITELLM_VENV/.installed
if [ ! -f "$STAMP" ] || [ bench/requirements-litellm.txt -nt "$STAMP" ]; then
  echo "bench: installing LiteLLM's proxy into $LITELLM_VENV (once)"
  python3 -m venv "$LITELLM_VENV"
  if "$LITELLM_VENV/bin/pip" install --quiet -r bench/requirements-litellm.txt > "$LITELLM_VENV.log" 2>&1; then
    touch "$STAMP"
  else
    echo "bench: LiteLLM's proxy could not be installed; running without the peer. pip said:" >&2
    grep -E "^ERROR" "$LITELLM_VENV.log" | tail -3 >&2 || true
  fi
fi
[ -f "$STAMP" ] || export BENCH_LITELLM=/nonexistent
exec .venv/bin/python -m bench.run
